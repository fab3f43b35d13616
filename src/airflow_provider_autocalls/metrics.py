"""
The provider's metrics, emitted through Airflow's own ``Stats``.

``Stats`` sends them wherever the deployment configured metrics (``[metrics] statsd_on`` or
``otel_on``), under its prefix (``airflow.`` by default); with metrics off every call is a no-op.
Names and tags are documented in the README ("Metrics"). Tags never carry an API key, a phone
number or a message: only the kind of request (``read`` or ``send``).
"""

from __future__ import annotations

import datetime
from typing import Final

try:  # Airflow 3: the task SDK's Stats, through the compat layer
    from airflow.providers.common.compat.sdk import Stats
except ImportError:  # Airflow 2.11
    from airflow.stats import Stats

#: Messages the API accepted.
SENT: Final = "autocalls.sent"
#: Sends the API refused (a typed error; nothing was sent).
FAILED: Final = "autocalls.failed"
#: Sends whose outcome is unknown (they may have been delivered; never repeated).
UNKNOWN: Final = "autocalls.unknown"
#: Sends refused before any request (bad input, template mismatch, already claimed).
REFUSED_BEFORE_SEND: Final = "autocalls.refused_before_send"
#: Answers of 429 (the API's rate limit).
RATE_LIMITED: Final = "autocalls.rate_limited"
#: Attempts started again after a retryable failure.
RETRIES: Final = "autocalls.retries"
#: Time from a request leaving to its whole answer being read.
REQUEST_LATENCY: Final = "autocalls.request_latency"
#: Time a request waited for the pacer's permit.
PACER_WAIT: Final = "autocalls.pacer_wait"
#: Requests of the process that hold a permit (left, answer not read yet).
IN_FLIGHT: Final = "autocalls.in_flight"


def _kind(kind: str) -> dict[str, str]:
    return {"kind": kind}


def sent(count: int = 1) -> None:
    """Count messages the API accepted."""
    Stats.incr(SENT, count)


def failed(count: int = 1) -> None:
    """Count sends the API refused."""
    Stats.incr(FAILED, count)


def unknown(count: int = 1) -> None:
    """Count sends whose outcome is unknown."""
    Stats.incr(UNKNOWN, count)


def refused_before_send(count: int = 1) -> None:
    """Count sends refused before any request was made."""
    Stats.incr(REFUSED_BEFORE_SEND, count)


def rate_limited(kind: str) -> None:
    """Count one answer of 429 to a request of ``kind`` (``read`` or ``send``)."""
    Stats.incr(RATE_LIMITED, tags=_kind(kind))


def retried(kind: str) -> None:
    """Count one retry of a request of ``kind``."""
    Stats.incr(RETRIES, tags=_kind(kind))


def request_latency(kind: str, seconds: float) -> None:
    """Time one request of ``kind``, from leaving to its answer read."""
    Stats.timing(REQUEST_LATENCY, datetime.timedelta(seconds=seconds), tags=_kind(kind))


def pacer_wait(kind: str, seconds: float) -> None:
    """Time one request's wait for the pacer's permit."""
    Stats.timing(PACER_WAIT, datetime.timedelta(seconds=seconds), tags=_kind(kind))


def in_flight(count: int) -> None:
    """Report how many requests of the process are in flight now."""
    Stats.gauge(IN_FLIGHT, count)
