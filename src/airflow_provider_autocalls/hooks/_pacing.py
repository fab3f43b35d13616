"""
Client-side pacing: one evenly spaced limiter per (base URL, API key) per process.

The API allows 5 requests/s per user and does not document its limiter, so requests are spaced at
least ``1 / rate`` apart (no bursts) instead of mirroring a token bucket. Every hook of the process,
and every trigger of a triggerer (they share its event loop), draws slots from the same
:class:`Pacer`, so many callers slow down together instead of pushing the API past its limit.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from typing import Final

# Slots are spaced this much wider than 1/rate: arrival times on the server jitter by a few
# milliseconds, and a strict sliding window would count a squeezed pair as one request too many.
HEADROOM: Final = 1.01


class Pacer:
    """
    Hands out evenly spaced send slots; safe across threads and asyncio tasks.

    A caller reserves the next free slot under a lock (never held while waiting), then sleeps
    until it: ``time.sleep`` in a task, ``asyncio.sleep`` in a trigger.

    :param rate: requests per second; ``0`` turns pacing off.
    """

    def __init__(self, rate: float) -> None:
        self._lock = threading.Lock()
        self._next_free = 0.0
        self.rate = rate

    @property
    def rate(self) -> float:
        return self._rate

    @rate.setter
    def rate(self, rate: float) -> None:
        with self._lock:
            self._rate = rate
            self._interval = HEADROOM / rate if rate > 0 else 0.0

    def reserve(self) -> float:
        """Claim the next slot and return how many seconds from now it starts."""
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next_free)
            self._next_free = slot + self._interval
            return slot - now

    def hold_off(self, seconds: float) -> None:
        """Give out no slot for ``seconds`` from now (the API answered 429 with ``Retry-After``)."""
        with self._lock:
            self._next_free = max(self._next_free, time.monotonic() + seconds)

    def wait(self) -> None:
        """Block until this caller's slot."""
        delay = self.reserve()
        if delay > 0:
            time.sleep(delay)

    async def async_wait(self) -> None:
        """Wait for this caller's slot without blocking the event loop."""
        delay = self.reserve()
        if delay > 0:
            await asyncio.sleep(delay)


_pacers: dict[tuple[str, str], Pacer] = {}
_pacers_lock = threading.Lock()


def pacer_for(base_url: str, api_key: str, rate: float) -> Pacer:
    """
    Return the process-wide pacer of a (base URL, API key) pair.

    The key is kept only as a digest. When two connections share a key but disagree on the rate,
    the lower rate wins: the API's limit is per user, whichever connection is used.
    """
    key = (base_url, hashlib.sha256(api_key.encode()).hexdigest())
    with _pacers_lock:
        pacer = _pacers.get(key)
        if pacer is None:
            pacer = _pacers[key] = Pacer(rate)
        elif _slower(rate, pacer.rate):
            pacer.rate = rate
        return pacer


def _slower(rate: float, than: float) -> bool:
    if rate <= 0:
        return False
    return than <= 0 or rate < than
