"""
Bulk sending: rate against the limit, and memory against the number of recipients.

1. rate: 1,000 recipients at the simulator's 5 req/s limit, and 5,000 at 50 req/s, through
   BulkSendTemplateOperator. Achieved rate / limit (goal >= 0.95) and the simulator's 429 count
   (goal 0). ``--quick`` sends a tenth of that.
2. memory: peak RSS of a bulk send from a 100,000-row file against one from a 1,000-row file, each
   in a fresh process, the simulator in another (goal: the difference under 20 MB).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

QUICK = "--quick" in sys.argv
# The figures are the output; the operator's progress lines would drown them.
os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")


def run_bulk(
    url: str, key: str, rate: float, recipients_file: str, ledger: str, max_in_flight: int | None = None
) -> dict[str, Any]:
    os.environ["AIRFLOW_CONN_AUTOCALLS_DEFAULT"] = json.dumps(
        {"conn_type": "autocalls", "host": url, "password": key, "extra": {"rate_limit": rate}}
    )
    from airflow_provider_autocalls.operators.autocalls import BulkSendTemplateOperator

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
    from datetime import datetime

    from airflow_provider_autocalls.testing import AutocallsSimulator

    with AutocallsSimulator(rate_limit=limit) as sim:
        summary = run_bulk(sim.url, sim.api_key, limit, segment(work / f"rate-{size}.jsonl", size), str(work))
        times = [
            datetime.fromisoformat(r["at"]).timestamp()
            for r in sim.requests
            if r["endpoint"] == "send_template"
        ]
        achieved = (len(times) - 1) / (times[-1] - times[0])
        print(
            f"bulk rate: {summary['sent']}/{size} sent at a {limit:g}/s limit: {achieved:.3f} msg/s = "
            f"{achieved / limit:.3f} of the limit (goal >= 0.95); 429s: {sim.rate_limited_count} (goal 0)",
            flush=True,
        )


def latency_case(size: int, work: Path) -> None:
    """The operator at the API's 5/s, one send in flight (the first wave's way) against its pipeline."""
    import random
    from datetime import datetime

    from airflow_provider_autocalls.testing import AutocallsSimulator, Fault

    limit = 5.0
    print(f"bulk latency: {size} recipients at {limit:g}/s; achieved / limit (429s)", flush=True)
    print("| send latency | one in flight | max_in_flight default |", flush=True)
    print("|---|---|---|", flush=True)
    for latency in (0.0, 0.2, 0.5, 1.0, 2.0, "0.2-1.5"):
        cells = []
        for in_flight in (1, None):
            draw = random.Random(7)
            with AutocallsSimulator(rate_limit=limit) as sim:
                for _ in range(size):
                    delay = draw.uniform(0.2, 1.5) if isinstance(latency, str) else latency
                    if delay:
                        sim.inject(Fault(endpoint="send_template", delay=delay))
                file = segment(work / f"latency-{size}.jsonl", size)
                run_bulk(sim.url, sim.api_key, limit, file, str(work / f"l{time.time_ns()}"), in_flight)
                # The rate the API saw: requests as they arrived, first to last.
                times = sorted(
                    datetime.fromisoformat(r["at"]).timestamp()
                    for r in sim.requests
                    if r["endpoint"] == "send_template"
                )
                achieved = (len(times) - 1) / (times[-1] - times[0])
                cells.append(f"{achieved / limit:.2f} ({sim.rate_limited_count})")
        label = f"{latency} s" if isinstance(latency, str) else f"{latency:g} s"
        print(f"| {label} | {cells[0]} | {cells[1]} |", flush=True)


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
        for size in (1_000, 10_000 if QUICK else 100_000):
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
        scale = 10 if QUICK else 1
        rate_case(1_000 // scale, 5.0, work)
        rate_case(5_000 // scale, 50.0, work)
        latency_case(8 if QUICK else 40, work)
        memory_case(work)


if __name__ == "__main__":
    main()
