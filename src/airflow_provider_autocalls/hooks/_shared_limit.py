"""
A rate limit shared by every process and host that uses one API key, kept in Redis.

Selected by ``[autocalls] rate_limit_backend`` (e.g. ``redis://127.0.0.1:6379/0``) or, for one
connection, by its extra ``rate_limit_backend``; the connection's extra wins, so one connection can
use another Redis, or ``local`` to keep to the in-process limiter where the deployment shares one.

The window is the ``limits`` library's moving window: an atomic Lua script over a Redis list that
grants a request only if fewer than ``capacity`` requests were granted in the last second (by the
granting process's clock), and records it. It runs after the process's own pacer (even spacing and
its window with a margin for jitter), so the shared window only has to settle contention between
processes. ``limits`` is an optional dependency (the ``redis`` extra) and is imported only here,
only when a backend is configured.

If Redis cannot be reached, the request fails at once with :class:`AutocallsConnectionError`
(retryable; nothing was sent): a silent fall-back to a per-process limit would let many workers
push one account past its limit together.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from typing import TYPE_CHECKING, Any, Final

from airflow_provider_autocalls.exceptions import AutocallsConnectionError, AutocallsValidationError

if TYPE_CHECKING:
    from limits import RateLimitItem

#: The value (of the setting or the extra) that means "this process's own limiter only".
LOCAL: Final = "local"
# Redis must answer fast or not at all: a send should not hang on an unreachable backend.
_REDIS_TIMEOUT: Final = 2.0
# How soon a refused request asks again when the window's reset time is not known.
_MIN_RETRY: Final = 0.005


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
    if not value.lower().startswith(("redis://", "rediss://", "unix://")):
        raise AutocallsValidationError(
            "rate_limit_backend",
            f"{_without_password(value)!r} is not a Redis URI. Use redis://host:port/db, rediss://... "
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
    :param capacity: requests allowed in any one second, across every process.
    """

    def __init__(self, uri: str, api_key: str, capacity: int) -> None:
        self.uri = uri
        self._name = "autocalls-rate:" + hashlib.sha256(api_key.encode()).hexdigest()
        self._capacity = capacity
        self._lock = threading.Lock()
        self._sync: Any = None
        # Async clients are bound to the loop that made them (as the triggerer's one loop).
        self._async: dict[asyncio.AbstractEventLoop, Any] = {}

    @property
    def capacity(self) -> int:
        return self._capacity

    @capacity.setter
    def capacity(self, capacity: int) -> None:
        self._capacity = capacity

    def _item(self) -> RateLimitItem:
        from limits import RateLimitItemPerSecond

        return RateLimitItemPerSecond(self._capacity, 1)

    def acquire(self) -> float:
        """Take a place in the shared window: return 0, or how long to wait before asking again."""
        from limits.errors import StorageError

        limiter = self._sync_limiter()
        item = self._item()
        try:
            if limiter.hit(item, self._name):
                return 0.0
            reset_at = limiter.get_window_stats(item, self._name).reset_time
        except StorageError as exc:
            raise self._unreachable(exc) from None
        return _until(reset_at)

    async def async_acquire(self) -> float:
        """:meth:`acquire` on an event loop, without blocking it."""
        from limits.errors import StorageError

        limiter = self._async_limiter()
        item = self._item()
        try:
            if await limiter.hit(item, self._name):
                return 0.0
            reset_at = (await limiter.get_window_stats(item, self._name)).reset_time
        except StorageError as exc:
            raise self._unreachable(exc) from None
        return _until(reset_at)

    def _sync_limiter(self) -> Any:
        with self._lock:
            if self._sync is None:
                from limits.storage import storage_from_string
                from limits.strategies import MovingWindowRateLimiter

                self._sync = MovingWindowRateLimiter(storage_from_string(self.uri, **_options()))
            return self._sync

    def _async_limiter(self) -> Any:
        loop = asyncio.get_running_loop()
        with self._lock:
            for closed in [other for other in self._async if other.is_closed()]:
                del self._async[closed]
            limiter = self._async.get(loop)
            if limiter is None:
                from limits.aio.storage import storage_from_string
                from limits.aio.strategies import MovingWindowRateLimiter

                storage = storage_from_string(f"async+{self.uri}", implementation="redispy", **_options())
                limiter = self._async[loop] = MovingWindowRateLimiter(storage)
            return limiter

    def _unreachable(self, exc: Exception) -> AutocallsConnectionError:
        cause = getattr(exc, "storage_error", exc)
        return AutocallsConnectionError(
            f"the shared rate limit at {_without_password(self.uri)} could not be reached "
            f"({type(cause).__name__}); nothing was sent. Check that Redis is up and reachable from "
            "this worker, or set rate_limit_backend to 'local' to pace within this process only."
        )


def _options() -> dict[str, Any]:
    return {
        "wrap_exceptions": True,
        "socket_connect_timeout": _REDIS_TIMEOUT,
        "socket_timeout": _REDIS_TIMEOUT,
    }


def _until(reset_at: float) -> float:
    # The moving window frees a place when its oldest entry turns one second old.
    return min(1.0, max(_MIN_RETRY, reset_at - time.time()))


def require_limits() -> None:
    """Refuse a configured backend early when the optional dependency is missing."""
    try:
        import limits  # noqa: F401
        import redis  # noqa: F401
    except ImportError as exc:
        raise AutocallsValidationError(
            "rate_limit_backend",
            "a Redis rate_limit_backend is configured but its libraries are not installed. "
            "Install airflow-provider-autocalls[redis] on every worker and triggerer.",
        ) from exc
