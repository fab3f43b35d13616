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
