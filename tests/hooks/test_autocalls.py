"""AutocallsHook against the simulator on 127.0.0.1: endpoints, typed errors, retries, at-most-once."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from airflow_provider_autocalls.exceptions import (
    AuthenticationError,
    AutocallsAPIError,
    AutocallsConnectionError,
    AutocallsServerError,
    AutocallsValidationError,
    InsufficientBalanceError,
    InvalidPhoneError,
    NotFoundError,
    RateLimitError,
    SenderOfflineError,
    SendOutcomeUnknownError,
    SessionExpiredError,
    TemplateMismatchError,
    TemplateNotApprovedError,
)
from airflow_provider_autocalls.hooks.autocalls import AutocallsHook
from airflow_provider_autocalls.testing import AutocallsSimulator, Fault

PHONE = "+14155550123"


def api_body(status: int, error_code: str, error: str = "refused") -> Fault:
    return Fault(status=status, body=json.dumps({"success": False, "error": error, "error_code": error_code}))


# -- endpoints ---------------------------------------------------------------------------------------


def test_get_senders(hook: AutocallsHook, sim: AutocallsSimulator) -> None:
    online = hook.get_senders()
    assert [s["id"] for s in online] == [12]
    assert {s["id"] for s in hook.get_senders(status="all")} == {12, 15}
    assert [r["query"] for r in sim.requests] == [{"status": "online"}, {"status": "all"}]
    assert all(r["authorized"] for r in sim.requests)


def test_get_conn_is_the_one_lazy_client(hook: AutocallsHook) -> None:
    assert "client" not in hook.__dict__
    assert hook.get_conn() is hook.client is hook.get_conn()


def test_get_templates(hook: AutocallsHook) -> None:
    approved = hook.get_templates(12)
    assert {t["id"] for t in approved} == {45, 46, 49}
    assert {t["status"] for t in hook.get_templates("12", status="all")} == {
        "approved",
        "pending",
        "rejected",
    }


def test_get_templates_of_an_unknown_sender(hook: AutocallsHook) -> None:
    with pytest.raises(NotFoundError) as err:
        hook.get_templates(999)
    assert (err.value.status_code, err.value.error_code) == (404, "SENDER_NOT_FOUND")
    assert "get_senders()" in str(err.value)


def test_session_status_follows_the_customer_and_the_clock(
    hook: AutocallsHook, sim: AutocallsSimulator
) -> None:
    assert hook.get_session_status(12, PHONE)["session_status"]["is_open"] is False
    sim.customer_message(12, PHONE, "hello")
    status = hook.get_session_status(12, PHONE)
    assert status["session_status"]["can_send_freeform"] is True
    assert status["last_customer_message_at"] is not None
    sim.advance(24 * 3600 + 1)
    assert hook.get_session_status(12, PHONE)["session_status"]["is_open"] is False


def test_send_template_delivers_once_and_opens_the_window(
    hook: AutocallsHook, sim: AutocallsSimulator
) -> None:
    answer = hook.send_template(
        12, 45, PHONE, recipient_name="Ada", variables={"1": "Ada", "date": "1 May", 3: 9}
    )
    assert answer["success"] is True
    assert answer["message_sid"].startswith("SM")
    [delivered] = sim.delivered
    assert delivered["message_sid"] == answer["message_sid"]
    assert delivered["variables"] == {"1": "Ada", "date": "1 May", "3": "9"}
    assert sim.requests[-1]["json"]["recipient_name"] == "Ada"
    assert hook.get_session_status(12, PHONE)["session_status"]["is_open"] is True


def test_send_freeform_inside_the_window(hook: AutocallsHook, sim: AutocallsSimulator) -> None:
    sim.customer_message(12, PHONE)
    answer = hook.send_freeform(12, PHONE, "Thanks!")
    assert answer["session_status"]["is_open"] is True
    assert [m["text"] for m in sim.delivered] == ["Thanks!"]


def test_send_freeform_outside_the_window(hook: AutocallsHook, sim: AutocallsSimulator) -> None:
    with pytest.raises(SessionExpiredError) as err:
        hook.send_freeform(12, PHONE, "Thanks!")
    assert err.value.status_code == 403
    assert err.value.session_status["requires_template"] is True
    assert "send a template first" in str(err.value)
    assert sim.delivered == []


# -- every documented error answer becomes its typed error -----------------------------------------------


@pytest.mark.parametrize(
    ("call", "cls", "status", "error_code"),
    [
        (lambda h: h.send_template(12, 47, PHONE), TemplateNotApprovedError, 422, "TEMPLATE_NOT_APPROVED"),
        (lambda h: h.send_template(12, 999, PHONE), NotFoundError, 404, "TEMPLATE_NOT_FOUND"),
        (lambda h: h.send_template(999, 45, PHONE), NotFoundError, 404, "SENDER_NOT_FOUND"),
        (
            lambda h: h.send_template(12, 45, PHONE, variables={"1": "x"}),
            TemplateMismatchError,
            422,
            "TEMPLATE_MISMATCH",
        ),
        (lambda h: h.send_template(15, 999, PHONE), NotFoundError, 404, "TEMPLATE_NOT_FOUND"),
    ],
)
def test_template_errors(
    hook: AutocallsHook,
    sim: AutocallsSimulator,
    call: Callable[[AutocallsHook], Any],
    cls: type[AutocallsAPIError],
    status: int,
    error_code: str,
) -> None:
    with pytest.raises(cls) as err:
        call(hook)
    assert (err.value.status_code, err.value.error_code) == (status, error_code)
    assert sim.delivered == []
    assert len(sim.requests) == 1  # a definite refusal is never retried


def test_sender_offline_is_the_same_error_as_422_and_as_503(
    hook: AutocallsHook, sim: AutocallsSimulator
) -> None:
    sim.add_template(15, 60, "hello", "Hello!")
    sim.add_template(15, 61, "hello2", "Hello!")
    with pytest.raises(SenderOfflineError) as on_template:
        hook.send_template(15, 60, PHONE)
    sim.customer_message(15, PHONE)
    with pytest.raises(SenderOfflineError) as on_freeform:
        hook.send_freeform(15, PHONE, "hi")
    assert (on_template.value.status_code, on_freeform.value.status_code) == (422, 503)
    assert on_template.value.retryable
    assert on_freeform.value.retryable
    assert len(sim.requests) == 2
    assert sim.delivered == []


def test_insufficient_balance(hook: AutocallsHook, sim: AutocallsSimulator) -> None:
    sim.balance = 0
    with pytest.raises(InsufficientBalanceError) as err:
        hook.send_template(12, 46, PHONE)
    assert err.value.status_code == 402
    assert "Top up" in str(err.value)


def test_invalid_phone_from_the_api(hook: AutocallsHook, sim: AutocallsSimulator) -> None:
    sim.inject(api_body(422, "INVALID_PHONE", "Invalid phone number"))
    with pytest.raises(InvalidPhoneError, match="Invalid phone number"):
        hook.send_template(12, 46, PHONE)


def test_a_wrong_key_is_an_authentication_error_without_the_key(
    make_conn: Callable[..., str], sim: AutocallsSimulator
) -> None:
    hook = AutocallsHook(make_conn(password="wrong-key-123"))
    with pytest.raises(AuthenticationError) as err:
        hook.get_senders()
    assert err.value.status_code == 401
    assert "API key" in str(err.value)
    assert "wrong-key-123" not in str(err.value) + repr(err.value)
    assert len(sim.requests) == 1


def test_an_undocumented_error_code_is_a_plain_api_error(
    hook: AutocallsHook, sim: AutocallsSimulator
) -> None:
    sim.inject(api_body(422, "NO_ASSISTANT_CONFIGURED"))
    with pytest.raises(AutocallsAPIError) as err:
        hook.send_template(12, 46, PHONE)
    assert type(err.value) is AutocallsAPIError
    assert err.value.error_code == "NO_ASSISTANT_CONFIGURED"
    assert not err.value.retryable


# -- input is checked before any request ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda h: h.get_senders(status="busy"), "status"),
        (lambda h: h.get_templates(12, status="draft"), "status"),
        (lambda h: h.get_templates(0), "sender_id"),
        (lambda h: h.get_session_status(12, "4155550123"), "recipient_phone"),
        (lambda h: h.send_template(True, 45, PHONE), "sender_id"),
        (lambda h: h.send_template(12, "45x", PHONE), "template_id"),
        (lambda h: h.send_template(12, 45, "+1 415 555 0123"), "recipient_phone"),
        (lambda h: h.send_template(12, 45, PHONE, recipient_name="n" * 256), "recipient_name"),
        (lambda h: h.send_template(12, 45, PHONE, variables=["Ada"]), "variables"),
        (lambda h: h.send_freeform(12, PHONE, " "), "message"),
        (lambda h: h.send_freeform(12, PHONE, "x" * 4097), "message"),
    ],
)
def test_bad_input_is_refused_before_any_request(
    hook: AutocallsHook, sim: AutocallsSimulator, call: Callable[[AutocallsHook], Any], field: str
) -> None:
    with pytest.raises(AutocallsValidationError) as err:
        call(hook)
    assert err.value.field == field
    assert sim.requests == []


# -- retries: reads are retried, sends only when nothing was sent --------------------------------------------


def test_a_read_is_retried_after_502(hook: AutocallsHook, sim: AutocallsSimulator) -> None:
    sim.inject(Fault(endpoint="senders", status=502, body="<html>Bad gateway</html>"))
    assert hook.get_senders()
    assert [r["status"] for r in sim.requests] == [502, 200]


@pytest.mark.parametrize("status", [503, 504])
def test_a_read_is_retried_after_other_gateway_errors(
    hook: AutocallsHook, sim: AutocallsSimulator, status: int
) -> None:
    sim.inject(Fault(endpoint="session_status", status=status))
    hook.get_session_status(12, PHONE)
    assert [r["status"] for r in sim.requests] == [status, 200]


def test_a_read_is_not_retried_after_500(hook: AutocallsHook, sim: AutocallsSimulator) -> None:
    sim.inject(Fault(endpoint="senders", status=500))
    with pytest.raises(AutocallsServerError) as err:
        hook.get_senders()
    assert err.value.status_code == 500
    assert len(sim.requests) == 1


def test_a_read_gives_up_after_max_retries(hook: AutocallsHook, sim: AutocallsSimulator) -> None:
    sim.inject(Fault(endpoint="senders", status=503, count=10))
    with pytest.raises(AutocallsServerError):
        hook.get_senders()
    assert len(sim.requests) == 3  # max_retries=2 in the fixture


def test_a_read_timeout_is_retried(make_conn: Callable[..., str], sim: AutocallsSimulator) -> None:
    hook = AutocallsHook(make_conn(timeout=0.3))
    sim.inject(Fault(endpoint="senders", delay=1.0))
    assert hook.get_senders()
    assert len(sim.requests) == 2


@pytest.mark.parametrize(
    "fault",
    [
        Fault(endpoint="send_template", process=True, drop=True),  # processed, then the connection dropped
        Fault(endpoint="send_template", status=500),
        Fault(endpoint="send_template", status=502),
        Fault(endpoint="send_template", status=503),
        Fault(endpoint="send_template", status=200, body="<html>ok</html>"),
    ],
    ids=["dropped-after-processing", "500", "502", "503", "200-not-json"],
)
def test_a_send_in_doubt_is_never_repeated(
    hook: AutocallsHook, sim: AutocallsSimulator, fault: Fault
) -> None:
    sim.inject(fault)
    with pytest.raises(SendOutcomeUnknownError) as err:
        hook.send_template(12, 46, PHONE)
    assert len(sim.requests) == 1
    assert len(sim.delivered) == (1 if fault.process else 0)
    assert (err.value.sender_id, err.value.recipient_phone) == (12, PHONE)
    assert "may have been delivered" in str(err.value)
    assert not err.value.retryable


def test_a_send_that_times_out_is_not_repeated(
    make_conn: Callable[..., str], sim: AutocallsSimulator
) -> None:
    hook = AutocallsHook(make_conn(timeout=0.3))
    sim.customer_message(12, PHONE)
    sim.inject(Fault(endpoint="send_freeform", delay=1.0))
    with pytest.raises(SendOutcomeUnknownError, match="ReadTimeout"):
        hook.send_freeform(12, PHONE, "hello")
    time.sleep(0.8)  # let the slow answer finish on the server
    assert len(sim.requests) == 1
    assert len(sim.delivered) == 1


def test_a_send_refused_with_429_is_retried_once_the_api_allows(
    hook: AutocallsHook, sim: AutocallsSimulator
) -> None:
    sim.inject(Fault(endpoint="send_template", status=429, headers={"Retry-After": "1"}))
    started = time.monotonic()
    hook.send_template(12, 46, PHONE)
    assert time.monotonic() - started >= 1.0  # Retry-After honoured
    assert [r["status"] for r in sim.requests] == [429, 200]
    assert len(sim.delivered) == 1


def test_429_without_retry_after_waits_one_window(hook: AutocallsHook, sim: AutocallsSimulator) -> None:
    sim.inject(Fault(endpoint="senders", status=429))
    started = time.monotonic()
    hook.get_senders()
    assert time.monotonic() - started >= 1.0


def test_429_on_every_attempt_is_a_rate_limit_error(
    make_conn: Callable[..., str], sim: AutocallsSimulator
) -> None:
    hook = AutocallsHook(make_conn(max_retries=1))
    sim.inject(Fault(endpoint="send_template", status=429, headers={"Retry-After": "0.1"}, count=5))
    with pytest.raises(RateLimitError) as err:
        hook.send_template(12, 46, PHONE)
    assert err.value.retryable
    assert len(sim.requests) == 2
    assert sim.delivered == []


def test_an_unreachable_api_is_retried_then_reported(
    make_conn: Callable[..., str], sim: AutocallsSimulator
) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    hook = AutocallsHook(make_conn(max_retries=1))
    hook.settings.__dict__  # noqa: B018 - load before swapping the URL
    object.__setattr__(hook.settings, "base_url", f"http://127.0.0.1:{port}/api")
    with pytest.raises(AutocallsConnectionError, match="nothing was sent") as err:
        hook.send_template(12, 46, PHONE)
    assert err.value.retryable


def test_redirects_are_not_followed(hook: AutocallsHook, sim: AutocallsSimulator) -> None:
    sim.inject(
        Fault(endpoint="senders", status=302, headers={"Location": "https://evil.example/api"}, body="")
    )
    with pytest.raises(AutocallsAPIError, match="redirected to https://evil.example/api"):
        hook.get_senders()
    assert len(sim.requests) == 1


def test_an_oversized_answer_is_refused(hook: AutocallsHook, sim: AutocallsSimulator) -> None:
    sim.inject(Fault(endpoint="senders", status=200, body="[" + " " * (2 * 1024 * 1024) + "]"))
    with pytest.raises(AutocallsAPIError, match="larger than"):
        hook.get_senders()


def test_a_200_of_the_wrong_shape_is_refused(hook: AutocallsHook, sim: AutocallsSimulator) -> None:
    sim.inject(Fault(endpoint="senders", status=200, body='{"data": "nope"}'))
    with pytest.raises(AutocallsAPIError, match="without a list under 'data'"):
        hook.get_senders()


# -- test_connection -------------------------------------------------------------------------------------


def test_test_connection(hook: AutocallsHook, make_conn: Callable[..., str]) -> None:
    assert hook.test_connection() == (True, "Connected to the Autocalls API: 2 sender(s) on this account.")
    ok, message = AutocallsHook(make_conn("bad", password="bad-key-456")).test_connection()
    assert not ok
    assert "API key" in message
    assert "bad-key-456" not in message


def test_test_connection_never_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_BROKEN", json.dumps({"conn_type": "autocalls", "host": "no-scheme"}))
    ok, message = AutocallsHook("broken").test_connection()
    assert not ok
    assert "password" in message


# -- async ---------------------------------------------------------------------------------------------


def test_async_session_status_and_retry(hook: AutocallsHook, sim: AutocallsSimulator) -> None:
    sim.customer_message(12, PHONE)
    sim.inject(Fault(endpoint="session_status", status=502))

    status = asyncio.run(hook.async_get_session_status(12, PHONE))
    assert status["session_status"]["is_open"] is True
    assert [r["status"] for r in sim.requests] == [502, 200]


def test_async_input_is_checked_before_any_request(hook: AutocallsHook, sim: AutocallsSimulator) -> None:
    with pytest.raises(AutocallsValidationError):
        asyncio.run(hook.async_get_session_status(12, "+1"))
    assert sim.requests == []


def test_hooks_on_one_event_loop_share_one_async_client(make_conn: Callable[..., str]) -> None:
    from airflow_provider_autocalls.hooks._clients import shared_async_client

    conn_id = make_conn()

    async def clients() -> list[object]:
        hooks = [AutocallsHook(conn_id) for _ in range(3)]
        return [shared_async_client(await h.async_settings()) for h in hooks]

    first = asyncio.run(clients())
    assert first[0] is first[1] is first[2]
    assert asyncio.run(clients())[0] is not first[0]  # another loop gets its own


# -- choices where the API's documentation is vague ----------------------------------------------------------


def test_unknown_error_on_a_send_is_a_send_in_doubt(hook: AutocallsHook, sim: AutocallsSimulator) -> None:
    sim.inject(api_body(422, "UNKNOWN_ERROR"))
    with pytest.raises(SendOutcomeUnknownError):
        hook.send_template(12, 46, PHONE)
    assert len(sim.requests) == 1


def test_success_false_in_a_200_is_an_error(hook: AutocallsHook, sim: AutocallsSimulator) -> None:
    sim.inject(Fault(endpoint="senders", status=200, body='{"success": false, "error": "Nope."}'))
    with pytest.raises(AutocallsAPIError, match="Nope"):
        hook.get_senders()


def test_retry_after_as_an_http_date(hook: AutocallsHook, sim: AutocallsSimulator) -> None:
    from email.utils import format_datetime

    when = format_datetime(datetime.now(UTC) + timedelta(seconds=2), usegmt=True)
    sim.inject(Fault(endpoint="senders", status=429, headers={"Retry-After": when}))
    started = time.monotonic()
    hook.get_senders()
    assert time.monotonic() - started >= 0.9  # HTTP dates have whole seconds
    assert len(sim.requests) == 2


def test_a_retry_after_beyond_a_minute_is_not_waited_for(
    hook: AutocallsHook, sim: AutocallsSimulator
) -> None:
    sim.inject(Fault(endpoint="senders", status=429, headers={"Retry-After": "3600"}))
    started = time.monotonic()
    with pytest.raises(RateLimitError):
        hook.get_senders()
    assert time.monotonic() - started < 5
    assert len(sim.requests) == 1
    assert hook.pacer.reserve() <= 60.5  # later calls wait at most the cap, not an hour


def test_a_body_that_cannot_be_decoded_is_a_send_in_doubt(
    hook: AutocallsHook, sim: AutocallsSimulator
) -> None:
    sim.inject(
        Fault(
            endpoint="send_template",
            process=True,
            status=200,
            body="not gzip",
            headers={"Content-Encoding": "gzip"},
        )
    )
    with pytest.raises(SendOutcomeUnknownError, match="DecodingError"):
        hook.send_template(12, 46, PHONE)
    assert len(sim.delivered) == 1


def test_a_read_whose_body_cannot_be_decoded_is_retried(hook: AutocallsHook, sim: AutocallsSimulator) -> None:
    sim.inject(Fault(endpoint="senders", status=200, body="not gzip", headers={"Content-Encoding": "gzip"}))
    assert hook.get_senders()
    assert len(sim.requests) == 2


def test_the_hook_tells_whether_the_api_may_have_acted(hook: AutocallsHook, sim: AutocallsSimulator) -> None:
    sim.inject(Fault(endpoint="send_template", status=429, headers={"Retry-After": "0"}, count=3))
    with pytest.raises(RateLimitError):
        hook.send_template(12, 46, "+14155550123")
    assert hook.request_may_have_reached_api is False  # refused three times: nothing went out
    sim.inject(Fault(endpoint="send_template", process=True, drop=True))
    with pytest.raises(SendOutcomeUnknownError):
        hook.send_template(12, 46, "+14155550123")
    assert hook.request_may_have_reached_api is True
    hook.get_senders()
    hook.send_template(12, 46, "+14155550123")
    assert hook.request_may_have_reached_api is True
    sim.inject(
        Fault(endpoint="send_template", status=422, body='{"success": false, "error_code": "SENDER_OFFLINE"}')
    )
    with pytest.raises(SenderOfflineError):
        hook.send_template(12, 46, "+14155550123")
    assert hook.request_may_have_reached_api is False
