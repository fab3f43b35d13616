"""Shared fixtures. Airflow gets a throw-away home before anything imports it."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="autocalls-test-airflow-"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")

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
    """Register a connection to the simulator through an env var; returns its conn id."""

    def make(conn_id: str = "autocalls_default", *, password: str | None = None, **extra: Any) -> str:
        extra.setdefault("rate_limit", 1000)
        conn = {
            "conn_type": "autocalls",
            "host": sim.url,
            "password": sim.api_key if password is None else password,
            "extra": extra,
        }
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))
        return conn_id

    return make


@pytest.fixture
def hook(make_conn: Callable[..., str]) -> Iterator[Any]:
    from airflow_provider_autocalls.hooks.autocalls import AutocallsHook

    hook = AutocallsHook(make_conn(max_retries=2))
    yield hook
    hook.close()
