"""
The retry policy: what may be tried again, and how long to wait first.

Reads are retried on anything that may pass (no connection, a lost answer, 429, 502/503/504).
Sends are retried only when the API surely did not act on the request: no connection was made,
or it answered 429. A send whose outcome is unknown is never repeated.
"""

from __future__ import annotations

import functools
import logging
from typing import Any, Final

from tenacity import RetryCallState, retry_if_exception, stop_after_attempt, wait_exponential, wait_random

from airflow_provider_autocalls import metrics
from airflow_provider_autocalls.exceptions import AutocallsConnectionError, AutocallsServerError
from airflow_provider_autocalls.hooks._answers import Kind, RateLimited, TransientReadError

#: A 429 asking for a longer wait than this ends the call: a task should not sleep for minutes.
MAX_RETRY_AFTER: Final = 60.0
_RETRIED_READ_STATUSES: Final = frozenset({502, 503, 504})
_backoff = wait_exponential(multiplier=0.25, max=8.0) + wait_random(0, 0.25)

log = logging.getLogger(__name__)


def may_retry(kind: Kind, error: BaseException) -> bool:
    """Whether another attempt of a request of ``kind`` is safe and may succeed after ``error``."""
    if isinstance(error, RateLimited):
        return error.retry_after <= MAX_RETRY_AFTER
    if isinstance(error, AutocallsConnectionError):
        return True
    if kind is Kind.READ:
        return isinstance(error, TransientReadError) or (
            isinstance(error, AutocallsServerError) and error.status_code in _RETRIED_READ_STATUSES
        )
    return False


def _wait(state: RetryCallState) -> float:
    # A 429's wait is the pacer's job (it holds back every caller of the key), not this caller's.
    if state.outcome is not None and isinstance(state.outcome.exception(), RateLimited):
        return 0.0
    return float(_backoff(state))


def _log_retry(state: RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome else None
    log.warning("Autocalls API call failed (%s); attempt %d, trying again.", error, state.attempt_number)


def _before_retry(kind: Kind, state: RetryCallState) -> None:
    _log_retry(state)
    metrics.retried(kind.value)


def retry_policy(kind: Kind, max_retries: int) -> dict[str, Any]:
    """Keyword arguments for ``tenacity.Retrying`` / ``AsyncRetrying`` for a request of ``kind``."""
    return {
        "retry": retry_if_exception(lambda error: may_retry(kind, error)),
        "stop": stop_after_attempt(max_retries + 1),
        "wait": _wait,
        "before_sleep": functools.partial(_before_retry, kind),
        "reraise": True,
    }
