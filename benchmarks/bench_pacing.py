"""
Pacing at the API's limit whatever the latency of a send.

The simulator runs in its own process with its strict sliding one-second window (5 requests/s)
and answers each send after a delay (the API counted the request when it arrived; it is slow to
answer, as the real one is while WhatsApp's provider accepts the message). For each latency,
recipients are sent four ways:

- **old rule, 1 in flight**: the hook with the previous pacer's rule (kept below as the baseline:
  a request occupies the window from departure until one second after its answer), one send at a
  time, as the bulk operator did;
- **old rule, K in flight**: the same rule with K sends at once: capped at ``rate / (1 + latency)``,
  as the latency holds each request in the window;
- **new pacer, 1 in flight**: the hook as it is, one send at a time;
- **new pacer, K in flight**: the hook as it is, called from K threads at once;
- **sleep loop**: what a user might write instead, httpx and ``time.sleep(1 / rate)``, resending
  after a 429's ``Retry-After``.

Each cell is the rate of accepted sends as the simulator saw them arrive, as a share of the limit
(goal for the new pacer with K in flight: >= 0.95), and in brackets the share of sends answered 429
(goal <= 0.5 %).

Usage: ``bench_pacing.py [N] [--quick]``: N recipients per cell with K in flight (default 60; a
third of that, at least 6, one at a time); ``--quick`` runs only 0 and 0.5 s latencies.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
from _sim_control import LATENCIES, RATE, SEND, Seen, control, prepare, seen, sleep_loop, template_send

QUICK = "--quick" in sys.argv
_args = [a for a in sys.argv[1:] if not a.startswith("--")]
N = int(_args[0]) if _args else 60
N_SERIAL = max(6, N // 3)
IN_FLIGHT = 16  # enough for 5/s at 2 s latency (10 in flight) with room for jitter
if QUICK:
    LATENCIES = [LATENCIES[0], LATENCIES[2]]
os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "ERROR")


class OldWindowGate:
    """
    The previous pacer's rule, the baseline: departures 1/rate apart, and a request leaves only
    while fewer than floor(rate) requests are in flight or were answered within the last second.
    """

    def __init__(self, rate: float) -> None:
        self._lock = threading.Lock()
        self._interval = 1 / rate
        self._capacity = max(1, math.floor(rate))
        self._last = -math.inf
        self._hold_until = 0.0
        self._in_flight = 0
        self._answered: deque[float] = deque()

    @contextlib.contextmanager
    def permit(self, kind: str = "request") -> Iterator[None]:
        while True:
            with self._lock:
                now = time.monotonic()
                while self._answered and self._answered[0] <= now - 1:
                    self._answered.popleft()
                wait = max(self._last + self._interval - now, self._hold_until - now)
                if self._in_flight + len(self._answered) >= self._capacity:
                    wait = max(wait, self._answered[0] + 1 - now if self._answered else 0.005)
                if wait <= 0:
                    self._last = now
                    self._in_flight += 1
                    break
            time.sleep(wait)
        try:
            yield
        finally:
            with self._lock:
                self._in_flight -= 1
                self._answered.append(time.monotonic())

    def hold_off(self, seconds: float) -> None:
        with self._lock:
            self._hold_until = max(self._hold_until, time.monotonic() + seconds)


def through_hook(url: str, sends: int, in_flight: int, old_rule: bool, offset: int) -> None:
    from airflow_provider_autocalls.hooks._pacing import forget_pacers
    from airflow_provider_autocalls.hooks.autocalls import AutocallsHook

    os.environ["AIRFLOW_CONN_AUTOCALLS_DEFAULT"] = json.dumps(
        {
            "conn_type": "autocalls",
            "host": url,
            "password": "sim-key",
            "extra": {"rate_limit": RATE, "max_retries": 5},
        }
    )
    forget_pacers()  # every cell starts with a fresh pacer
    baseline = OldWindowGate(RATE)
    local = threading.local()

    def send(n: int) -> None:
        hook = getattr(local, "hook", None)
        if hook is None:
            hook = local.hook = AutocallsHook()
            if old_rule:
                hook.__dict__["pacer"] = baseline
        body = template_send(n)
        hook.send_template(12, 45, body["recipient_phone"], variables=body["variables"])

    with ThreadPoolExecutor(in_flight) as pool:
        list(pool.map(send, range(offset, offset + sends)))


def httpx_sleep_loop(url: str, sends: int, offset: int) -> None:
    """The sleep loop with httpx: a send answered 429 goes again after its ``Retry-After``."""
    with httpx.Client(base_url=url, headers={"Authorization": "Bearer sim-key"}, timeout=30) as client:

        def send(n: int) -> None:
            while (answer := client.post(SEND, json=template_send(n))).status_code == 429:
                time.sleep(float(answer.headers.get("Retry-After", "1")))

        sleep_loop(send, sends, offset)


def cell(ctl: httpx.Client, latency: float | tuple[float, float], sends: int, run: Any) -> Seen:
    prepare(ctl, latency, sends * 2)  # room for resends after a 429
    run()
    return seen(ctl)


def main() -> None:
    from airflow_provider_autocalls.testing.process import simulator_process

    print(
        f"pacing: {N} recipients with {IN_FLIGHT} in flight, {N_SERIAL} one at a time, at a {RATE:g}/s "
        "strict sliding window; achieved / limit (share of sends answered 429)",
        flush=True,
    )
    header = ["send latency", "old rule, 1 in flight", f"old rule, {IN_FLIGHT} in flight"]
    header += ["new pacer, 1 in flight", f"new pacer, {IN_FLIGHT} in flight"]
    header.append("sleep(1/rate) loop")
    rows = []
    with simulator_process(rate_limit=RATE) as url, control(url) as ctl:
        offset = 0
        for label, latency in LATENCIES:
            runs = [
                (N_SERIAL, lambda o: through_hook(url, N_SERIAL, 1, True, o)),
                (N, lambda o: through_hook(url, N, IN_FLIGHT, True, o)),
                (N_SERIAL, lambda o: through_hook(url, N_SERIAL, 1, False, o)),
                (N, lambda o: through_hook(url, N, IN_FLIGHT, False, o)),
                (N_SERIAL, lambda o: httpx_sleep_loop(url, N_SERIAL, o)),
            ]
            row = [label]
            for sends, run in runs:
                result = cell(ctl, latency, sends, lambda run=run, o=offset: run(o))
                row.append(f"{result.ratio():.3f} ({result.refused_share:.1%})")
                offset += sends
            rows.append(row)
            print("  " + " | ".join(row), flush=True)
    print()
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
