"""Shared fixtures. Airflow gets a throw-away home before anything imports it.

The generic pieces (simulator, connections, Airflow home, DAG runs) are the provider's pytest
plugin, the same fixtures users get; this file adds what only this project's tests need.
"""

from __future__ import annotations

import ipaddress
import json
import re
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from airflow_provider_autocalls.testing.airflow_home import isolate_airflow_home
from airflow_provider_autocalls.testing.dag_runs import DagRunResult as BaseDagRunResult
from airflow_provider_autocalls.testing.dag_runs import run_dag_file

# Test modules import Airflow while they are collected, so the home is set here, before them.
isolate_airflow_home()

if TYPE_CHECKING:
    from airflow_provider_autocalls.testing import AutocallsSimulator

CANARY_KEY = "sk-canary-7f3e9b1c2d4a"


@pytest.fixture
def sim(autocalls_simulator: AutocallsSimulator) -> AutocallsSimulator:
    """The simulator, with no rate limit unless a test sets one (pacing tests do)."""
    autocalls_simulator.rate_limit = 0
    return autocalls_simulator


@pytest.fixture
def make_conn(monkeypatch: pytest.MonkeyPatch, sim: AutocallsSimulator) -> Callable[..., str]:
    """Register a connection to ``sim`` (which a module may override) through an env var; returns its id."""
    from airflow_provider_autocalls.testing.connections import SimulatorConnections

    connections = SimulatorConnections(sim, monkeypatch)

    def make(conn_id: str = "autocalls_default", *, password: str | None = None, **extra: Any) -> str:
        extra.setdefault("rate_limit", 1000)
        return connections.add(conn_id, password=password, **extra)

    return make


@pytest.fixture
def hook(make_conn: Callable[..., str]) -> Iterator[Any]:
    from airflow_provider_autocalls.hooks.autocalls import AutocallsHook

    hook = AutocallsHook(make_conn(max_retries=2))
    yield hook
    hook.close()


@pytest.fixture(scope="session")
def airflow_db(autocalls_airflow_home: Path) -> None:
    """A migrated SQLite metadata database in the throw-away Airflow home, once per session."""


@dataclass
class DagRunResult(BaseDagRunResult):
    #: what a ``collect`` task in the DAG wrote: ``{task_id: xcom value}``
    pulled: dict[str, Any] = field(default_factory=dict)


@pytest.fixture
def run_dag(
    airflow_db: None,
    autocalls_airflow_home: Path,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Callable[..., DagRunResult]:
    """
    Run DAG source with ``dag.test()`` (through the plugin's ``run_dag_file``). The file is named
    after the test; the source refers to that name as ``DAG_ID``. A DAG may pull XComs into
    ``PULLED_PATH`` (an env var) for the test.
    """
    dag_id = re.sub(r"\W", "_", request.node.name)[:200]
    pulled_path = tmp_path / "pulled.json"
    monkeypatch.setenv("PULLED_PATH", str(pulled_path))

    def run(source: str, tweak: Callable[[Any], None] | None = None, dag_id: str = dag_id) -> DagRunResult:
        dag_file = tmp_path / "dag_source" / f"{dag_id}.py"
        dag_file.parent.mkdir(exist_ok=True)
        dag_file.write_text(source)
        result = run_dag_file(dag_file, autocalls_airflow_home / "dags", dag_id=dag_id, tweak=tweak)
        pulled = json.loads(pulled_path.read_text()) if pulled_path.exists() else {}
        return DagRunResult(result.state, result.tries, pulled)

    return run


DAG_HEADER = '''
import json, os
import pendulum
from airflow.providers.common.compat.sdk import DAG, task
from airflow_provider_autocalls.operators.autocalls import SendFreeformOperator, SendTemplateOperator
from airflow_provider_autocalls.sensors.autocalls import SessionOpenSensor

def collect(pulled):
    """Write pulled XComs where the test reads them."""
    with open(os.environ["PULLED_PATH"], "w") as f:
        json.dump(pulled, f, default=str)

START = pendulum.datetime(2026, 1, 1, tz="UTC")
DAG_ID = os.path.basename(__file__)[:-3]
'''


def non_loopback_ipv4() -> str | None:
    """This machine's address on its default route, if it has one that is not loopback."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("192.0.2.1", 9))  # UDP connect sends nothing
            address = str(probe.getsockname()[0])
        return None if ipaddress.ip_address(address).is_loopback else address
    except OSError:
        return None


@pytest.fixture
def memory_location() -> str:
    """An object-storage URI on fsspec's in-memory filesystem, attached if this Airflow has not."""
    import uuid

    import fsspec

    try:
        from airflow.sdk.io.store import attach
    except ImportError:  # Airflow 2
        from airflow.io.store import attach  # type: ignore[no-redef]
    memory = fsspec.filesystem("memory")
    store = attach(protocol="memory", fs=memory)
    store.fs = memory  # a store cached before, without a filesystem, gets one too
    return f"memory://ledgers/{uuid.uuid4().hex}"
