"""The worker is killed with SIGKILL in the middle of a request; the retry sends to nobody twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from airflow_provider_autocalls.testing import AutocallsSimulator, Fault

WORKER = Path(__file__).with_name("bulk_worker.py")
TOTAL = 40


def wait_for(condition: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_sigkill_mid_request_then_retry(
    make_conn: Callable[..., str], sim: AutocallsSimulator, tmp_path: Path
) -> None:
    sim.rate_limit = 20
    make_conn(rate_limit=20)
    recipients = tmp_path / "segment.jsonl"
    recipients.write_text(
        "".join(json.dumps({"recipient_phone": f"+1415555{i:04d}"}) + "\n" for i in range(TOTAL))
    )
    ledger = tmp_path / "ledger"
    command = [sys.executable, str(WORKER), str(recipients), str(ledger)]

    worker = subprocess.Popen(command, env=os.environ.copy(), stdout=subprocess.PIPE, text=True)
    wait_for(lambda: len(sim.delivered) >= 15)
    # The next request is processed (the message goes out) but answered only after 5 s: kill in between.
    sim.inject(Fault(endpoint="send_template", delay=5.0))
    wait_for(lambda: len(sim.delivered) >= 16)
    worker.send_signal(signal.SIGKILL)
    worker.wait(timeout=10)
    assert worker.returncode == -signal.SIGKILL
    sent_before_kill = len(sim.delivered)

    retry = subprocess.run(
        command, env=os.environ.copy(), capture_output=True, text=True, timeout=120, check=True
    )
    summary = json.loads(retry.stdout.strip().splitlines()[-1])
    delivered = [m["recipient_phone"] for m in sim.delivered]
    duplicates = len(delivered) - len(set(delivered))
    print(
        f"SIGKILL resume: sent before the kill {sent_before_kill}, sent after {len(delivered) - sent_before_kill}, "
        f"duplicates {duplicates}, unknown {summary['unknown']}"
    )
    assert duplicates == 0
    assert summary["unknown"] == 1  # the request cut off by the kill: delivered, never repeated
    assert summary["sent"] + summary["unknown"] == TOTAL == len(set(delivered))
    assert summary["sent"] + summary["failed"] + summary["unknown"] + summary["skipped"] == TOTAL
    report = [json.loads(line) for line in Path(summary["report"]).read_text().splitlines()]
    sent_sids = {r["message_sid"] for r in report if r["status"] == "sent"}
    assert sent_sids <= {m["message_sid"] for m in sim.delivered}
    assert sim.rate_limited_count == 0


KILLS = 10


def test_kills_at_random_moments_leave_unknown_only_what_was_on_the_wire(
    make_conn: Callable[..., str], sim: AutocallsSimulator, tmp_path: Path
) -> None:
    """
    At 5/s a bulk send spends nearly all its time waiting for its rate-limit permit. Killed there, it
    must leave that recipient sendable: a claim goes down only after the permit, right before the
    request leaves, so every ``unknown`` recipient is one whose request the simulator received.
    """
    import multiprocessing
    import random
    from types import SimpleNamespace

    from airflow_provider_autocalls.hooks.autocalls import AutocallsHook
    from airflow_provider_autocalls.ledger import State, ledger_for
    from airflow_provider_autocalls.operators.autocalls import BulkSendTemplateOperator

    sim.rate_limit = 5
    make_conn(rate_limit=5)
    AutocallsHook().settings  # noqa: B018 - the forked workers start with the connection code loaded
    phones = [f"+1415555{i:04d}" for i in range(TOTAL)]
    context: Any = {
        "ti": SimpleNamespace(dag_id="d", run_id="kills", task_id="bulk", map_index=-1, try_number=1)
    }

    def bulk() -> BulkSendTemplateOperator:
        return BulkSendTemplateOperator(
            task_id="bulk",
            sender_id=12,
            template_id=46,
            recipients=[{"recipient_phone": p} for p in phones],
            ledger_location=str(tmp_path),
        )

    fork = multiprocessing.get_context("fork")
    chance = random.Random(20261201)
    for _ in range(KILLS):
        worker = fork.Process(target=bulk().execute, args=(context,))
        worker.start()
        time.sleep(chance.uniform(0.3, 1.5))
        os.kill(worker.pid or 0, signal.SIGKILL)
        worker.join(timeout=10)
        ledger = ledger_for(context, str(tmp_path))
        assert ledger is not None
        unknown = {f"+{key[1:]}" for key, (_, state) in ledger.states().items() if state is State.UNKNOWN}
        on_the_wire = {(r.get("json") or {}).get("recipient_phone") for r in sim.requests}
        assert unknown <= on_the_wire, f"unknown without a request: {sorted(unknown - on_the_wire)}"
    summary = bulk().execute(context)
    delivered = [m["recipient_phone"] for m in sim.delivered]
    print(f"{KILLS} kills: unknown {summary['unknown']}, sent {summary['sent']}, delivered {len(delivered)}")
    assert len(delivered) == len(set(delivered)) == TOTAL
    assert summary["sent"] + summary["unknown"] == TOTAL
