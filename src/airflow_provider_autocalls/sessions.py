"""When a customer's conversation is ready for free text: shared by the sensor and its trigger."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import pendulum

from airflow_provider_autocalls.exceptions import AutocallsValidationError


def parse_moment(value: Any, field: str = "replied_after") -> datetime | None:
    """
    Return ``value`` as an aware UTC datetime; naive values are taken as UTC, as Airflow does.

    :param value: ``None``, a datetime, or an ISO 8601 string (e.g. a rendered ``sent_at``).
    """
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        try:
            parsed = pendulum.parse(value)
        except ValueError as exc:
            raise AutocallsValidationError(field, f"{value!r} is not an ISO 8601 date-time.") from exc
        if not isinstance(parsed, datetime):
            raise AutocallsValidationError(field, f"{value!r} is a date or duration, not a date-time.")
        moment = parsed
    else:
        raise AutocallsValidationError(
            field, f"must be a datetime or an ISO 8601 string, got {type(value).__name__}."
        )
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=pendulum.UTC)
    return moment.astimezone(pendulum.UTC)


def is_ready(status: Mapping[str, Any], replied_after: datetime | None) -> bool:
    """
    Whether the window is open and, with ``replied_after``, the customer wrote after that moment.

    A template send opens the window by itself, so "open" alone does not mean the customer answered.
    """
    session = status.get("session_status") or {}
    if not session.get("is_open"):
        return False
    if replied_after is None:
        return True
    last = parse_moment(status.get("last_customer_message_at"), "last_customer_message_at")
    return last is not None and last > replied_after
