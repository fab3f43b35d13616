"""
Triggerer: 1,000 ``SessionOpenTrigger``s on one event loop (as in a triggerer), polling every second
against a simulator (a separate process) that allows 5 req/s, for a bounded time (default 30 s),
then cancelled. A few customers write in near the end, so some triggers finish with an event.
Prints the requests per 1-second bucket the simulator saw (goal: max <= 5), its 429 count (goal: 0)
and the memory per trigger, RSS and tracemalloc, against the same loop with 0 triggers (goal <= 30 KB).
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import json
import os
import resource
import sys
import time
import tracemalloc
from datetime import datetime
from typing import Any

import httpx

from airflow_provider_autocalls.testing.process import simulator_process

DURATION = float(sys.argv[1]) if len(sys.argv) > 1 else 30.0
TRIGGERS, RATE, KEY, SETTLE, OPENED = 1000, 5.0, "triggerer-key", 3.0, 10


def phone(i: int) -> str:
    return f"+1415{i:07d}"


def memory() -> tuple[int, int]:
    """(RSS without tracemalloc's own bookkeeping, bytes traced by tracemalloc)."""
    with open("/proc/self/statm") as statm:
        rss = int(statm.read().split()[1]) * resource.getpagesize()
    return rss - tracemalloc.get_tracemalloc_memory(), tracemalloc.get_traced_memory()[0]


def control(root: str, method: str, name: str, body: dict[str, Any] | None = None) -> Any:
    answer = httpx.request(method, f"{root}/_sim/{name}", json=body, timeout=10)
    answer.raise_for_status()
    return answer.json()


async def drive(trigger: Any, events: list[dict[str, Any]]) -> None:
    async for event in trigger.run():
        events.append(event.payload)
        return


async def bench(root: str) -> dict[str, Any]:
    from airflow_provider_autocalls.hooks.autocalls import AutocallsHook
    from airflow_provider_autocalls.triggers.autocalls import SessionOpenTrigger

    await AutocallsHook().async_get_session_status(12, phone(TRIGGERS))  # loads the client, reads the conn
    await asyncio.to_thread(control, root, "POST", "reset")
    await asyncio.sleep(1)  # let the warm-up request leave the server's 1 s window
    base0 = memory()
    await asyncio.sleep(SETTLE)  # the baseline: the same loop, the same wait, 0 triggers
    base1 = memory()

    started = time.monotonic()
    events: list[dict[str, Any]] = []
    triggers = [
        SessionOpenTrigger(sender_id=12, recipient_phone=phone(i), poke_interval=1.0) for i in range(TRIGGERS)
    ]
    tasks = [asyncio.create_task(drive(t, events)) for t in triggers]
    await asyncio.sleep(SETTLE)  # every run() has started its first poll (most wait for a slot)
    loaded = memory()
    tracemalloc.stop()  # it slows every allocation; the rest of the run goes at normal speed

    await asyncio.sleep(max(0.0, started + DURATION - 5 - time.monotonic()))
    # Customers write in: the next few recipients that were not polled yet, in the pacer's order.
    polled = {
        r["query"].get("recipient_phone")
        for r in (await asyncio.to_thread(control, root, "GET", "requests"))["requests"]
    }
    opened = [phone(i) for i in range(TRIGGERS) if phone(i) not in polled][2 : 2 + OPENED]
    for number in opened:
        await asyncio.to_thread(
            control, root, "POST", "inbound", {"sender_id": 12, "recipient_phone": number}
        )
    await asyncio.sleep(max(0.0, started + DURATION - time.monotonic()))
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    ran = time.monotonic() - started
    return {"memory": (base0, base1, loaded), "events": events, "opened": opened, "ran": ran}


def main() -> None:
    with simulator_process(rate_limit=RATE, api_key=KEY) as url:
        root = url.removesuffix("/api")
        os.environ["AIRFLOW_CONN_AUTOCALLS_DEFAULT"] = json.dumps(
            {"conn_type": "autocalls", "host": url, "password": KEY, "extra": {"rate_limit": RATE}}
        )
        tracemalloc.start()
        result = asyncio.run(bench(root))
        requests = control(root, "GET", "requests")["requests"]
        refused = control(root, "GET", "state")["rate_limited"]

    arrivals = sorted(datetime.fromisoformat(r["at"]).timestamp() for r in requests)
    accepted = sorted(datetime.fromisoformat(r["at"]).timestamp() for r in requests if r["status"] != 429)
    buckets = collections.Counter(int(at) for at in arrivals)
    per_second = [buckets.get(s, 0) for s in range(min(buckets), max(buckets) + 1)] if buckets else [0]
    # What the server's strict sliding window counts: accepted arrivals in any (t - 1 s, t].
    sliding = max((i - bisect.bisect_right(accepted, t - 1.0) + 1 for i, t in enumerate(accepted)), default=0)
    (rss0, traced0), (rss1, traced1), (rss2, traced2) = result["memory"]
    base_rss, base_traced = rss1 - rss0, traced1 - traced0  # the 0-trigger loop over the same wait
    rss_per = (rss2 - rss1 - base_rss) / TRIGGERS / 1024
    traced_per = (traced2 - traced1 - base_traced) / TRIGGERS / 1024
    finished = sum(e.get("status") == "success" for e in result["events"])
    print(f"triggerer: {TRIGGERS} triggers, poke_interval 1 s, {RATE:g}/s limit, ran {result['ran']:.1f} s")
    print(
        f"triggerer: {len(requests)} requests = {len(requests) / result['ran']:.2f}/s; per 1-s bucket: "
        f"max {max(per_second)} (goal <= {RATE:g}), median {sorted(per_second)[len(per_second) // 2]}; "
        f"accepted ones in any sliding 1 s: max {sliding}"
    )
    print(f"triggerer: 429s: {refused} (goal 0)")
    print(
        f"triggerer: memory per trigger: RSS {rss_per:.1f} KB, tracemalloc {traced_per:.1f} KB (goal <= 30 KB); "
        f"0-trigger baseline: RSS {base_rss / 1024:+.0f} KB, tracemalloc {base_traced / 1024:+.0f} KB"
    )
    print(
        f"triggerer: windows opened near the end for {len(result['opened'])} recipients; "
        f"{finished} triggers finished with a success event, {len(result['events']) - finished} with an error"
    )


if __name__ == "__main__":
    main()
