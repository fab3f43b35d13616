"""
`make demo`: run the example DAGs end to end against the bundled simulator (no API key needed).

Starts the simulator on 127.0.0.1, points ``autocalls_default`` at it, gives Airflow a throw-away
home under build/demo with a SQLite database, and runs each example DAG with ``dag.test()``. In
example 2 the simulator plays the customer, who answers the template a few seconds after it
arrives; the deferred sensor notices and the follow-up goes out.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
HOME = ROOT / "build" / "demo" / "airflow-home"
CUSTOMER = "+14155550123"

os.environ.update(
    AIRFLOW_HOME=str(HOME),
    AIRFLOW__CORE__DAGS_FOLDER=str(ROOT / "example_dags"),
    AIRFLOW__CORE__LOAD_EXAMPLES="False",
    AIRFLOW__LOGGING__LOGGING_LEVEL="WARNING",
)


def main() -> int:
    from airflow_provider_autocalls.testing import AutocallsSimulator

    HOME.mkdir(parents=True, exist_ok=True)
    print(f"Airflow home: {HOME} (SQLite); migrating the database...", flush=True)
    airflow = Path(sys.executable).with_name("airflow")
    subprocess.run([str(airflow), "db", "migrate"], check=True, capture_output=True)

    with AutocallsSimulator(port=0) as sim:
        os.environ["AIRFLOW_CONN_AUTOCALLS_DEFAULT"] = json.dumps(
            {"conn_type": "autocalls", "host": sim.url, "password": sim.api_key}
        )
        print(f"Simulator: {sim.url} (rate limit {sim.rate_limit:g}/s)\n", flush=True)
        try:
            from airflow.dag_processing.dagbag import DagBag
        except ImportError:  # Airflow 2
            from airflow.models.dagbag import DagBag  # type: ignore[no-redef]

        bag = DagBag(str(ROOT / "example_dags"))
        if bag.import_errors:
            print(f"DAG import errors: {bag.import_errors}")
            return 1
        failures = 0
        for dag_id, prepare in (
            ("example_autocalls_etl_notify", None),
            ("example_autocalls_reply_followup", lambda: play_the_customer(sim)),
            ("example_autocalls_segment", None),
            ("example_autocalls_bulk_csv", None),
            ("example_autocalls_taskflow", None),
            ("example_autocalls_window_aware", None),
        ):
            dag = bag.get_dag(dag_id)
            if dag_id == "example_autocalls_reply_followup":
                # The example checks every 30 s; the demo's customer answers within seconds.
                dag.get_task("wait_for_reply").poke_interval = 1
            if prepare:
                prepare()
            before = len(sim.delivered)
            started = time.monotonic()
            run = dag.test()
            state = str(getattr(run.state, "value", run.state))
            failures += state != "success"
            print(f"== {dag_id}: {state} in {time.monotonic() - started:.1f} s")
            delivered = sim.delivered[before:]
            for message in delivered[:5]:
                print(
                    f"   {message['at']}  {message['kind']:<8} -> {message['recipient_phone']}: {message['text']}"
                )
            if len(delivered) > 5:
                print(
                    f"   ... and {len(delivered) - 5} more; the simulator answered {sim.rate_limited_count} x 429"
                )
            inbound = [r for r in sim.requests if r["endpoint"] == "session_status"]
            if dag_id == "example_autocalls_reply_followup":
                print(f"   ({len(inbound)} session-status checks while waiting for the reply)")
            print(flush=True)
        failures += not watch_customer_replies(sim)
        print(
            "Demo finished: all example DAGs succeeded." if not failures else f"{failures} DAG run(s) failed."
        )
        return 1 if failures else 0


def play_the_customer(sim: object) -> None:
    """Answer the template 2 s after it is delivered, from another thread, as a customer would."""

    def answer() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if any(m["recipient_phone"] == CUSTOMER for m in sim.delivered):  # type: ignore[attr-defined]
                time.sleep(2)
                sim.customer_message(12, CUSTOMER, "Yes, see you then!")  # type: ignore[attr-defined]
                print(f"   (the customer {CUSTOMER} replied)", flush=True)
                return
            time.sleep(0.1)

    threading.Thread(target=answer, daemon=True).start()


def watch_customer_replies(sim: Any) -> bool:
    """
    Example 6 (Airflow 3): three customers write in; the watcher fires once for each; each gets a follow-up.

    ``dag.test()`` does not run asset watchers, so the demo runs the trigger's ``run()`` itself
    (as the triggerer would, with a 1 s poll instead of the example's 60 s) and hands each event to
    the example's follow-up function, as the DAG's task does with its triggering asset event.
    """
    from airflow_provider_autocalls.triggers import _reply_watch

    name = "example_autocalls_customer_replies"
    if not _reply_watch.HAS_EVENT_TRIGGERS:
        print(f"== {name}: skipped (asset watchers need Airflow 3)\n", flush=True)
        return True
    from airflow_provider_autocalls.hooks.autocalls import AutocallsHook

    spec = importlib.util.spec_from_file_location(name, ROOT / "example_dags" / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    kwargs = example.customer_replies.watchers[0].trigger.serialize()[1]
    trigger = _reply_watch.CustomerReplyTrigger(**{**kwargs, "poll_interval": 1})
    customers = list(zip(example.WATCHED, ["Ana", "Ben", "Cleo"], strict=True))
    before = len(sim.delivered)
    hook = AutocallsHook()

    async def watch() -> int:
        fired = 0

        def write_in() -> None:
            time.sleep(2)  # after the watcher's first poll (its baseline)
            for phone, customer in customers:
                sim.customer_message(12, phone, "Where is my order?", name=customer)
                print(f"   (the customer {customer} {phone} wrote in)", flush=True)
                time.sleep(1.5)

        threading.Thread(target=write_in, daemon=True).start()
        events = trigger.run()
        started = time.monotonic()
        try:
            while time.monotonic() - started < 12:  # every message, then two quiet rounds
                try:
                    event = await asyncio.wait_for(anext(events), 12 - (time.monotonic() - started))
                except TimeoutError:
                    break
                fired += 1
                reply = event.payload
                print(
                    f"   event: {reply['customer_name']} {reply['recipient_phone']} wrote at "
                    f"{reply['last_customer_message_at']}; following up",
                    flush=True,
                )
                await asyncio.to_thread(example.follow_up, hook, [reply])
        finally:
            await events.aclose()  # type: ignore[attr-defined]
        return fired

    started = time.monotonic()
    fired = asyncio.run(watch())
    delivered = sim.delivered[before:]
    ok = fired == len(customers) and sorted(m["recipient_phone"] for m in delivered) == sorted(
        example.WATCHED
    )
    print(
        f"== {name}: {'success' if ok else 'failed'} in {time.monotonic() - started:.1f} s "
        f"({fired} events for {len(customers)} messages)"
    )
    for message in delivered:
        print(f"   {message['at']}  {message['kind']:<8} -> {message['recipient_phone']}: {message['text']}")
    print(flush=True)
    return ok


if __name__ == "__main__":
    sys.exit(main())
