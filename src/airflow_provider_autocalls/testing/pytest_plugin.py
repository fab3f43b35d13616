"""Pytest fixtures for DAG and hook tests against the local Autocalls simulator.

Registered as the ``autocalls`` pytest11 plugin, so it loads in every pytest session where the
provider is installed: nothing heavy is imported here, the simulator loads inside the fixtures.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from airflow_provider_autocalls.testing.simulator import AutocallsSimulator

#: The environment variable that defines Airflow's ``autocalls_default`` connection.
CONNECTION_ENV = "AIRFLOW_CONN_AUTOCALLS_DEFAULT"


@pytest.fixture
def autocalls_simulator() -> Iterator[AutocallsSimulator]:
    """A running simulator on 127.0.0.1 (a free port), seeded, stopped after the test."""
    from airflow_provider_autocalls.hooks._pacing import forget_pacers
    from airflow_provider_autocalls.testing.simulator import AutocallsSimulator

    # Pacers are per API key and every simulator has the same key: each test starts with none.
    forget_pacers()
    simulator = AutocallsSimulator(host="127.0.0.1", port=0).start()
    try:
        yield simulator
    finally:
        simulator.stop()


@pytest.fixture
def autocalls_connection(
    autocalls_simulator: AutocallsSimulator, monkeypatch: pytest.MonkeyPatch
) -> AutocallsSimulator:
    """The simulator, with ``autocalls_default`` pointing at it through the environment."""
    connection = {
        "conn_type": "autocalls",
        "host": autocalls_simulator.url,
        "password": autocalls_simulator.api_key,
    }
    monkeypatch.setenv(CONNECTION_ENV, json.dumps(connection))
    return autocalls_simulator
