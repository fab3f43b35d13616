"""
Client-side pacing: one limiter per (base URL, API key) per process.

The API allows 5 requests/s per user and does not document its limiter, so the client assumes the
strictest reading, a sliding one-second window, and keeps to it with two rules:

- **Even spacing.** Requests leave at least ``1 / rate`` seconds apart, never in bursts. Callers
  take numbered slots first, so they go in order.
- **A window gate.** A request leaves only while fewer than ``rate`` requests are in flight or
  were answered within the last second. A request answered at time *t* reached the API by *t*, so
  the API never sees more than ``rate`` requests in one second. This holds even when a busy event
  loop or a slow thread delays some requests and not others, which spacing alone cannot promise.

Every hook of the process, and every trigger of a triggerer (they share its event loop), draws
from the same :class:`Pacer`: many callers slow down together instead of pushing the API past its
limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator
from typing import Final

# How often a caller held by the gate looks again while every request is still in flight.
_IN_FLIGHT_POLL: Final = 0.005


class Pacer:
    """
    Hands out send permits under the rate limit; safe across threads and asyncio tasks.

    Use ``with pacer.permit():`` around a request in a thread, ``async with pacer.async_permit():``
    on an event loop. The lock is never held while waiting.

    :param rate: requests per second; ``0`` turns pacing off.
    """

    def __init__(self, rate: float) -> None:
        self._lock = threading.Lock()
        self._next_slot = 0.0
        self._last_release = -math.inf
        self._hold_until = 0.0
        self._in_flight = 0
        self._waiting = 0
        self._answered: deque[float] = deque()
        self.rate = rate

    @property
    def rate(self) -> float:
        return self._rate

    @rate.setter
    def rate(self, rate: float) -> None:
        with self._lock:
            self._rate = rate
            self._interval = 1.0 / rate if rate > 0 else 0.0
            # Below 1 request/s the window that holds one request is longer than a second.
            self._capacity = max(1, math.floor(rate))
            self._window = max(1.0, 1.0 / rate) if rate > 0 else 0.0

    def reserve(self) -> float:
        """Take the next slot in line; return how many seconds from now it starts."""
        with self._lock:
            now = time.monotonic()
            # Callers that gave up (a cancelled trigger) leave their slots behind; the queue of
            # live callers never reaches further than one interval each.
            horizon = max(now, self._last_release) + self._waiting * self._interval
            slot = max(now, min(self._next_slot, horizon), self._hold_until)
            self._next_slot = slot + self._interval
            self._waiting += 1
            return slot - now

    def _release(self) -> float:
        """Let this request go (return 0) or say how long to wait before asking again."""
        with self._lock:
            if self._rate <= 0:
                return 0.0
            now = time.monotonic()
            while self._answered and self._answered[0] <= now - self._window:
                self._answered.popleft()
            wait = max(self._last_release + self._interval - now, self._hold_until - now)
            if self._in_flight + len(self._answered) >= self._capacity:
                # Every permit is in flight: look again after a while, not in a tight loop.
                poll = max(_IN_FLIGHT_POLL, self._interval / 4)
                wait = max(wait, self._answered[0] + self._window - now if self._answered else poll)
            if wait > 0:
                return wait
            self._last_release = now
            self._in_flight += 1
            self._waiting -= 1
            return 0.0

    def _give_up(self) -> None:
        with self._lock:
            self._waiting -= 1

    def _done(self) -> None:
        with self._lock:
            if self._rate > 0:
                self._in_flight -= 1
                self._answered.append(time.monotonic())

    def hold_off(self, seconds: float) -> None:
        """Let no request go for ``seconds`` from now (the API answered 429 with ``Retry-After``)."""
        with self._lock:
            until = time.monotonic() + seconds
            self._hold_until = max(self._hold_until, until)
            self._next_slot = max(self._next_slot, until)

    @contextlib.contextmanager
    def permit(self) -> Iterator[None]:
        """Block until this request may go; count it as in flight until the block ends."""
        delay = self.reserve()
        try:
            while True:
                if delay > 0:
                    time.sleep(delay)
                delay = self._release()
                if delay <= 0:
                    break
        except BaseException:
            self._give_up()
            raise
        try:
            yield
        finally:
            self._done()

    @contextlib.asynccontextmanager
    async def async_permit(self) -> AsyncIterator[None]:
        """Wait, without blocking the event loop, until this request may go; count it while in flight."""
        delay = self.reserve()
        try:
            while True:
                if delay > 0:
                    await asyncio.sleep(delay)
                delay = self._release()
                if delay <= 0:
                    break
        except BaseException:  # cancelled while waiting: the slot is given back
            self._give_up()
            raise
        try:
            yield
        finally:
            self._done()


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
