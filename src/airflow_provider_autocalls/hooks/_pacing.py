"""
Client-side pacing: one limiter per API key per process (and, if configured, one across processes).

**What the client assumes about the API's limiter.** The API allows ``rate`` requests per second
per account and does not document its limiter, so the client assumes the strictest reading: a
sliding one-second window of *arrivals*. A request is counted when it reaches the API, whatever
it then takes to answer; more than ``capacity = floor(rate)`` arrivals in any one second are
answered 429 with ``Retry-After``.

**What it assumes about the network.** Each request's one-way delay (from the permit to its
arrival at the API's limiter) lies in ``[d, d + margin]`` for some ``d``: the delays may be long,
but they vary between requests by at most ``margin`` (:data:`DEFAULT_MARGIN`, 40 ms). The time to
answer (the API's own latency, often hundreds of milliseconds for a send) is not constrained.

**The model.** A permit is a departure, and two rules decide when one may go:

- **Even spacing.** Departures are at least ``1 / rate`` s apart, in the order callers asked;
  never in bursts.
- **A window of departures.** A request leaves only while fewer than ``capacity`` departures
  happened in the last ``window + margin`` seconds (``window`` is one second, or ``1 / rate`` below
  one request per second).

**What it guarantees.** Arrivals in any one second ``(x - 1, x]`` left in
``(x - 1 - d - margin, x - d]``, a span of ``1 + margin`` seconds, which holds at most
``capacity`` departures: under the assumption above, the API never sees more than its limit.
The guarantee does not depend on how long answers take, so callers may keep many requests in
flight; latency no longer eats into the window (an earlier model counted a request until one
second after its answer, capping throughput at ``rate / (1 + latency)``). The cost is the margin:
sustained throughput is ``capacity / (1 + margin)``, 0.962 of the limit at 40 ms. A request
delayed by more than the margin (a stalled worker, a new TLS connection) can draw a 429; the
answer holds back every caller of the key for ``Retry-After`` and the request is retried (a 429
proves nothing was done).

Every hook of the process, and every trigger of a triggerer (they share its event loop), draws
from the same :class:`Pacer`, keyed by the API key alone: the API limits the account, not the URL
it was reached by, so ``http://127.0.0.1:8080`` and ``http://localhost:8080`` share one pacer. With a
shared backend (:mod:`._shared_limit`) each permit also takes a place in a Redis window that every
process using the key consults.
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

from airflow_provider_autocalls import metrics
from airflow_provider_autocalls.exceptions import AutocallsValidationError
from airflow_provider_autocalls.hooks._shared_limit import SharedWindow, require_limits

#: Bound on the variation of one-way delay between requests, in seconds (see the module's model).
DEFAULT_MARGIN: Final = 0.04


class Pacer:
    """
    Hands out send permits under the rate limit; safe across threads and asyncio tasks.

    Use ``with pacer.permit():`` around a request in a thread, ``async with pacer.async_permit():``
    on an event loop. The lock is never held while waiting.

    :param rate: requests per second; ``0`` turns pacing off.
    :param margin: the bound on the variation of one-way delay, in seconds.
    :param shared: a window shared with other processes, consulted after this process's own rules.
    """

    def __init__(
        self, rate: float, margin: float = DEFAULT_MARGIN, shared: SharedWindow | None = None
    ) -> None:
        self._lock = threading.Lock()
        self._margin = margin
        self._next_slot = 0.0
        self._last_release = -math.inf
        self._hold_until = 0.0
        self._in_flight = 0
        self._waiting = 0
        self._departures: deque[float] = deque()
        self.shared = shared
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
            self._window = (max(1.0, 1.0 / rate) if rate > 0 else 0.0) + self._margin
            if self.shared is not None:
                self.shared.capacity, self.shared.window = self._capacity, self._window

    @property
    def in_flight(self) -> int:
        """Requests holding a permit now."""
        return self._in_flight

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
                self._waiting -= 1
                self._in_flight += 1
                return 0.0
            now = time.monotonic()
            while self._departures and self._departures[0] <= now - self._window:
                self._departures.popleft()
            wait = max(self._last_release + self._interval - now, self._hold_until - now)
            if len(self._departures) >= self._capacity:
                # The window is full: the oldest departure leaves it at a known time.
                wait = max(wait, self._departures[0] + self._window - now)
            if wait > 0:
                return wait
            self._last_release = now
            self._departures.append(now)
            self._in_flight += 1
            self._waiting -= 1
            return 0.0

    def _give_up(self) -> None:
        with self._lock:
            self._waiting -= 1

    def _done(self) -> None:
        with self._lock:
            self._in_flight -= 1
            count = self._in_flight
        metrics.in_flight(count)

    def hold_off(self, seconds: float) -> None:
        """Let no request go for ``seconds`` from now (the API answered 429 with ``Retry-After``)."""
        with self._lock:
            until = time.monotonic() + seconds
            self._hold_until = max(self._hold_until, until)
            self._next_slot = max(self._next_slot, until)

    @contextlib.contextmanager
    def permit(self, kind: str = "request") -> Iterator[None]:
        """
        Block until this request may go; count it as in flight until the block ends.

        :param kind: ``read`` or ``send``, the tag of the request's metrics.
        """
        asked = time.monotonic()
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
            while self.shared is not None and (delay := self.shared.acquire()) > 0:
                time.sleep(delay)
        except BaseException:
            self._done()
            raise
        left = self._left(kind, asked)
        try:
            yield
        finally:
            self._done()
            metrics.request_latency(kind, time.monotonic() - left)

    @contextlib.asynccontextmanager
    async def async_permit(self, kind: str = "request") -> AsyncIterator[None]:
        """Wait, without blocking the event loop, until this request may go; count it while in flight."""
        asked = time.monotonic()
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
            while self.shared is not None and (delay := await self.shared.async_acquire()) > 0:
                await asyncio.sleep(delay)
        except BaseException:
            self._done()
            raise
        left = self._left(kind, asked)
        try:
            yield
        finally:
            self._done()
            metrics.request_latency(kind, time.monotonic() - left)

    def _left(self, kind: str, asked: float) -> float:
        now = time.monotonic()
        metrics.pacer_wait(kind, now - asked)
        metrics.in_flight(self._in_flight)
        return now


_pacers: dict[str, Pacer] = {}
_pacers_lock = threading.Lock()


def pacer_for(api_key: str, rate: float, backend: str | None = None) -> Pacer:
    """
    Return the process-wide pacer of an API key.

    The key is kept only as a digest. When two connections share a key but disagree on the rate,
    the lower rate wins: the API's limit is per account, whichever connection is used.

    :param api_key: the account's API key.
    :param rate: requests per second.
    :param backend: the shared backend's URI (see :func:`._shared_limit.configured_backend`), or
        ``None`` for this process alone.
    :raises AutocallsValidationError: if two connections of one key name different backends.
    """
    digest = hashlib.sha256(api_key.encode()).hexdigest()
    if backend is not None:
        require_limits()
    with _pacers_lock:
        pacer = _pacers.get(digest)
        if pacer is None:
            shared = SharedWindow(backend, api_key, 1, 1.0) if backend else None  # sized by the rate
            pacer = _pacers[digest] = Pacer(rate, shared=shared)
        else:
            current = pacer.shared.uri if pacer.shared is not None else None
            if current != backend:
                raise AutocallsValidationError(
                    "rate_limit_backend",
                    "two connections with the same API key name different rate-limit backends "
                    f"({'local' if current is None else 'a shared one'} and "
                    f"{'local' if backend is None else 'a shared one'}); one account has one limit, "
                    "so give them the same rate_limit_backend.",
                )
            if _slower(rate, pacer.rate):
                pacer.rate = rate
        return pacer


def forget_pacers() -> None:
    """Drop every pacer of the process (tests: a new simulator, the same key, a clean slate)."""
    with _pacers_lock:
        _pacers.clear()


def _slower(rate: float, than: float) -> bool:
    if rate <= 0:
        return False
    return than <= 0 or rate < than
