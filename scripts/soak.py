"""
`make soak`: many messages through BulkSendTemplateOperator with faults, a SIGKILL and retries.

The simulator runs as its own process with a raised rate limit. About 5 % of the sends meet a
fault, mixed: 500 and 502 (in doubt), a connection dropped after the message went out, a slow
answer past the timeout (also delivered), a 429 (retried), a TEMPLATE_MISMATCH (failed). The
input also holds duplicate and invalid rows. A worker process runs the bulk send and is killed
with SIGKILL part-way; further tries run until one finishes, as Airflow's retries would. Then the
accounting is checked against what the simulator delivered:

- every input row is accounted for: sent + failed + unknown + skipped = rows;
- no recipient got the same message twice;
- every ``sent`` in the report is a delivered message, and every delivered message is ``sent``
  or ``unknown`` in the report.

Usage: ``python scripts/soak.py [N]`` (default 10,000 messages). Exits 1 if any check fails.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace
from typing import Any

TOTAL = int(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1].isdigit() else 10_000
RATE = 250.0
FAULT_SHARE = 0.05
MAX_TRIES = 12
MISMATCH = json.dumps({"success": False, "error": "Variables do not fit", "error_code": "TEMPLATE_MISMATCH"})
FAULTS: list[dict[str, Any]] = [
    {"status": 500},
    {"status": 502},
    {"process": True, "drop": True},
    {"delay": 2.5},  # past the 1 s timeout: processed, answer lost
    {"status": 429, "headers": {"Retry-After": "0.2"}},
    {"status": 422, "body": MISMATCH},
]


def worker(recipients: str, ledger: str) -> None:
    """One try of the task, as a worker process runs it."""
    from airflow_provider_autocalls.operators.autocalls import BulkSendTemplateOperator

    operator = BulkSendTemplateOperator(
        task_id="soak",
        sender_id=12,
        template_id=46,
        recipients_file=recipients,
        ledger_location=ledger,
        on_invalid_row="skip",
        progress_interval=5,
    )
    context: Any = {"ti": SimpleNamespace(dag_id="soak", run_id="soak_run", task_id="soak", map_index=-1)}
    print("SUMMARY " + json.dumps(operator.execute(context)), flush=True)


def control(root: str, name: str, payload: Any = None) -> Any:
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(f"{root}/_sim/{name}", data=data, method="POST" if data else "GET")
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.load(answer)


def write_recipients(path: Path) -> int:
    """TOTAL distinct phones, plus 0.5 % duplicates and 0.2 % invalid rows; returns the row count."""
    rng = random.Random(7)
    rows = [{"recipient_phone": f"+1{5_000_000_000 + i}"} for i in range(TOTAL)]
    rows += [{"recipient_phone": rows[rng.randrange(TOTAL)]["recipient_phone"]} for _ in range(TOTAL // 200)]
    rows += [{"recipient_phone": f"555-{i:04d}"} for i in range(TOTAL // 500)]
    rng.shuffle(rows)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return len(rows)


def main() -> int:
    from airflow_provider_autocalls.testing.process import simulator_process

    with simulator_process(rate_limit=RATE) as url:
        return soak(url, "sim-key")


def soak(url: str, key: str) -> int:
    root = url.removesuffix("/api")
    for fault in FAULTS:
        share = FAULT_SHARE / len(FAULTS)
        control(root, "faults", {"endpoint": "send_template", "probability": share, "count": 10**9, **fault})
    env = {
        **os.environ,
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        "AIRFLOW_CONN_AUTOCALLS_DEFAULT": json.dumps(
            {
                "conn_type": "autocalls",
                "host": url,
                "password": key,
                "extra": {"rate_limit": RATE, "timeout": 1.0, "max_retries": 3},
            }
        ),
    }
    with tempfile.TemporaryDirectory(prefix="autocalls-soak-") as tmp:
        recipients = Path(tmp) / "recipients.jsonl"
        rows = write_recipients(recipients)
        command = [sys.executable, __file__, "--worker", str(recipients), str(Path(tmp) / "ledger")]
        started = time.monotonic()
        print(
            f"soak: {rows:,} rows ({TOTAL:,} distinct recipients) at {RATE:g}/s, ~{FAULT_SHARE:.0%} faults",
            flush=True,
        )

        first = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        kill_at = TOTAL // 3
        while first.poll() is None and len(control(root, "messages")["messages"]) < kill_at:
            time.sleep(0.2)
        first.send_signal(signal.SIGKILL)
        first.wait()
        sent_before_kill = len(control(root, "messages")["messages"])
        print(f"soak: SIGKILL after {sent_before_kill:,} delivered", flush=True)

        summary: dict[str, Any] | None = None
        for attempt in range(2, MAX_TRIES + 1):
            done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=3600)
            lines = [line for line in done.stdout.splitlines() if line.startswith("SUMMARY ")]
            if done.returncode == 0 and lines:
                summary = json.loads(lines[-1].removeprefix("SUMMARY "))
                print(f"soak: try {attempt} finished", flush=True)
                break
            reason = (done.stderr.strip().splitlines() or ["?"])[-1][:200]
            print(f"soak: try {attempt} stopped ({reason}); retrying", flush=True)
        if summary is None:
            print(f"soak: FAILED: no try finished in {MAX_TRIES}")
            return 1
        return check(
            summary,
            rows,
            control(root, "messages")["messages"],
            time.monotonic() - started,
            control(root, "state"),
        )


def check(
    summary: dict[str, Any], rows: int, delivered: list[dict[str, Any]], elapsed: float, state: dict[str, Any]
) -> int:
    report = [json.loads(line) for line in Path(summary["report"]).read_text().splitlines()]
    phones = [m["recipient_phone"] for m in delivered]
    duplicates = len(phones) - len(set(phones))
    # A duplicate row is reported skipped beside its phone's own outcome: look at the outcomes.
    status_of = {r["recipient_phone"]: r["status"] for r in report if r["status"] != "skipped"}
    delivered_sids = {m["message_sid"] for m in delivered}
    sent_not_delivered = [
        r for r in report if r["status"] == "sent" and r["message_sid"] not in delivered_sids
    ]
    delivered_unreported = [p for p in phones if status_of.get(p) not in ("sent", "unknown")]
    counts = {s: sum(1 for r in report if r["status"] == s) for s in ("sent", "failed", "unknown", "skipped")}
    accounted = sum(counts.values())
    print(
        f"soak: {rows:,} rows: sent {counts['sent']:,} + failed {counts['failed']:,} + unknown "
        f"{counts['unknown']:,} + skipped {counts['skipped']:,} = {accounted:,}; delivered {len(phones):,}, "
        f"duplicates {duplicates}; sent-but-not-delivered {len(sent_not_delivered)}, "
        f"delivered-but-not-sent-or-unknown {len(delivered_unreported)}; {elapsed:.0f} s; 429s answered "
        f"by the simulator's limiter {state.get('rate_limited', '?')}"
    )
    failures = [
        name
        for name, bad in (
            ("every row accounted for", accounted != rows),
            ("no duplicates", duplicates != 0),
            ("every sent was delivered", bool(sent_not_delivered)),
            ("every delivery reported sent or unknown", bool(delivered_unreported)),
        )
        if bad
    ]
    print("soak: PASSED" if not failures else f"soak: FAILED: {', '.join(failures)}")
    return 1 if failures else 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        worker(sys.argv[2], sys.argv[3])
    else:
        sys.exit(main())
