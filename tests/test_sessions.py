"""The session decisions: "free text or template?" (sync and async) and "did the customer write since X?"."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest

from airflow_provider_autocalls.exceptions import AutocallsAPIError, AutocallsValidationError
from airflow_provider_autocalls.sessions import (
    NO_EARLIER_MESSAGE,
    async_choose_message,
    choose_message,
    customer_wrote_since,
    reply_since,
)
from airflow_provider_autocalls.testing import AutocallsSimulator

PHONE = "+14155550123"


def choose(how: str, hook: Any, **kwargs: Any) -> Any:
    args = {"sender_id": 12, "recipient_phone": PHONE, "message": "hi", **kwargs}
    if how == "sync":
        return choose_message(hook, **args)
    return asyncio.run(async_choose_message(hook, **args))


@pytest.mark.parametrize("how", ["sync", "async"])
def test_free_text_while_the_window_is_open(hook: Any, sim: AutocallsSimulator, how: str) -> None:
    sim.customer_message(12, PHONE)
    choice = choose(how, hook, fallback_template_id=46)
    assert (choice.kind, choice.window_open) == ("freeform", True)
    assert choice.reply_baseline == choice.status["last_customer_message_at"]


@pytest.mark.parametrize("how", ["sync", "async"])
@pytest.mark.parametrize(("fallback", "kind"), [(46, "template"), (None, None)])
def test_the_fallback_template_when_the_window_is_closed(
    hook: Any, sim: AutocallsSimulator, how: str, fallback: int | None, kind: str | None
) -> None:
    choice = choose(how, hook, fallback_template_id=fallback)
    assert (choice.kind, choice.window_open, choice.reply_baseline) == (kind, False, None)
    assert [r["endpoint"] for r in sim.requests] == ["session_status"]


@pytest.mark.parametrize("how", ["sync", "async"])
@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"message": " "}, "message"),
        ({"fallback_template_id": "x"}, "fallback_template_id"),
        ({"sender_id": 0}, "sender_id"),
    ],
)
def test_bad_input_is_refused_before_the_status_is_read(
    hook: Any, sim: AutocallsSimulator, how: str, kwargs: dict[str, Any], field: str
) -> None:
    with pytest.raises(AutocallsValidationError) as error:
        choose(how, hook, **kwargs)
    assert error.value.field == field
    assert sim.requests == []


def status(last: Any) -> dict[str, Any]:
    return {"last_customer_message_at": last, "session_status": {"is_open": True}}


def test_customer_wrote_since_compares_the_apis_own_times() -> None:
    baseline = reply_since({"reply_baseline": "2026-05-01T12:00:00+00:00"})
    assert customer_wrote_since(status("2026-05-01T12:00:01+00:00"), baseline)
    assert not customer_wrote_since(status("2026-05-01T12:00:00+00:00"), baseline)
    assert not customer_wrote_since(status(None), baseline)
    assert customer_wrote_since(status("2026-05-01T12:00:00+00:00"), NO_EARLIER_MESSAGE)
    assert reply_since({"reply_baseline": None}) == NO_EARLIER_MESSAGE
    assert reply_since({"reply_baseline": "2026-05-01T14:00:00+02:00"}) == datetime(
        2026, 5, 1, 12, tzinfo=UTC
    )


def test_an_unreadable_time_from_the_api_is_an_api_error() -> None:
    with pytest.raises(AutocallsAPIError, match="unreadable 'last_customer_message_at'"):
        customer_wrote_since(status("2026-05-01"), NO_EARLIER_MESSAGE)  # a date, not a date-time
