"""Airflow connections that point at a running simulator and follow its rate limit.

A connection is an ``AIRFLOW_CONN_<ID>`` environment variable, so no database is needed. Unless a
test gives ``rate_limit`` itself, the connection's rate is the simulator's: both pace at the same
rate, and a simulator without a limit (``rate_limit = 0``) gets a connection that does not pace.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from airflow_provider_autocalls.testing.simulator import AutocallsSimulator

#: The connection rate that stands for "no limit": the hook needs a positive rate, and at this one
#: its pacer never holds a request back in a test.
UNPACED_RATE = 1_000_000.0


def connection_env(conn_id: str) -> str:
    """The environment variable that defines the connection ``conn_id``."""
    return f"AIRFLOW_CONN_{conn_id.upper()}"


class SharedRateSimulator(AutocallsSimulator):
    """A simulator that tells the connections pointing at it when its rate limit changes."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.connections: SimulatorConnections | None = None

    @AutocallsSimulator.rate_limit.setter  # type: ignore[attr-defined, untyped-decorator]
    def rate_limit(self, value: float | None) -> None:
        AutocallsSimulator.rate_limit.fset(self, value)  # type: ignore[attr-defined]
        if self.connections is not None:
            self.connections.refresh()


class SimulatorConnections:
    """
    The connections of one test that point at its simulator.

    :param simulator: the running simulator.
    :param monkeypatch: the test's monkeypatch, which removes the variables after the test.
    """

    def __init__(self, simulator: AutocallsSimulator, monkeypatch: pytest.MonkeyPatch) -> None:
        self.simulator = simulator
        self.monkeypatch = monkeypatch
        self._extras: dict[str, tuple[str | None, dict[str, Any]]] = {}

    def add(self, conn_id: str = "autocalls_default", *, password: str | None = None, **extra: Any) -> str:
        """
        Point ``conn_id`` at the simulator.

        :param conn_id: any connection id, e.g. the one your DAG passes as ``autocalls_conn_id``.
        :param password: the API key; the simulator's own by default (pass another to test a refusal).
        :param extra: connection extras (``timeout``, ``max_retries``, ``rate_limit``, ...). Without
            ``rate_limit`` the connection follows the simulator's rate limit, also when it changes.
        :return: ``conn_id``.
        """
        self._extras[conn_id] = (password, extra)
        self._write(conn_id)
        return conn_id

    def refresh(self) -> None:
        """Rewrite every connection, after a change of the simulator's rate limit."""
        for conn_id in self._extras:
            self._write(conn_id)

    def _write(self, conn_id: str) -> None:
        password, extra = self._extras[conn_id]
        rate = self.simulator.rate_limit
        connection = {
            "conn_type": "autocalls",
            "host": self.simulator.url,
            "password": self.simulator.api_key if password is None else password,
            "extra": {"rate_limit": rate if rate else UNPACED_RATE, **extra},
        }
        self.monkeypatch.setenv(connection_env(conn_id), json.dumps(connection))
