"""Pytest fixtures for testing DAGs and hooks against the local Autocalls simulator.

Registered as the ``autocalls`` pytest11 plugin, so it loads in every pytest session where the
provider is installed: nothing heavy is imported here, the simulator and Airflow load inside the
fixtures.

=================================== ===========================================================
fixture                             what it gives
=================================== ===========================================================
``autocalls_simulator``             a running simulator on 127.0.0.1, seeded, stopped after
``autocalls_connection_factory``    ``add(conn_id, **extra)``: points any connection id at it
``autocalls_connection``            the simulator, with ``autocalls_default`` pointing at it
``autocalls_airflow_home``          a throw-away Airflow home with a migrated database (session)
``autocalls_ledger_location``       ``[autocalls] ledger_location`` in the test's ``tmp_path``
``autocalls_run_dag``               ``run(dag_file, ...)``: ``dag.test()`` on a DAG file
=================================== ===========================================================
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from airflow_provider_autocalls.testing.dag_runs import DagRunResult
    from airflow_provider_autocalls.testing.simulator import AutocallsSimulator

#: The environment variable that defines Airflow's ``autocalls_default`` connection.
CONNECTION_ENV = "AIRFLOW_CONN_AUTOCALLS_DEFAULT"
#: The environment variable behind ``[autocalls] ledger_location``.
LEDGER_LOCATION_ENV = "AIRFLOW__AUTOCALLS__LEDGER_LOCATION"


@pytest.fixture
def autocalls_simulator() -> Iterator[AutocallsSimulator]:
    """
    A running simulator on 127.0.0.1 (a free port), seeded, stopped after the test.

    Its rate limit is the API's, 5 requests/s. Set ``rate_limit`` (0 for none) before the first
    request: the connections from this plugin follow it.
    """
    from airflow_provider_autocalls.hooks._pacing import forget_pacers
    from airflow_provider_autocalls.testing.connections import SharedRateSimulator

    # Pacers are per API key and every simulator has the same key: each test starts with none.
    forget_pacers()
    simulator = SharedRateSimulator(host="127.0.0.1", port=0).start()
    try:
        yield simulator
    finally:
        simulator.stop()


@pytest.fixture
def autocalls_connection_factory(
    autocalls_simulator: AutocallsSimulator, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., str]:
    """
    ``add(conn_id="autocalls_default", *, password=None, **extra) -> conn_id``: points a connection
    id at the simulator, through an ``AIRFLOW_CONN_<ID>`` variable removed after the test.

    Without ``rate_limit`` in ``extra`` the connection paces at the simulator's rate limit, and
    does not pace when the simulator has none.
    """
    from airflow_provider_autocalls.testing.connections import SharedRateSimulator, SimulatorConnections

    connections = SimulatorConnections(autocalls_simulator, monkeypatch)
    if isinstance(autocalls_simulator, SharedRateSimulator):
        autocalls_simulator.connections = connections
    return connections.add


@pytest.fixture
def autocalls_connection(
    autocalls_simulator: AutocallsSimulator, autocalls_connection_factory: Callable[..., str]
) -> AutocallsSimulator:
    """The simulator, with ``autocalls_default`` pointing at it."""
    autocalls_connection_factory("autocalls_default")
    return autocalls_simulator


@pytest.fixture(scope="session")
def autocalls_airflow_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """
    A throw-away Airflow home for the session: config, migrated SQLite database, ``dags/`` folder.

    Airflow reads its home when it is first imported. If your test modules import Airflow while
    they are collected, call
    :func:`~airflow_provider_autocalls.testing.airflow_home.isolate_airflow_home` at the top of
    your ``conftest.py``; this fixture then uses that home.
    """
    from airflow_provider_autocalls.testing.airflow_home import (
        isolate_airflow_home,
        isolated_airflow_home,
        migrate_database,
    )

    home = isolated_airflow_home() or isolate_airflow_home(tmp_path_factory.mktemp("airflow-home"))
    migrate_database()
    return home


@pytest.fixture
def autocalls_ledger_location(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``[autocalls] ledger_location`` in the test's ``tmp_path``: ledgers and bulk reports go there."""
    location = tmp_path / "autocalls-ledger"
    location.mkdir()
    monkeypatch.setenv(LEDGER_LOCATION_ENV, str(location))
    return location


@pytest.fixture
def autocalls_run_dag(
    autocalls_airflow_home: Path, autocalls_ledger_location: Path
) -> Callable[..., DagRunResult]:
    """
    ``run(dag_file, *, dag_id=None, tweak=None, **test_kwargs) -> DagRunResult``: copies the DAG
    file into the dags folder, runs it with ``dag.test()`` and removes the copy.

    ``tweak`` is called with the parsed DAG before the run. The result has ``state`` and
    ``task_state(task_id)``. Ledgers and reports land in ``autocalls_ledger_location``.
    """
    from airflow_provider_autocalls.testing.dag_runs import run_dag_file

    def run(dag_file: str | Path, **kwargs: Any) -> DagRunResult:
        return run_dag_file(dag_file, autocalls_airflow_home / "dags", **kwargs)

    return run
