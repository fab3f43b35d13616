"""
A try that reads the ledger after a racing try of the same task instance claimed the message, but
before that try recorded its outcome: it must wait for that outcome, as it does when it loses the
claim itself, and return the one message's answer.

Found on the S3 ledger, where reads take long enough for the second try to find the first try's
claim already there (see ``test_ledger_object_storage``); reproduced here on a local folder.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from airflow_provider_autocalls.ledger import State, ledger_for, phone_key
from airflow_provider_autocalls.operators.autocalls import SendTemplateOperator
from airflow_provider_autocalls.testing import AutocallsSimulator, Fault

PHONE = "+14155550000"


def context() -> Any:
    return {"ti": SimpleNamespace(dag_id="race", run_id="late", task_id="one", map_index=-1, try_number=1)}


def test_a_try_that_finds_a_racing_claim_waits_for_its_outcome(
    tmp_path: Path, make_conn: Callable[..., str], sim: AutocallsSimulator
) -> None:
    make_conn(max_retries=0)
    sim.inject(Fault(endpoint="send_template", delay=1.5))  # the first try's answer takes a while
    results: dict[str, Any] = {}

    def run(name: str) -> None:
        operator = SendTemplateOperator(
            task_id="one", sender_id=12, template_id=46, recipient_phone=PHONE, ledger_location=str(tmp_path)
        )
        # Airflow 2.11 keeps the guard of execute() in a thread-local that only the main thread starts with.
        try:
            from airflow.models.baseoperator import ExecutorSafeguard

            if not hasattr(ExecutorSafeguard._sentinel, "callers"):
                ExecutorSafeguard._sentinel.callers = {}
        except ImportError:  # Airflow 3
            pass
        try:
            results[name] = operator.execute(context())
        except Exception as error:
            results[name] = error

    first = threading.Thread(target=run, args=("first",))
    first.start()
    ledger = ledger_for(context(), str(tmp_path))
    assert ledger is not None
    deadline = time.monotonic() + 30  # a loaded machine takes a while to read the connection
    while (entry := ledger.entry(phone_key(PHONE))) is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert entry is not None, results
    assert entry.state is State.UNKNOWN  # claimed, request out, no outcome yet
    run("second")  # the second try starts now, while the first one's request is out
    first.join(timeout=30)
    assert len(sim.delivered) == 1
    assert isinstance(results["first"], dict), results
    assert results["second"] == results["first"], results
