"""
One API key, several worker processes: with and without the limit shared through Redis.

1, 2 and 5 processes (each a fresh Python, as Celery workers are) send M recipients each through
the hook with K sends in flight, all with one key, to the simulator in its own process (strict
sliding window, 5 requests/s; each send answered after 0.5 s). They start together. Printed per
run, as the simulator saw it: accepted sends per second against the limit (aggregate), answers of
429 (goal with the shared limit: <= 0.5 %), the most sends arriving within any one second (the
limit is 5), and the sends given up after every retry drew a 429 (max_retries 10).

The shared rows need ``redis-server`` (Debian package ``redis-server``); a local one is started on
a free port. Usage: ``bench_shared_limit.py [M] [--quick]`` (M per process, default 20; ``--quick``:
6, and only 1 and 2 processes).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

from _sim_control import RATE, control, prepare, seen, template_send

QUICK = "--quick" in sys.argv
WORKER = sys.argv[1:2] == ["--worker"]
_args = [] if WORKER else [a for a in sys.argv[1:] if not a.startswith("--")]
PER_PROCESS = int(_args[0]) if _args else (6 if QUICK else 20)
PROCESSES = [1, 2] if QUICK else [1, 2, 5]
IN_FLIGHT = 8
LATENCY = 0.5


def worker(url: str, sends: int, offset: int, backend: str) -> None:
    """One worker process: build the hook, say ready, wait for the go, send."""
    os.environ["AIRFLOW__LOGGING__LOGGING_LEVEL"] = "ERROR"
    os.environ["AIRFLOW_CONN_AUTOCALLS_DEFAULT"] = json.dumps(
        {
            "conn_type": "autocalls",
            "host": url,
            "password": "sim-key",
            "extra": {"rate_limit": RATE, "max_retries": 10, "rate_limit_backend": backend},
        }
    )
    from airflow_provider_autocalls.hooks.autocalls import AutocallsHook

    AutocallsHook().pacer  # noqa: B018 - the pacer (and its Redis bucket) before the start line
    local = threading.local()

    from airflow_provider_autocalls.exceptions import AutocallsError

    def send(n: int) -> bool:
        hook = getattr(local, "hook", None) or AutocallsHook()
        local.hook = hook
        body = template_send(n)
        try:
            hook.send_template(12, 45, body["recipient_phone"], variables=body["variables"])
        except AutocallsError:  # 429 after every retry: this recipient was not sent
            return False
        return True

    print("ready", flush=True)
    sys.stdin.readline()
    with ThreadPoolExecutor(IN_FLIGHT) as pool:
        failed = sum(not sent for sent in pool.map(send, range(offset, offset + sends)))
    print(json.dumps({"gave_up": failed}), flush=True)


def run(url: str, processes: int, backend: str) -> int:
    """Run the workers; return how many sends they gave up on (429 after every retry)."""
    children = [
        subprocess.Popen(
            [sys.executable, __file__, "--worker", url, str(PER_PROCESS), str(i * 1000), backend],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(processes)
    ]
    for child in children:
        assert child.stdout is not None
        if child.stdout.readline().strip() != "ready":
            raise RuntimeError("a worker process did not start")
    for child in children:  # everyone is imported and connected: start together
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.flush()
    gave_up = 0
    for child in children:
        assert child.stdout is not None
        lines = [line for line in child.stdout if line.startswith('{"gave_up"')]
        gave_up += json.loads(lines[-1])["gave_up"]
        if child.wait(timeout=600) != 0:
            raise RuntimeError("a worker process failed")
    return gave_up


def main() -> None:
    from airflow_provider_autocalls.testing.process import simulator_process
    from airflow_provider_autocalls.testing.redis import local_redis, redis_server_binary

    print(
        f"shared limit: N processes x {PER_PROCESS} sends, {IN_FLIGHT} in flight each, one key, "
        f"{LATENCY:g} s send latency, {RATE:g}/s strict window",
        flush=True,
    )
    header = ["processes", "limit", "achieved / limit", "429s", "most in one second", "given up"]
    rows = []
    with simulator_process(rate_limit=RATE) as url, control(url) as ctl:
        backends = [("in-process (default)", "local")]
        redis = None
        if redis_server_binary() is not None:
            redis = local_redis()
            backends.append(("shared (Redis)", redis.__enter__()))
        else:
            print("  (redis-server is not installed: the shared rows are skipped)")
        try:
            for label, backend in backends:
                for processes in PROCESSES:
                    total = processes * PER_PROCESS
                    prepare(ctl, LATENCY, total * 3)
                    gave_up = run(url, processes, backend)
                    result = seen(ctl)
                    assert result.accepted + gave_up == total, f"{result.accepted} + {gave_up} of {total}"
                    row = [
                        str(processes),
                        label,
                        f"{result.ratio():.3f}",
                        f"{result.refused}/{result.accepted + result.refused} ({result.refused_share:.1%})",
                        str(result.peak),
                        f"{gave_up}/{total}",
                    ]
                    rows.append(row)
                    print("  " + " | ".join(row), flush=True)
        finally:
            if redis is not None:
                redis.__exit__(None, None, None)
    print()
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    if WORKER:
        worker(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
    else:
        main()
