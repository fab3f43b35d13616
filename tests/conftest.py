"""Shared fixtures. Airflow gets a throw-away home before anything imports it."""

from __future__ import annotations

import ipaddress
import json
import os
import re
import socket
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
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


@pytest.fixture(scope="session")
def airflow_db() -> None:
    """A migrated SQLite metadata database in the throw-away Airflow home, once per session."""
    import subprocess
    import sys

    airflow = os.path.join(os.path.dirname(sys.executable), "airflow")
    subprocess.run([airflow, "db", "migrate"], check=True, capture_output=True, timeout=600)


class DagRunResult:
    """What a test needs from a finished DAG run, read the same way on Airflow 2 and 3."""

    def __init__(self, state: str, tries: dict[str, list[tuple[str, int]]], pulled: dict[str, Any]) -> None:
        self.state = state
        #: task_id -> [(state, try_number) per map index]
        self.tries = tries
        #: what a ``collect`` task in the DAG wrote: ``{task_id: xcom value}``
        self.pulled = pulled

    def task_state(self, task_id: str) -> str:
        states = {state for state, _ in self.tries[task_id]}
        assert len(states) == 1, states
        return states.pop()


@pytest.fixture
def run_dag(
    airflow_db: None, request: pytest.FixtureRequest, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., DagRunResult]:
    """
    Run a DAG file with ``dag.test()``. Airflow 3 runs only DAGs its bundle (the dags folder) holds,
    so the file goes into the dags folder for the run, named after the test; the source refers to
    that name as ``DAG_ID``. A DAG may pull XComs into ``PULLED_PATH`` (an env var) for the test.
    """
    from airflow.providers.common.compat.sdk import conf

    dags = Path(conf.get("core", "dags_folder"))
    dags.mkdir(parents=True, exist_ok=True)
    dag_id = re.sub(r"\W", "_", request.node.name)[:200]
    dag_file = dags / f"{dag_id}.py"
    pulled_path = tmp_path / "pulled.json"
    monkeypatch.setenv("PULLED_PATH", str(pulled_path))

    def run(source: str, tweak: Callable[[Any], None] | None = None, dag_id: str = dag_id) -> DagRunResult:
        dag_file.write_text(source)
        try:
            try:
                from airflow.dag_processing.dagbag import DagBag
            except ImportError:  # Airflow 2
                from airflow.models.dagbag import DagBag  # type: ignore[no-redef]

            bag = DagBag(str(dag_file))
            assert not bag.import_errors, bag.import_errors
            dag = bag.get_dag(dag_id)
            if tweak:
                tweak(dag)
            dag_run = dag.test()
        finally:
            dag_file.unlink()
        return DagRunResult(
            str(getattr(dag_run.state, "value", dag_run.state)),
            _tries(dag_run.dag_id, dag_run.run_id),
            json.loads(pulled_path.read_text()) if pulled_path.exists() else {},
        )

    return run


def _tries(dag_id: str, run_id: str) -> dict[str, list[tuple[str, int]]]:
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    tries: dict[str, list[tuple[str, int]]] = {}
    with create_session() as session:
        rows = (
            session.query(TaskInstance)
            .filter(TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id)
            .order_by(TaskInstance.task_id, TaskInstance.map_index)
            .all()
        )
        for ti in rows:
            state = str(getattr(ti.state, "value", ti.state))
            tries.setdefault(ti.task_id, []).append((state, ti.try_number))
    return tries


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
