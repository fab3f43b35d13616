"""Every example DAG runs as is against the simulator."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_autocalls.testing import AutocallsSimulator

EXAMPLES = Path(__file__).resolve().parent.parent / "example_dags"


@pytest.fixture(autouse=True)
def _connection(make_conn: Callable[..., str], sim: AutocallsSimulator) -> None:
    sim.rate_limit = 5  # the real API's limit: the examples must not cause a single 429
    make_conn(rate_limit=5)


def run_example(run_dag: Callable[..., Any], name: str, tweak: Callable[[Any], None] | None = None) -> Any:
    return run_dag((EXAMPLES / f"{name}.py").read_text(), tweak=tweak, dag_id=name)


def test_example_1_notifies_the_on_call_phone(run_dag: Callable[..., Any], sim: AutocallsSimulator) -> None:
    assert run_example(run_dag, "example_autocalls_etl_notify").state == "success"
    [message] = sim.delivered
    assert (message["recipient_phone"], message["kind"], message["template_id"]) == (
        "+14155550100",
        "template",
        46,
    )


def test_example_1_sends_free_text_when_the_window_is_open(
    run_dag: Callable[..., Any], sim: AutocallsSimulator
) -> None:
    sim.customer_message(12, "+14155550100", "on call today")
    assert run_example(run_dag, "example_autocalls_etl_notify").state == "success"
    [message] = sim.delivered
    assert message["kind"] == "freeform"
    assert message["text"] == "example_autocalls_etl_notify: load_orders loaded 1042 rows."


def test_example_2_follows_up_only_after_the_reply(
    run_dag: Callable[..., Any], sim: AutocallsSimulator
) -> None:
    replied: list[str] = []

    def customer() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not sim.delivered:
            time.sleep(0.05)
        time.sleep(1.5)
        replied.append(sim.now().isoformat())
        sim.customer_message(12, "+14155550123", "Yes!")

    def quick_checks(dag: Any) -> None:
        dag.get_task("wait_for_reply").poke_interval = 0.5

    threading.Thread(target=customer, daemon=True).start()
    assert run_example(run_dag, "example_autocalls_reply_followup", quick_checks).state == "success"
    template, follow_up = sim.delivered
    assert (template["kind"], follow_up["kind"]) == ("template", "freeform")
    assert template["at"] < replied[0] < follow_up["at"]
    assert sim.rate_limited_count == 0


def test_example_3_messages_each_customer_once(run_dag: Callable[..., Any], sim: AutocallsSimulator) -> None:
    assert run_example(run_dag, "example_autocalls_segment").state == "success"
    phones = [m["recipient_phone"] for m in sim.delivered]
    assert sorted(phones) == ["+14155550000", "+14155550001", "+14155550002"]
    assert sim.rate_limited_count == 0


def test_example_4_bulk_sends_from_the_exported_csv(
    run_dag: Callable[..., Any], sim: AutocallsSimulator
) -> None:
    assert run_example(run_dag, "example_autocalls_bulk_csv").state == "success"
    phones = [m["recipient_phone"] for m in sim.delivered]
    assert len(phones) == len(set(phones)) == 25
    assert sim.rate_limited_count == 0


def test_example_5_taskflow_retry_messages_nobody_twice(
    run_dag: Callable[..., Any], sim: AutocallsSimulator
) -> None:
    result = run_example(run_dag, "example_autocalls_taskflow")
    assert result.state == "success"
    assert result.tries["remind"] == [("success", 2)]
    phones = [m["recipient_phone"] for m in sim.delivered]
    assert sorted(phones) == ["+14155550140", "+14155550141"]


def test_example_1_falls_back_to_the_failure_template_when_the_task_fails(
    run_dag: Callable[..., Any], sim: AutocallsSimulator
) -> None:
    def fail(dag: Any) -> None:
        def broken() -> int:
            raise RuntimeError("the load broke")

        dag.get_task("load_orders").python_callable = broken

    assert run_example(run_dag, "example_autocalls_etl_notify", fail).state == "failed"
    [message] = sim.delivered
    assert (message["kind"], message["template_id"]) == ("template", 49)
    assert message["text"] == "Pipeline example_autocalls_etl_notify failed. Please check Airflow."


def test_example_6_sends_the_fallback_template_when_the_window_is_closed(
    run_dag: Callable[..., Any], sim: AutocallsSimulator
) -> None:
    assert run_example(run_dag, "example_autocalls_window_aware").state == "success"
    assert [(m["kind"], m["template_id"]) for m in sim.delivered] == [("template", 45)]


def test_example_6_sends_free_text_when_the_window_is_open(
    run_dag: Callable[..., Any], sim: AutocallsSimulator
) -> None:
    sim.customer_message(12, "+14155550160", "where is my order?")
    assert run_example(run_dag, "example_autocalls_window_aware").state == "success"
    [message] = sim.delivered
    assert message["kind"] == "freeform"
    assert message["text"] == "Hi Ada, your order A-1042 has shipped."
