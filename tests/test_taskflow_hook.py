"""The hook inside a TaskFlow ``@task``: at most once across tries, like the operators."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_autocalls.hooks.autocalls import AutocallsHook
from airflow_provider_autocalls.testing import AutocallsSimulator, Fault
from tests.conftest import DAG_HEADER

TASK_HEADER = DAG_HEADER + (
    "from airflow_provider_autocalls.hooks.autocalls import AutocallsHook\nPHONE = '+14155550123'\n"
)


@pytest.fixture(autouse=True)
def _connection(make_conn: Callable[..., str]) -> None:
    make_conn(max_retries=0)


def test_a_send_in_doubt_ends_the_task_without_airflow_retries(
    run_dag: Callable[..., Any], sim: AutocallsSimulator
) -> None:
    # The message goes out, then the connection drops: every try of the old hook sent it again.
    sim.inject(Fault(endpoint="send_template", process=True, drop=True, count=3))
    result = run_dag(
        TASK_HEADER + "with DAG(DAG_ID, schedule=None, start_date=START):\n"
        "    @task(retries=2, retry_delay=0)\n"
        "    def notify():\n"
        "        return AutocallsHook().send_template(12, 46, PHONE)\n"
        "    notify()\n"
    )
    assert result.tries["notify"] == [("failed", 1)]
    assert len(sim.delivered) == 1


def test_a_later_try_gets_the_first_answer_back_without_sending(
    run_dag: Callable[..., Any], sim: AutocallsSimulator
) -> None:
    result = run_dag(
        TASK_HEADER + "with DAG(DAG_ID, schedule=None, start_date=START):\n"
        "    @task(retries=2, retry_delay=0)\n"
        "    def notify(ti=None):\n"
        "        hook = AutocallsHook()\n"
        "        first = hook.send_template(12, 46, PHONE)\n"
        "        second = hook.send_freeform(12, PHONE, 'Your order shipped.')\n"
        "        third = hook.send_freeform(12, PHONE, 'Your invoice is ready.')  # another message: sent too\n"
        "        if ti.try_number == 1:\n"
        "            raise RuntimeError('the task failed after sending')\n"
        "        return [first['message_sid'], second['message_sid'], third['message_sid']]\n"
        "    @task\n"
        "    def pull(sids):\n"
        "        collect({'notify': sids})\n"
        "    pull(notify())\n"
    )
    assert result.tries["notify"] == [("success", 2)]
    assert [m["kind"] for m in sim.delivered] == ["template", "freeform", "freeform"]
    assert result.pulled["notify"] == [m["message_sid"] for m in sim.delivered]


def test_the_same_message_twice_in_one_try_is_sent_twice_and_replayed_twice(
    run_dag: Callable[..., Any], sim: AutocallsSimulator
) -> None:
    result = run_dag(
        TASK_HEADER + "with DAG(DAG_ID, schedule=None, start_date=START):\n"
        "    @task(retries=1, retry_delay=0)\n"
        "    def remind(ti=None):\n"
        "        hook = AutocallsHook()\n"
        "        hook.send_template(12, 46, PHONE)\n"
        "        hook.send_template(12, 46, PHONE)\n"
        "        if ti.try_number == 1:\n"
        "            raise RuntimeError('fail once')\n"
        "    remind()\n"
    )
    assert result.tries["remind"] == [("success", 2)]
    assert len(sim.delivered) == 2


def test_outside_a_task_the_hook_is_a_plain_client(
    sim: AutocallsSimulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW__AUTOCALLS__LEDGER_LOCATION", str(tmp_path))
    hook = AutocallsHook()
    hook.send_template(12, 46, "+14155550123")
    hook.send_template(12, 46, "+14155550123")
    assert len(sim.delivered) == 2
    assert list(tmp_path.iterdir()) == []
