"""
Two tries of one task instance at the same moment (a zombie and its replacement, or a task
scheduled twice): two processes run the same operator with the same task instance, released
together by a barrier. Nobody may be messaged twice, and between them the two tries account for
every recipient once.
"""

from __future__ import annotations

import json
import multiprocessing
import traceback
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from airflow_provider_autocalls.hooks.autocalls import AutocallsHook
from airflow_provider_autocalls.operators.autocalls import BulkSendTemplateOperator, SendTemplateOperator
from airflow_provider_autocalls.testing import AutocallsSimulator, Fault

TRIALS = 20
PHONES = [f"+1415555{i:04d}" for i in range(10)]


def context(trial: int, task_id: str) -> Any:
    return {
        "ti": SimpleNamespace(dag_id="race", run_id=f"r{trial}", task_id=task_id, map_index=-1, try_number=1)
    }


def _run(kind: str, trial: int, location: str, barrier: Any, results: Any) -> None:
    try:
        if kind == "single":
            op: Any = SendTemplateOperator(
                task_id="one",
                sender_id=12,
                template_id=46,
                recipient_phone=PHONES[0],
                ledger_location=location,
            )
        else:
            op = BulkSendTemplateOperator(
                task_id="bulk",
                sender_id=12,
                template_id=46,
                recipients=[{"recipient_phone": p} for p in PHONES],
                ledger_location=location,
            )
        barrier.wait(timeout=30)
        results.put(("ok", op.execute(context(trial, op.task_id))))
    except BaseException as error:
        results.put(("error", f"{type(error).__name__}: {error}\n{traceback.format_exc()}"))


def race(kind: str, trial: int, location: str) -> list[tuple[str, Any]]:
    fork = multiprocessing.get_context("fork")
    barrier = fork.Barrier(2)
    results = fork.Queue()
    tries = [fork.Process(target=_run, args=(kind, trial, location, barrier, results)) for _ in range(2)]
    for process in tries:
        process.start()
    outcomes = [results.get(timeout=60) for _ in tries]
    for process in tries:
        process.join(timeout=30)
    return outcomes


def prepare_race(make_conn: Callable[..., str], sim: AutocallsSimulator) -> None:
    make_conn(max_retries=0)
    AutocallsHook().settings  # noqa: B018 - the forked tries start with Airflow's connection code loaded
    # An answer takes a moment, as the real API's does: the two tries overlap for real.
    sim.inject(Fault(endpoint="send_template", delay=0.02, count=10_000))


@pytest.fixture(autouse=True)
def _connection(make_conn: Callable[..., str], sim: AutocallsSimulator) -> None:
    prepare_race(make_conn, sim)


def check_single_races(location: str, sim: AutocallsSimulator) -> None:
    """:data:`TRIALS` races of two tries of one single send on ``location``."""
    for trial in range(TRIALS):
        before = len(sim.delivered)
        outcomes = race("single", trial, location)
        assert len(sim.delivered) - before == 1, (trial, outcomes)
        answers = [answer for status, answer in outcomes if status == "ok"]
        # Both tries succeed with the one message's answer: the loser waited for the winner's outcome.
        assert [status for status, _ in outcomes] == ["ok", "ok"], outcomes
        assert {answer["message_sid"] for answer in answers} == {sim.delivered[-1]["message_sid"]}


def check_bulk_races(location: str, sim: AutocallsSimulator, read_text: Callable[[str], str]) -> None:
    """:data:`TRIALS` races of two tries of one bulk send on ``location``; ``read_text`` reads the report."""
    for trial in range(TRIALS):
        before = len(sim.delivered)
        outcomes = race("bulk", trial, location)
        assert [status for status, _ in outcomes] == ["ok", "ok"], outcomes
        delivered = Counter(m["recipient_phone"] for m in sim.delivered[before:])
        assert delivered == Counter(PHONES), (trial, delivered)
        # Each recipient was sent by exactly one of the two tries; the other says it lost the claim
        # (or found the message already sent).
        summaries = [summary for _, summary in outcomes]
        assert sum(s["this_try"]["sent"] for s in summaries) == len(PHONES), summaries
        for summary in summaries:
            mine = summary["this_try"]["sent"]
            lost = summary["this_try"]["claimed_by_another_try"]
            assert lost + summary["from_earlier_tries"] == len(PHONES) - mine, summary
        # The report (written by whichever try finished last) has every recipient once, as sent.
        final = [json.loads(line) for line in read_text(summaries[0]["report"]).splitlines()]
        assert sorted(r["recipient_phone"] for r in final) == PHONES
        # "unknown": the report was written while the other try was still sending.
        assert {r["status"] for r in final} <= {"sent", "unknown"}


def test_a_single_send_raced_by_two_tries_goes_out_once(tmp_path: Path, sim: AutocallsSimulator) -> None:
    check_single_races(str(tmp_path), sim)


def test_a_bulk_send_raced_by_two_tries_messages_everyone_once(
    tmp_path: Path, sim: AutocallsSimulator
) -> None:
    check_bulk_races(str(tmp_path), sim, lambda report: Path(report).read_text())
