"""
Reply watchers and sends on one API key: do the sends keep their share of the limit?

A simulator process allows ``RATE`` requests per second. In one event loop (as in a triggerer that
also runs notifiers, or a process whose sends share the key's pacer), a pool of senders sends
templates as fast as the pacer lets them, for ``DURATION`` seconds: first alone (the baseline),
then while one ``CustomerReplyTrigger`` watches 500 customers every second (it would like 500
reads per second). Prints the sends per second in both phases and their ratio (goal >= 0.80 with
the default ``poll_share`` of 0.2), the watcher's reads per second, and the simulator's 429 count
(goal 0).

Usage: ``python benchmarks/bench_reply_watchers.py [DURATION]`` (default 15 s per phase).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from typing import Any

from _sim_control import control, template_send

from airflow_provider_autocalls.testing.process import simulator_process

DURATION = float(sys.argv[1]) if len(sys.argv) > 1 else 15.0
RATE, KEY, WATCHED, SENDERS = 10.0, "watchers-key", 500, 20


async def send_for(seconds: float, first: int) -> int:
    """Send templates from ``SENDERS`` tasks until ``seconds`` have passed; return how many were sent."""
    from airflow_provider_autocalls.hooks.autocalls import AutocallsHook

    hook = AutocallsHook()
    sent = 0
    deadline = time.monotonic() + seconds
    counter = iter(range(first, first + 1_000_000))

    async def sender() -> None:
        nonlocal sent
        while time.monotonic() < deadline:
            body = template_send(next(counter))
            await hook.async_send_template(12, 45, body["recipient_phone"], variables=body["variables"])
            sent += 1

    await asyncio.gather(*(sender() for _ in range(SENDERS)))
    return sent


async def bench() -> dict[str, Any]:
    from airflow_provider_autocalls.triggers.autocalls import CustomerReplyTrigger

    alone = await send_for(DURATION, 0)
    await asyncio.sleep(1.5)  # the baseline's last sends leave the API's window

    watcher = CustomerReplyTrigger(
        sender_id=12, recipient_phones=[f"+1650{i:07d}" for i in range(WATCHED)], poll_interval=1
    )

    async def watch() -> None:
        async for _ in watcher.run():
            pass

    task = asyncio.create_task(watch())
    started = time.monotonic()
    watched = await send_for(DURATION, 1_000_000)
    ran = time.monotonic() - started
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return {"alone": alone, "watched": watched, "ran": ran}


def main() -> None:
    with simulator_process(rate_limit=RATE, api_key=KEY) as url:
        os.environ["AIRFLOW_CONN_AUTOCALLS_DEFAULT"] = json.dumps(
            {"conn_type": "autocalls", "host": url, "password": KEY, "extra": {"rate_limit": RATE}}
        )
        result = asyncio.run(bench())
        with control(url) as client:
            requests = client.get("/_sim/requests").json()["requests"]
            refused = client.get("/_sim/state").json()["rate_limited"]

    reads = sum(r["endpoint"] == "session_status" for r in requests)
    alone, watched = result["alone"] / DURATION, result["watched"] / result["ran"]
    print(f"reply watchers: {RATE:g}/s limit, {SENDERS} concurrent senders, {DURATION:g} s per phase")
    print(
        f"reply watchers: sends alone {alone:.2f}/s; with {WATCHED} customers watched every 1 s {watched:.2f}/s"
    )
    print(f"reply watchers: ratio {watched / alone:.3f} (goal >= 0.80 at the default poll_share 0.2)")
    print(
        f"reply watchers: watcher reads {reads / result['ran']:.2f}/s (budget {RATE * 0.2:g}/s); "
        f"429s: {refused} (goal 0)"
    )


if __name__ == "__main__":
    main()
