"""
The watchers' share of an API key's rate limit.

Reply watchers poll without end, so left alone they could take every permit of the key's pacer
and starve the sends. Each of their reads first waits for a slot of a smaller budget,
``share * rate`` requests per second, evenly spaced and kept per API key in the process (every
watcher of a triggerer draws from the same one), and then goes through the hook as every other
request does: the hook's pacer (and the shared Redis limit when configured) still enforces the
API's window. The budget only spaces the watchers out; it never lets a request skip the key's
limit. With the default share of 20 %, sends of the same key keep at least 80 % of the limit however
many recipients are watched; the watchers' polls then simply take longer than ``poll_interval``.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from typing import Final

from airflow_provider_autocalls.exceptions import AutocallsValidationError

#: The share of an API key's rate limit that reply watchers may take by default.
DEFAULT_POLL_SHARE: Final = 0.2


class WatchBudget:
    """
    Evenly spaced slots at ``rate`` per second, handed out in the order asked (safe across tasks).

    :param rate: slots per second; ``0`` turns the budget off.
    """

    def __init__(self, rate: float) -> None:
        self._lock = threading.Lock()
        self._next_slot = 0.0
        self.rate = rate

    def _reserve(self) -> float:
        """Take the next slot; return how many seconds from now it starts."""
        with self._lock:
            if self.rate <= 0:
                return 0.0
            now = time.monotonic()
            slot = max(now, self._next_slot)
            self._next_slot = slot + 1.0 / self.rate
            return slot - now

    async def wait_turn(self) -> None:
        """Wait, without blocking the event loop, for this watcher's next slot."""
        delay = self._reserve()
        if delay > 0:
            await asyncio.sleep(delay)


_budgets: dict[str, WatchBudget] = {}
_budgets_lock = threading.Lock()


def check_share(value: object) -> float:
    """Return ``value`` as a share of the limit in ``(0, 1]``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise AutocallsValidationError(
            "poll_share",
            f"{value!r} is not a share of the rate limit; give a number above 0 and at most 1, e.g. 0.2.",
        )
    return float(value)


def budget_for(api_key: str, rate_limit: float, share: float) -> WatchBudget:
    """
    Return the process-wide watch budget of an API key.

    The key is kept only as a digest. When watchers of one key ask for different budgets, the
    smaller one wins (the sends' share is what the budget protects).

    :param api_key: the account's API key.
    :param rate_limit: the key's limit in requests per second (``0``: no limit, so no budget).
    :param share: the watchers' share of it.
    """
    rate = rate_limit * share if rate_limit > 0 else 0.0
    digest = hashlib.sha256(api_key.encode()).hexdigest()
    with _budgets_lock:
        budget = _budgets.get(digest)
        if budget is None:
            budget = _budgets[digest] = WatchBudget(rate)
        elif rate > 0 and (budget.rate <= 0 or rate < budget.rate):
            budget.rate = rate
        return budget


def forget_budgets() -> None:
    """Drop every watch budget of the process (tests: a clean slate)."""
    with _budgets_lock:
        _budgets.clear()
