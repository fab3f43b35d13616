"""
Bulk sending: rate against the limit, at real send latencies against the alternatives, and memory.

1. rate: 1,000 recipients at the simulator's 5 req/s limit, and 5,000 at 50 req/s, through
   BulkSendTemplateOperator. Achieved rate / limit (goal >= 0.95) and the simulator's 429 count
   (goal 0).
2. latency: 40 recipients at 5 req/s, the simulator (in its own process, strict sliding one-second
   window) answering each send after 0, 0.2, 0.5, 1.0 or 2.0 s, or after a delay drawn between
   0.2 and 1.5 s. Four ways side by side, in one run: ``BulkSendTemplateOperator`` with one send in
   flight (``max_in_flight=1``, the first wave's way); ``BulkSendTemplateOperator`` as it is; a
   mapped ``SendTemplateOperator``, one task instance per recipient, run as a LocalExecutor runs
   them (``_mapped_sends`` says how, and what that model leaves out); and a loop a user might write
   in a task instead, ``AutocallsHook.send_template`` then ``time.sleep(1 / rate)`` (the hook paces
   too, and retries a 429). Each cell: accepted sends per second as the simulator saw them arrive,
   over the limit (goal for the operator as it is: >= 0.95), the share of sends answered 429 (goal
   <= 0.5 %), the duplicates (goal 0) and the recipients never sent, if any.
3. memory: peak RSS of a bulk send from a 100,000-row file against one from a 1,000-row file, each
   in a fresh process, the simulator in another (goal: the difference under 20 MB).

``--quick`` (CI's smoke run; its figures mean little): 25 and 125 recipients for the rate, 8
recipients at 0.5 s latency only for the four ways, 2,000 rows against 1,000 for memory.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from _sim_control import LATENCIES, PHONE_BASE, RATE, connection, control, prepare, seen, sleep_loop

QUICK = "--quick" in sys.argv
# The figures are the output; the operator's progress lines (and its warning that execute() runs
# outside Airflow's task runner) would drown them.
os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "ERROR")


def run_bulk(
    url: str, key: str, rate: float, recipients_file: str, ledger: str, max_in_flight: int | None = None
) -> dict[str, Any]:
    os.environ["AIRFLOW_CONN_AUTOCALLS_DEFAULT"] = connection(url, key, rate)
    from airflow_provider_autocalls.hooks._pacing import forget_pacers
    from airflow_provider_autocalls.operators.autocalls import BulkSendTemplateOperator

    # A fresh pacer, as in a task's fresh process: one key's pacer keeps the lowest rate it was given.
    forget_pacers()

    operator = BulkSendTemplateOperator(
        task_id="bulk",
        sender_id=12,
        template_id=46,
        recipients_file=recipients_file,
        ledger_location=ledger,
        max_in_flight=max_in_flight,
    )
    context: Any = {
        "ti": SimpleNamespace(dag_id="bench", run_id=f"r{time.time_ns()}", task_id="bulk", map_index=-1)
    }
    return operator.execute(context)


def segment(path: Path, size: int) -> str:
    with path.open("w") as f:
        f.writelines(json.dumps({"recipient_phone": f"+1{4_000_000_000 + i}"}) + "\n" for i in range(size))
    return str(path)


def rate_case(size: int, limit: float, work: Path) -> None:
    """The operator against the simulator in its own process, at ``limit``, answering at once."""
    from airflow_provider_autocalls.testing.process import simulator_process

    with simulator_process(rate_limit=limit) as url, control(url) as ctl:
        summary = run_bulk(url, "sim-key", limit, segment(work / f"rate-{size}.jsonl", size), str(work))
        result = seen(ctl, limit)
        print(
            f"bulk rate: {summary['sent']}/{size} sent at a {limit:g}/s limit: {result.achieved:.3f} msg/s = "
            f"{result.ratio(limit):.3f} of the limit (goal >= 0.95); 429s: {result.refused} (goal 0)",
            flush=True,
        )


def latency_case(size: int, latencies: list[tuple[str, float | tuple[float, float]]], work: Path) -> None:
    """
    The same recipients at the API's 5/s, each send answered after a delay, four ways side by side:
    the operator with one send in flight (the first wave's way), the operator as it is, a mapped
    ``SendTemplateOperator`` (see ``_mapped_sends``) and a ``time.sleep(1 / rate)`` loop over the hook.
    """
    from _mapped_sends import MAX_ACTIVE_TASKS, run_mapped

    from airflow_provider_autocalls.hooks._pacing import forget_pacers
    from airflow_provider_autocalls.testing.process import simulator_process

    key = "sim-key"
    phones = [f"+{PHONE_BASE + n}" for n in range(size)]
    with (work / "latency.jsonl").open("w") as f:
        f.writelines(json.dumps({"recipient_phone": phone}) + "\n" for phone in phones)
    recipients_file = str(work / "latency.jsonl")

    def mapped(url: str, ledger: str) -> None:
        run_mapped(url, key, RATE, phones, ledger, run_id=f"r{time.time_ns()}")

    def hook_sleep_loop(url: str, ledger: str) -> None:
        from airflow_provider_autocalls.hooks.autocalls import AutocallsHook

        os.environ["AIRFLOW_CONN_AUTOCALLS_DEFAULT"] = connection(url, key, RATE)
        hook = AutocallsHook()
        sleep_loop(
            lambda n: hook.send_template(sender_id=12, template_id=46, recipient_phone=phones[n]), size
        )

    approaches: list[tuple[str, Callable[[str, str], object]]] = [
        (
            "one in flight (`max_in_flight=1`)",
            lambda url, ledger: run_bulk(url, key, RATE, recipients_file, ledger, 1),
        ),
        ("`BulkSendTemplateOperator`", lambda url, ledger: run_bulk(url, key, RATE, recipients_file, ledger)),
        (f"mapped `SendTemplateOperator`, {MAX_ACTIVE_TASKS} at once", mapped),
        ("`sleep(1 / rate)` loop over the hook", hook_sleep_loop),
    ]
    print(
        f"bulk latency: {size} recipients at a {RATE:g}/s strict sliding window; achieved / limit "
        "(share of sends answered 429, duplicates; recipients not sent, if any)",
        flush=True,
    )
    header = ["send latency", *(name for name, _ in approaches)]
    rows = []
    with simulator_process(rate_limit=RATE, api_key=key) as url, control(url) as ctl:
        for label, latency in latencies:
            row = [label]
            for _name, run in approaches:
                forget_pacers()  # every cell starts with a fresh pacer
                # A send may be answered 429 and go again (up to 4 times each): each attempt its delay.
                prepare(ctl, latency, size * 4)
                run(url, str(work / f"ledger-{time.time_ns()}"))
                result = seen(ctl)
                cell = f"{result.ratio():.3f} ({result.refused_share:.1%}, {result.duplicates} dup"
                unsent = size - result.recipients
                row.append(cell + (f"; {unsent} not sent)" if unsent else ")"))
            rows.append(row)
            print("  " + " | ".join(row), flush=True)
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |", flush=True)


def memory_child(url: str, key: str, size: int, work: str) -> None:
    import threading

    recipients = segment(Path(work) / f"memory-{size}.jsonl", size)
    from airflow_provider_autocalls.operators.autocalls import BulkSendTemplateOperator  # noqa: F401 - loaded first

    def rss_mb() -> float:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    # Peak RSS while sending, sampled: the process's lifetime peak is set by Airflow's imports.
    before, peak, stop = rss_mb(), [0.0], threading.Event()

    def sample() -> None:
        while not stop.wait(0.02):
            peak[0] = max(peak[0], rss_mb())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    summary = run_bulk(url, key, 1_000_000, recipients, work)
    stop.set()
    sampler.join()
    print(
        json.dumps(
            {
                "size": size,
                "sent": summary["sent"],
                "peak_mb": max(peak[0], rss_mb()),
                "before_mb": before,
                "lifetime_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "s": summary["elapsed_s"],
            }
        )
    )


def memory_case(work: Path) -> None:
    from airflow_provider_autocalls.testing.process import simulator_process

    with simulator_process(rate_limit=0) as url:
        peaks = {}
        for size in (1_000, 2_000 if QUICK else 100_000):
            out = subprocess.run(
                [sys.executable, __file__, "--memory-child", url, "sim-key", str(size), str(work)],
                capture_output=True,
                text=True,
                check=True,
                timeout=1800,
            ).stdout
            result = json.loads(out.strip().splitlines()[-1])
            peaks[size] = result["peak_mb"]
            print(
                f"bulk memory: {size:,} rows: peak RSS while sending {result['peak_mb']:.1f} MB "
                f"(before {result['before_mb']:.1f} MB; {result['sent']:,} sent in {result['s']:.0f} s)",
                flush=True,
            )
        small, large = sorted(peaks)
        difference = peaks[large] - peaks[small]
        print(f"bulk memory: {large:,} vs {small:,} rows: +{difference:.1f} MB (goal < 20 MB)", flush=True)


def main() -> None:
    if sys.argv[1:2] == ["--memory-child"]:
        memory_child(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])
        return
    with tempfile.TemporaryDirectory(prefix="autocalls-bench-") as tmp:
        work = Path(tmp)
        scale = 40 if QUICK else 1
        rate_case(1_000 // scale, 5.0, work)
        rate_case(5_000 // scale, 50.0, work)
        if QUICK:
            latency_case(8, [LATENCIES[2]], work)
        else:
            latency_case(40, LATENCIES, work)
        memory_case(work)


if __name__ == "__main__":
    main()
