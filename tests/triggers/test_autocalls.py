"""SessionOpenTrigger: serialisation, polling, error events, a shared limiter across triggers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
from airflow.triggers.base import TriggerEvent

from airflow_provider_autocalls.exceptions import AuthenticationError, AutocallsAPIError, NotFoundError
from airflow_provider_autocalls.testing import AutocallsSimulator, Fault
from airflow_provider_autocalls.triggers.autocalls import SessionOpenTrigger, error_from_event

PHONE = "+14155550123"


def trigger(**kwargs: Any) -> SessionOpenTrigger:
    return SessionOpenTrigger(**{"sender_id": 12, "recipient_phone": PHONE, "poke_interval": 0.05, **kwargs})


async def first_event(t: SessionOpenTrigger, timeout: float = 10) -> TriggerEvent:
    gen = cast("AsyncGenerator[TriggerEvent, None]", t.run())
    try:
        return await asyncio.wait_for(gen.__anext__(), timeout)
    finally:
        await gen.aclose()


def test_serialize_round_trip_rebuilds_the_same_hook(make_conn: Callable[..., str]) -> None:
    original = trigger(
        replied_after="2026-05-01T12:00:00+00:00",
        autocalls_conn_id="c",
        hook_kwargs={"timeout": 5},
        end_by="2026-05-01T18:00:00+00:00",
    )
    classpath, kwargs = original.serialize()
    assert classpath == "airflow_provider_autocalls.triggers.autocalls.SessionOpenTrigger"
    rebuilt = SessionOpenTrigger(**kwargs)
    assert rebuilt.serialize() == original.serialize()
    hook = rebuilt._hook()
    assert (hook.autocalls_conn_id, hook.overrides) == ("c", {"timeout": 5})


def test_waits_until_the_window_opens(make_conn: Callable[..., str], sim: AutocallsSimulator) -> None:
    make_conn()

    async def scenario() -> TriggerEvent:
        async def customer() -> None:
            while len(sim.requests) < 3:
                await asyncio.sleep(0.01)
            sim.customer_message(12, PHONE)

        _, event = await asyncio.gather(customer(), first_event(trigger()))
        return event

    event = asyncio.run(scenario())
    assert event.payload["status"] == "success"
    assert event.payload["session_status"]["session_status"]["is_open"] is True
    assert len(sim.requests) >= 4
    assert {r["method"] for r in sim.requests} == {"GET"}  # a trigger only ever reads


def test_replied_after_is_honoured(make_conn: Callable[..., str], sim: AutocallsSimulator) -> None:
    make_conn()
    sim.customer_message(12, PHONE, "old")
    moment = sim.now().isoformat()

    async def scenario() -> TriggerEvent:
        async def customer() -> None:
            while len(sim.requests) < 2:
                await asyncio.sleep(0.01)
            sim.advance(1)
            sim.customer_message(12, PHONE, "new")

        _, event = await asyncio.gather(customer(), first_event(trigger(replied_after=moment)))
        return event

    assert asyncio.run(scenario()).payload["status"] == "success"
    assert len(sim.requests) >= 3


def test_an_error_ends_the_wait_with_an_event_the_task_turns_into_the_error(
    make_conn: Callable[..., str], sim: AutocallsSimulator
) -> None:
    make_conn(password="wrong-key-999")
    event = asyncio.run(first_event(trigger()))
    assert event.payload["status"] == "error"
    assert event.payload["error_type"] == "AuthenticationError"
    assert "wrong-key-999" not in str(event.payload)
    error = error_from_event(event.payload)
    assert isinstance(error, AuthenticationError)
    assert error.status_code == 401
    assert len(sim.requests) == 1  # no busy loop: the error ends the trigger


def test_transient_errors_are_retried_by_the_hook_before_any_event(
    make_conn: Callable[..., str], sim: AutocallsSimulator
) -> None:
    make_conn(max_retries=2)
    sim.customer_message(12, PHONE)
    sim.inject(Fault(endpoint="session_status", status=503, count=2))
    assert asyncio.run(first_event(trigger())).payload["status"] == "success"


def test_an_unknown_sender_is_reported(make_conn: Callable[..., str], sim: AutocallsSimulator) -> None:
    make_conn()
    event = asyncio.run(first_event(trigger(sender_id=999)))
    assert isinstance(error_from_event(event.payload), NotFoundError)


def test_many_triggers_share_the_limit_and_slow_down_instead_of_causing_429(
    make_conn: Callable[..., str], sim: AutocallsSimulator
) -> None:
    sim.rate_limit = 20
    make_conn(rate_limit=20)
    sim.customer_message(12, PHONE)

    async def many() -> list[TriggerEvent]:
        return await asyncio.gather(*(first_event(trigger(), timeout=30) for _ in range(40)))

    events = asyncio.run(many())
    assert all(e.payload["status"] == "success" for e in events)
    assert sim.rate_limited_count == 0
    assert len(sim.requests) == 40


@pytest.mark.parametrize(
    ("payload", "cls"),
    [
        ({"error_type": "NoSuchThing", "message": "x"}, "AutocallsError"),
        ({"error_type": "AutocallsConnectionError", "message": "x"}, "AutocallsConnectionError"),
        ({"error_type": "AutocallsValidationError", "message": "x"}, "AutocallsError"),
    ],
)
def test_error_from_event_never_fails_on_odd_events(payload: dict[str, Any], cls: str) -> None:
    assert type(error_from_event({"status": "error", **payload})).__name__ == cls


def test_internal_error_classes_travel_as_their_retryable_public_parent() -> None:
    from airflow_provider_autocalls.exceptions import AutocallsServerError, RateLimitError
    from airflow_provider_autocalls.hooks._answers import RateLimited, TransientReadError
    from airflow_provider_autocalls.triggers.autocalls import error_event

    lost = error_from_event(error_event(TransientReadError("answer lost", status_code=0)))
    assert type(lost) is AutocallsServerError
    assert lost.retryable
    limited = error_from_event(error_event(RateLimited("429", retry_after=1, status_code=429)))
    assert type(limited) is RateLimitError
    assert limited.retryable


@pytest.mark.parametrize(
    "body",
    [
        '{"success": true, "has_conversation": true, "last_customer_message_at": "not a time", '
        '"session_status": {"is_open": true}}',
        '{"success": true, "has_conversation": false, "session_status": {"is_open": null}}',
    ],
)
def test_an_unreadable_status_ends_the_wait_with_a_typed_error_event(
    make_conn: Callable[..., str], sim: AutocallsSimulator, body: str
) -> None:
    make_conn()
    sim.inject(Fault(endpoint="session_status", status=200, body=body))
    event = asyncio.run(first_event(trigger(replied_after="2026-01-01T00:00:00+00:00")))
    assert event.payload["status"] == "error"
    assert event.payload["error_type"] == "AutocallsAPIError"
    assert type(error_from_event(event.payload)) is AutocallsAPIError
    assert len(sim.requests) == 1


def test_a_replied_after_that_cannot_be_read_ends_the_wait_with_an_error_event(
    make_conn: Callable[..., str], sim: AutocallsSimulator
) -> None:
    make_conn()
    event = asyncio.run(first_event(trigger(replied_after="")))
    assert (event.payload["status"], event.payload["error_type"]) == ("error", "AutocallsValidationError")
    assert sim.requests == []


def test_the_wait_ends_by_itself_at_end_by(make_conn: Callable[..., str], sim: AutocallsSimulator) -> None:
    make_conn()
    end_by = (datetime.now(UTC) + timedelta(seconds=0.5)).isoformat()
    started = time.monotonic()
    event = asyncio.run(first_event(trigger(poke_interval=30, end_by=end_by)))
    assert event.payload["status"] == "timeout"
    assert time.monotonic() - started < 5  # the last sleep is cut to the end, not a whole poke_interval
    assert len(sim.requests) == 2  # a check, then one more at the end


def test_a_trigger_restored_after_its_end_checks_once_then_ends(
    make_conn: Callable[..., str], sim: AutocallsSimulator
) -> None:
    make_conn()
    sim.customer_message(12, PHONE)
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    assert asyncio.run(first_event(trigger(end_by=past))).payload["status"] == "success"
    sim.reset()
    assert asyncio.run(first_event(trigger(end_by=past))).payload["status"] == "timeout"
