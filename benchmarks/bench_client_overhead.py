"""
Client overhead: N template sends (template 46, distinct phones, sequential) through the hook vs
a plain ``httpx.Client`` loop posting the same JSON, both paced evenly at 500 req/s against a
simulator (a separate process, so client and server don't share a GIL) that allows 500 req/s.
Prints both rates, the ratio hook/raw (goal: >= 0.9) and each run's 429 count.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from airflow_provider_autocalls.testing.process import simulator_process

SENDS = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
RATE = 500.0
BODY = {"sender_id": 12, "template_id": 46}


@contextmanager
def simulator(api_key: str) -> Iterator[str]:
    """A simulator process limited to RATE; yields its base URL and always stops it."""
    with simulator_process(rate_limit=RATE, api_key=api_key) as url:
        yield url


def state(url: str) -> dict[str, Any]:
    import httpx

    answer: dict[str, Any] = httpx.get(url.removesuffix("/api") + "/_sim/state", timeout=10).json()
    return answer


def reset(url: str) -> None:
    import httpx

    httpx.post(url.removesuffix("/api") + "/_sim/reset", timeout=10).raise_for_status()


def timed(send: Callable[[str], Any]) -> tuple[float, float]:
    """Run ``send`` for SENDS distinct phones (bounded by a deadline): sends/s and CPU ms per send."""
    deadline = time.monotonic() + 30 + 10 * SENDS / RATE
    started, cpu = time.perf_counter(), time.process_time()
    done = 0
    for i in range(SENDS):
        send(f"+1415{i:07d}")
        done += 1
        if time.monotonic() > deadline:
            print(f"client overhead: stopped at the deadline after {done} sends")
            break
    return done / (time.perf_counter() - started), 1000 * (time.process_time() - cpu) / max(done, 1)


def raw_run(url: str, api_key: str) -> tuple[tuple[float, float], int]:
    import httpx

    headers = {"Authorization": f"Bearer {api_key}", "Accept": "application/json"}
    refused = 0
    with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
        client.get(
            "/user/whatsapp/session-status", params={"sender_id": 12, "recipient_phone": "+14155550100"}
        )
        reset(url)
        next_slot = 0.0

        def send(phone: str) -> None:
            nonlocal next_slot, refused
            now = time.monotonic()  # the same even spacing as the hook's pacer: no catching up
            slot = max(now, next_slot)
            next_slot = slot + 1 / RATE
            if slot > now:
                time.sleep(slot - now)
            status = client.post("/user/whatsapp/send", json={**BODY, "recipient_phone": phone}).status_code
            refused += status == 429
            if status not in (200, 429):
                raise RuntimeError(f"raw send answered {status}")

        return timed(send), refused


def hook_run(url: str, api_key: str) -> tuple[float, float]:
    from airflow_provider_autocalls.hooks.autocalls import AutocallsHook

    os.environ["AIRFLOW_CONN_AUTOCALLS_DEFAULT"] = json.dumps(
        {"conn_type": "autocalls", "host": url, "password": api_key, "extra": {"rate_limit": RATE}}
    )
    hook = AutocallsHook()
    try:
        hook.get_session_status(12, "+14155550100")  # builds the client and imports what it needs
        reset(url)
        return timed(lambda phone: hook.send_template(12, 46, phone))
    finally:
        hook.close()


def main() -> None:
    with simulator("raw-key") as url:
        (raw_rate, raw_cpu), raw_429 = raw_run(url, "raw-key")
        raw_sim_429 = state(url)["rate_limited"]
    with simulator("hook-key") as url:
        hook_rate, hook_cpu = hook_run(url, "hook-key")
        hook_sim_429 = state(url)["rate_limited"]
    print(f"client overhead: {SENDS} template sends each, paced at {RATE:g}/s against a {RATE:g}/s limit")
    print(
        f"client overhead: raw httpx {raw_rate:.1f} sends/s, {raw_cpu:.2f} ms CPU/send "
        f"(429s: {raw_sim_429}, seen by client: {raw_429})"
    )
    print(
        f"client overhead: hook      {hook_rate:.1f} sends/s, {hook_cpu:.2f} ms CPU/send (429s: {hook_sim_429})"
    )
    print(f"client overhead: hook/raw = {hook_rate / raw_rate:.3f} (goal >= 0.9)")


if __name__ == "__main__":
    main()
