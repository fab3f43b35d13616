"""The pytest plugin's fixtures for users' own DAG tests: connections, rate, Airflow home, DAG runs."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_autocalls.testing import AutocallsSimulator
from airflow_provider_autocalls.testing.connections import UNPACED_RATE
from airflow_provider_autocalls.testing.customer import reply_after_delivery

PHONE = "+14155550123"


def test_any_connection_id_points_at_the_simulator(
    autocalls_simulator: AutocallsSimulator, autocalls_connection_factory: Callable[..., str]
) -> None:
    from airflow_provider_autocalls.hooks.autocalls import AutocallsHook

    conn_id = autocalls_connection_factory("whatsapp_eu", timeout=7)
    assert conn_id == "whatsapp_eu"
    assert json.loads(os.environ["AIRFLOW_CONN_WHATSAPP_EU"])["extra"] == {"rate_limit": 5.0, "timeout": 7}
    hook = AutocallsHook("whatsapp_eu")
    try:
        assert [s["id"] for s in hook.get_senders(status="all")] == [12, 15]
    finally:
        hook.close()
    assert [r["path"] for r in autocalls_simulator.requests][-1].endswith("/senders")


def test_the_connection_follows_the_simulator_rate_set_after_it(
    autocalls_connection: AutocallsSimulator,
) -> None:
    sim = autocalls_connection
    sim.rate_limit = 0  # after the fixture made the connection: it must follow
    assert json.loads(os.environ["AIRFLOW_CONN_AUTOCALLS_DEFAULT"])["extra"] == {"rate_limit": UNPACED_RATE}
    sim.rate_limit = 2
    assert json.loads(os.environ["AIRFLOW_CONN_AUTOCALLS_DEFAULT"])["extra"] == {"rate_limit": 2}


def test_a_rate_given_by_the_test_is_kept(
    autocalls_simulator: AutocallsSimulator, autocalls_connection_factory: Callable[..., str]
) -> None:
    autocalls_connection_factory("slow", rate_limit=1)
    autocalls_simulator.rate_limit = 0
    assert json.loads(os.environ["AIRFLOW_CONN_SLOW"])["extra"] == {"rate_limit": 1}


def test_an_unlimited_simulator_runs_unpaced(autocalls_connection: AutocallsSimulator) -> None:
    from airflow_provider_autocalls.hooks.autocalls import AutocallsHook

    autocalls_connection.rate_limit = 0
    hook = AutocallsHook()
    try:
        started = time.monotonic()
        for _ in range(20):
            hook.get_session_status(12, PHONE)
        elapsed = time.monotonic() - started
    finally:
        hook.close()
    # At 5/s the 20 calls would take at least 3.8 s; unpaced they take a fraction of one.
    assert elapsed < 2.0, elapsed
    assert autocalls_connection.rate_limited_count == 0


def test_the_airflow_home_is_isolated_and_migrated(autocalls_airflow_home: Path) -> None:
    from airflow.providers.common.compat.sdk import conf

    assert os.environ["AIRFLOW_HOME"] == str(autocalls_airflow_home)
    assert Path(conf.get("core", "dags_folder")) == autocalls_airflow_home / "dags"
    assert str(autocalls_airflow_home) in conf.get("database", "sql_alchemy_conn")
    assert (autocalls_airflow_home / "airflow.db").stat().st_size > 0


def test_isolating_after_airflow_was_imported_elsewhere_says_what_to_do(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from airflow_provider_autocalls.testing.airflow_home import MARKER_ENV, isolate_airflow_home

    monkeypatch.delenv(MARKER_ENV)
    with pytest.raises(RuntimeError, match=r"conftest\.py, before anything imports Airflow"):
        isolate_airflow_home()


DAG_FILE = """
import pendulum
from airflow.providers.common.compat.sdk import DAG
from airflow_provider_autocalls.operators.autocalls import SendFreeformOperator, SendTemplateOperator
from airflow_provider_autocalls.sensors.autocalls import SessionOpenSensor

with DAG("plugin_reply_dag", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")):
    invite = SendTemplateOperator(
        task_id="invite", autocalls_conn_id="whatsapp_eu", sender_id=12, template_id=46,
        recipient_phone="+14155550123",
    )
    wait = SessionOpenSensor(
        task_id="wait", autocalls_conn_id="whatsapp_eu", sender_id=12, recipient_phone="+14155550123",
        replied_after="{{ ti.xcom_pull(task_ids='invite')['sent_at'] }}", deferrable=True,
        poke_interval=0.5, timeout=60,
    )
    thanks = SendFreeformOperator(
        task_id="thanks", autocalls_conn_id="whatsapp_eu", sender_id=12, recipient_phone="+14155550123",
        message="Thanks!",
    )
    invite >> wait >> thanks
"""


def test_run_dag_runs_a_dag_file_with_a_deferred_wait_and_keeps_ledgers_in_tmp_path(
    autocalls_simulator: AutocallsSimulator,
    autocalls_connection_factory: Callable[..., str],
    autocalls_run_dag: Callable[..., Any],
    autocalls_ledger_location: Path,
    autocalls_airflow_home: Path,
    tmp_path: Path,
) -> None:
    autocalls_simulator.rate_limit = 0
    autocalls_connection_factory("whatsapp_eu")
    dag_file = tmp_path / "plugin_reply_dag.py"
    dag_file.write_text(DAG_FILE)
    reply_after_delivery(autocalls_simulator, 12, PHONE, delay=0.5)

    result = autocalls_run_dag(dag_file)

    assert result.state == "success"
    assert result.task_state("wait") == "success"
    assert [m["kind"] for m in autocalls_simulator.delivered] == ["template", "freeform"]
    assert autocalls_ledger_location.is_relative_to(tmp_path)
    assert list(autocalls_ledger_location.rglob("ledger/*.claim.json")), "the operators' ledgers"
    shared = autocalls_airflow_home / "autocalls"
    assert not any("plugin_reply_dag" in str(path) for path in shared.rglob("*")), "none in the shared home"
    assert not (autocalls_airflow_home / "dags" / dag_file.name).exists(), "the copy is removed"


def test_run_dag_names_the_import_error(autocalls_run_dag: Callable[..., Any], tmp_path: Path) -> None:
    dag_file = tmp_path / "broken_dag.py"
    dag_file.write_text("from airflow.providers.common.compat.sdk import DAG\nimport no_such_module\n")
    with pytest.raises(AssertionError, match="broken_dag.py does not import.*no_such_module"):
        autocalls_run_dag(dag_file)
    dag_file.write_text("x = 1\n")
    with pytest.raises(AssertionError, match="broken_dag.py holds no DAG"):
        autocalls_run_dag(dag_file)
