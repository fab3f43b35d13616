"""
A rate limit shared by every process and host that uses one API key, kept in Redis.

Selected by ``[autocalls] rate_limit_backend`` (e.g. ``redis://127.0.0.1:6379/0``) or, for one
connection, by its extra ``rate_limit_backend``; the connection's extra wins, so one connection can
use another Redis, or ``local`` to keep to the in-process limiter where the deployment shares one.

The window is ``pyrate-limiter``'s Redis bucket with its sliding-window log: an atomic Lua script
over a sorted set of timestamps (milliseconds, by the granting host's clock) that grants a request
only if fewer than ``capacity`` were granted in the last ``1 + margin`` seconds, and records it;
the same window as the pacer's own (see :mod:`._pacing`), now across processes. It runs after the
process's own pacer (even spacing), so it only settles contention between processes. Hosts'
clocks must agree to well within the margin (NTP keeps them within milliseconds).

The bucket stamps a request with its caller's clock, read before the script runs, and counts only
entries stamped up to that reading. Two callers that read their clocks in one order and reach
Redis in the other would both be granted the window's last place: the later one's entry is not
counted by the earlier one. So each caller reads its clock and runs the script while holding a
short Redis lock of the key (redis-py's ``Lock``): callers are granted in the order of their
stamps. The lock expires by itself if its holder dies. ``pyrate-limiter``
and ``redis`` are optional dependencies (the ``redis`` extra), imported only here, only when a
backend is configured.

If Redis cannot be reached, the request fails at once with :class:`AutocallsConnectionError`
(retryable; nothing was sent): a silent fall-back to a per-process limit would let many workers
push one account past its limit together.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import threading
from typing import Any, Final

from airflow_provider_autocalls.exceptions import AutocallsConnectionError, AutocallsValidationError

#: The value (of the setting or the extra) that means "this process's own limiter only".
LOCAL: Final = "local"
# Redis must answer fast or not at all: a send should not hang on an unreachable backend.
_REDIS_TIMEOUT: Final = 2.0
# How soon a refused request asks again when the window's reset time is not known.
_MIN_RETRY: Final = 0.005
# Refused requests wake at a random moment within this many seconds after the window frees a
# place, so that the processes waiting for it do not all queue for the turn lock at once.
_DESYNC: Final = 0.02
# The turn lock is held for one clock reading and one script (about a millisecond); it expires by
# itself after _TURN_TTL if its holder dies holding it, and a waiter polls it every _TURN_POLL.
_TURN_TTL: Final = 1.0
_TURN_POLL: Final = 0.001
# Every so many granted requests, entries that left the window are removed; a key idle this long
# (far longer than any window) expires.
_LEAK_EVERY: Final = 20
_KEEP_MS: Final = 60_000


def configured_backend(extra: str | None) -> str | None:
    """
    The shared backend's URI for a connection, or ``None`` for the in-process limiter.

    :param extra: the connection's ``rate_limit_backend`` extra; it wins over the configuration.
    """
    value = extra
    if value is None or not str(value).strip():
        from airflow.providers.common.compat.sdk import conf

        value = conf.get("autocalls", "rate_limit_backend", fallback="")
    value = str(value or "").strip()
    if not value or value.lower() == LOCAL:
        return None
    if not value.lower().startswith(("redis://", "rediss://", "redis+unix://")):
        raise AutocallsValidationError(
            "rate_limit_backend",
            f"{_without_password(value)!r} is not a Redis URI. Use redis://host:port/db, rediss://..., redis+unix://... "
            f"or {LOCAL!r} for the in-process limiter.",
        )
    return value


def _without_password(uri: str) -> str:
    scheme, sep, rest = uri.partition("://")
    if sep and "@" in rest:
        return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
    return uri


class SharedWindow:
    """
    One API key's window in Redis, usable from threads and from any event loop.

    :param uri: the Redis URI.
    :param api_key: the key; only its digest names the Redis entry.
    :param capacity: requests allowed in any ``window`` seconds, across every process.
    :param window: the window's length in seconds (one second plus the pacer's margin).
    """

    def __init__(self, uri: str, api_key: str, capacity: int, window: float) -> None:
        self.uri = uri
        self._name = "autocalls-rate:" + hashlib.sha256(api_key.encode()).hexdigest()
        self.capacity = capacity
        self.window = window
        self._puts = 0
        # One bucket on a thread-safe sync client; async clients are bound to the loop that made them.
        self._sync: Any = None
        self._sync_lock = threading.Lock()
        self._async: dict[asyncio.AbstractEventLoop, Any] = {}
        self._async_lock = threading.Lock()  # never held across I/O: an event loop may take it

    def _rates(self) -> list[Any]:
        from pyrate_limiter import Rate

        return [Rate(self.capacity, round(self.window * 1000))]

    def acquire(self) -> float:
        """Take a place in the shared window: return 0, or how long to wait before asking again."""
        from pyrate_limiter import RateItem
        from redis.exceptions import LockError, NoScriptError, RedisError

        try:
            with self._sync_lock:  # put() and waiting() read the bucket's last verdict
                for attempt in (1, 2):
                    bucket = self._sync_bucket()
                    bucket.rates = self._rates()
                    try:
                        with self._turn(bucket.redis):
                            item = RateItem(self._name, bucket.now())
                            granted = bucket.put(item)
                        if granted:
                            self._tidy(bucket, item.timestamp)
                            return 0.0
                        return _seconds(bucket.waiting(item))
                    except LockError:  # no turn within the Redis timeout: ask again shortly
                        return _seconds(0)
                    except NoScriptError:  # Redis restarted and forgot the script: load it again
                        self._sync = None
                        if attempt == 2:
                            raise
        except RedisError as exc:
            raise self._unreachable(exc) from None
        raise AssertionError("unreachable")  # pragma: no cover

    async def async_acquire(self) -> float:
        """:meth:`acquire` on an event loop, without blocking it."""
        from pyrate_limiter import RateItem
        from redis.exceptions import LockError, NoScriptError, RedisError

        try:
            for attempt in (1, 2):
                bucket = await self._async_bucket()
                bucket.rates = self._rates()
                try:
                    async with self._turn(bucket.redis):
                        item = RateItem(self._name, bucket.now())
                        granted = await bucket.put(item)
                        wait_ms = 0
                        if not granted:
                            # Nothing awaited between put() and waiting(): the verdict read is this call's own.
                            wait = bucket.waiting(item)
                            wait_ms = await wait if asyncio.iscoroutine(wait) else wait
                    if granted:
                        await self._async_tidy(bucket, item.timestamp)
                        return 0.0
                    return _seconds(wait_ms)
                except LockError:
                    return _seconds(0)
                except NoScriptError:
                    self._async.pop(asyncio.get_running_loop(), None)
                    if attempt == 2:
                        raise
        except RedisError as exc:
            raise self._unreachable(exc) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _sync_bucket(self) -> Any:
        if self._sync is None:
            import redis
            from pyrate_limiter import RedisBucket

            client = redis.Redis.from_url(self.uri, **_options())
            self._sync = RedisBucket.init(self._rates(), client, self._name)
        return self._sync

    async def _async_bucket(self) -> Any:
        loop = asyncio.get_running_loop()
        with self._async_lock:  # event loops may run in several threads
            for closed in [other for other in self._async if other.is_closed()]:
                del self._async[closed]
            bucket = self._async.get(loop)
        if bucket is None:
            import redis.asyncio
            from pyrate_limiter import RedisBucket

            client = redis.asyncio.Redis.from_url(self.uri, **_options())
            bucket = await RedisBucket.init(self._rates(), client, self._name)
            with self._async_lock:
                bucket = self._async.setdefault(loop, bucket)
        return bucket

    def _turn(self, client: Any) -> Any:
        """The key's turn lock (sync or async, as ``client`` is): held from clock reading to verdict."""
        return client.lock(
            self._name + ":turn",
            timeout=_TURN_TTL,
            sleep=_TURN_POLL,
            blocking_timeout=_REDIS_TIMEOUT,
            thread_local=False,  # one lock object per call; coroutines of one thread must not share a token
            raise_on_release_error=False,  # held past its expiry: the verdict stands, nothing to undo
        )

    def _tidy(self, bucket: Any, now: int) -> None:
        # An idle key expires (nothing in it counts by then); entries that left the window are
        # dropped now and then, so the set stays small.
        bucket.redis.pexpire(self._name, _KEEP_MS)
        self._puts += 1
        if self._puts % _LEAK_EVERY == 0:
            bucket.leak(now)

    async def _async_tidy(self, bucket: Any, now: int) -> None:
        await bucket.redis.pexpire(self._name, _KEEP_MS)
        self._puts += 1
        if self._puts % _LEAK_EVERY == 0:
            await bucket.leak(now)

    def _unreachable(self, exc: Exception) -> AutocallsConnectionError:
        return AutocallsConnectionError(
            f"the shared rate limit at {_without_password(self.uri)} could not be reached "
            f"({type(exc).__name__}); nothing was sent. Check that Redis is up and reachable from "
            "this worker, or set rate_limit_backend to 'local' to pace within this process only."
        )


def _options() -> dict[str, Any]:
    return {"socket_connect_timeout": _REDIS_TIMEOUT, "socket_timeout": _REDIS_TIMEOUT}


def _seconds(wait_ms: int) -> float:
    # The window frees a place when its oldest counted entry leaves it.
    return min(1.0, max(_MIN_RETRY, wait_ms / 1000)) + random.uniform(0, _DESYNC)


def require_limits() -> None:
    """Refuse a configured backend early when the optional dependency is missing."""
    try:
        import pyrate_limiter  # noqa: F401
        import redis  # noqa: F401
    except ImportError as exc:
        raise AutocallsValidationError(
            "rate_limit_backend",
            "a Redis rate_limit_backend is configured but its libraries are not installed. "
            "Install airflow-provider-autocalls[redis] on every worker and triggerer.",
        ) from exc
