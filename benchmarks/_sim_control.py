"""Helpers the pacing benchmarks share: script a simulator process and read what it saw."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

import httpx

SEND = "/user/whatsapp/send"
PHONE_BASE = 14155550000
RATE = 5.0


def template_send(n: int) -> dict[str, Any]:
    """The body of the ``n``-th recipient's send (template 45 of sender 12 takes three variables)."""
    return {
        "sender_id": 12,
        "template_id": 45,
        "recipient_phone": f"+{PHONE_BASE + n}",
        "variables": {"1": "Ada", "date": "1 May", "3": "9"},
    }


def control(url: str) -> httpx.Client:
    return httpx.Client(base_url=url.removesuffix("/api"), timeout=30)


def prepare(ctl: httpx.Client, latency: float | tuple[float, float], sends: int, seed: int = 7) -> None:
    """Reset the simulator and make each of the next ``sends`` answers take ``latency`` seconds
    (a fixed value, or drawn uniformly from a ``(low, high)`` range, seeded). The delay is the API
    being slow to answer: the request was counted by the limiter when it arrived."""
    ctl.post("/_sim/reset").raise_for_status()
    draw = random.Random(seed)
    for _ in range(sends):
        delay = latency if isinstance(latency, float | int) else draw.uniform(*latency)
        if delay:
            ctl.post("/_sim/faults", json={"endpoint": "send_template", "delay": delay}).raise_for_status()


@dataclass
class Seen:
    """What the simulator saw of the sends."""

    accepted: int
    refused: int  # answers of 429
    achieved: float  # accepted sends per second over the span of their arrivals
    peak: int  # most sends arriving within any one second

    def ratio(self, rate: float = RATE) -> float:
        return self.achieved / rate

    @property
    def refused_share(self) -> float:
        total = self.accepted + self.refused
        return self.refused / total if total else 0.0


def seen(ctl: httpx.Client) -> Seen:
    records = [r for r in ctl.get("/_sim/requests").json()["requests"] if r["endpoint"] == "send_template"]
    accepted = sorted(r["arrived"] for r in records if r["status"] == 200)
    refused = sum(r["status"] == 429 for r in records)
    # The window lets its first floor(rate) requests through at once, so the rate is taken from
    # the end of the first window's worth to the last arrival: for evenly spaced arrivals this is
    # (n - 1) / span, and a burst at the start cannot lift it above the limit.
    first = min(math.floor(RATE), len(accepted)) - 1
    span = accepted[-1] - accepted[first] if len(accepted) > first + 1 else 0.0
    achieved = (len(accepted) - 1 - first) / span if span > 0 else 0.0
    arrived = sorted(r["arrived"] for r in records)
    peak = max((sum(1 for t in arrived if x - 1 < t <= x) for x in arrived), default=0)
    return Seen(len(accepted), refused, achieved, peak)
