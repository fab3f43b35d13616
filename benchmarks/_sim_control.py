"""Helpers the pacing benchmarks share: script a simulator process and read what it saw."""

from __future__ import annotations

import bisect
import json
import math
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

SEND = "/user/whatsapp/send"
PHONE_BASE = 14155550000
RATE = 5.0
#: The send latencies the pacing benchmarks compare: fixed, and drawn from a range.
LATENCIES: list[tuple[str, float | tuple[float, float]]] = [
    ("0 s", 0.0),
    ("0.2 s", 0.2),
    ("0.5 s", 0.5),
    ("1.0 s", 1.0),
    ("2.0 s", 2.0),
    ("0.2-1.5 s", (0.2, 1.5)),
]


def template_send(n: int) -> dict[str, Any]:
    """The body of the ``n``-th recipient's send (template 45 of sender 12 takes three variables)."""
    return {
        "sender_id": 12,
        "template_id": 45,
        "recipient_phone": f"+{PHONE_BASE + n}",
        "variables": {"1": "Ada", "date": "1 May", "3": "9"},
    }


def connection(url: str, key: str, rate: float = RATE) -> str:
    """``AIRFLOW_CONN_AUTOCALLS_DEFAULT`` for the simulator at ``url``."""
    return json.dumps({"conn_type": "autocalls", "host": url, "password": key, "extra": {"rate_limit": rate}})


def control(url: str) -> httpx.Client:
    return httpx.Client(base_url=url.removesuffix("/api"), timeout=30)


def prepare(ctl: httpx.Client, latency: float | tuple[float, float], sends: int, seed: int = 7) -> None:
    """Reset the simulator and make each of the next ``sends`` answers take ``latency`` seconds
    (a fixed value, or drawn uniformly from a ``(low, high)`` range, seeded). The delay is the API
    being slow to answer: the request was counted by the limiter when it arrived."""
    ctl.post("/_sim/reset").raise_for_status()
    if isinstance(latency, float | int):
        if latency:
            fault = {"endpoint": "send_template", "delay": latency, "count": sends}
            ctl.post("/_sim/faults", json=fault).raise_for_status()
        return
    draw = random.Random(seed)
    for _ in range(sends):
        delay = draw.uniform(*latency)
        ctl.post("/_sim/faults", json={"endpoint": "send_template", "delay": delay}).raise_for_status()


@dataclass
class Seen:
    """What the simulator saw of the sends."""

    accepted: int
    refused: int  # answers of 429
    achieved: float  # accepted sends per second over the span of their arrivals
    peak: int  # most sends arriving within any one second
    duplicates: int = 0  # accepted sends to a recipient beyond its first
    recipients: int = 0  # recipients with an accepted send

    def ratio(self, rate: float = RATE) -> float:
        return self.achieved / rate

    @property
    def refused_share(self) -> float:
        total = self.accepted + self.refused
        return self.refused / total if total else 0.0


def seen(ctl: httpx.Client, rate: float = RATE) -> Seen:
    """What the simulator saw of the sends since its last reset, at its limit of ``rate`` per second."""
    records = [r for r in ctl.get("/_sim/requests").json()["requests"] if r["endpoint"] == "send_template"]
    accepted = sorted(r["arrived"] for r in records if r["status"] == 200)
    refused = sum(r["status"] == 429 for r in records)
    # The window lets its first floor(rate) requests through at once, so the rate is taken from
    # the end of the first window's worth to the last arrival: for evenly spaced arrivals this is
    # (n - 1) / span, and a burst at the start cannot lift it above the limit.
    first = min(math.floor(rate), len(accepted)) - 1
    span = accepted[-1] - accepted[first] if len(accepted) > first + 1 else 0.0
    achieved = (len(accepted) - 1 - first) / span if span > 0 else 0.0
    arrived = sorted(r["arrived"] for r in records)
    peak = max((i + 1 - bisect.bisect_right(arrived, x - 1) for i, x in enumerate(arrived)), default=0)
    per_recipient = Counter(r["json"]["recipient_phone"] for r in records if r["status"] == 200)
    duplicates = sum(count - 1 for count in per_recipient.values())
    return Seen(len(accepted), refused, achieved, peak, duplicates, len(per_recipient))


def sleep_loop(send: Callable[[int], object], sends: int, offset: int = 0, rate: float = RATE) -> None:
    """What a user might write instead of a pacer: send the ``n``-th message, ``time.sleep(1 / rate)``, next."""
    for n in range(offset, offset + sends):
        send(n)
        time.sleep(1 / rate)
