"""The Autocalls simulator over real HTTP on 127.0.0.1: endpoints, errors, window, clock, limiter,
faults, control endpoints, CLI and pytest fixtures."""

from __future__ import annotations

import http.client
import json
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from airflow_provider_autocalls.testing import AutocallsSimulator, Fault
from airflow_provider_autocalls.testing.cli import build_parser
from airflow_provider_autocalls.testing.simulator_models import SlidingWindowLimiter

pytest_plugins = ["pytester"]

PHONE = "+15551234567"
SENDERS = "/user/whatsapp/senders"
SESSION = "/user/whatsapp/session-status"
SEND = "/user/whatsapp/send"
FREEFORM = "/user/whatsapp/send-freeform"

SENDER_12 = {
    "id": 12,
    "phone_number": "+14155551234",
    "display_name": "Acme Corp Support",
    "status": "online",
    "quality_rating": "GREEN",
    "messaging_limit": 10000,
    "messaging_limit_formatted": "10,000 / 24hr",
}
SENDER_15 = {
    "id": 15,
    "phone_number": "+442071234567",
    "display_name": "Acme Corp Sales",
    "status": "offline",
    "quality_rating": "GREEN",
    "messaging_limit": None,
    "messaging_limit_formatted": "Unlimited",
}
TEMPLATE_45 = {
    "id": 45,
    "name": "appointment_reminder",
    "language": "en",
    "category": "utility",
    "status": "approved",
    "body_text": "Hi {{1}}, your appointment is on {{2}} at {{3}}.",
    "variables": ["name", "date", "time"],
    "has_variables": True,
}
TEMPLATE_46 = {
    "id": 46,
    "name": "etl_finished",
    "language": "en",
    "category": "utility",
    "status": "approved",
    "body_text": "Your data is ready.",
    "variables": [],
    "has_variables": False,
}
TEMPLATE_49 = {
    "id": 49,
    "name": "etl_failed",
    "language": "en",
    "category": "utility",
    "status": "approved",
    "body_text": "Pipeline {{1}} failed. Please check Airflow.",
    "variables": ["pipeline"],
    "has_variables": True,
}
VARIABLES = {"1": "John", "2": "January 15, 2026", "3": "2:00 PM"}
SENDER_NOT_FOUND = {
    "success": False,
    "error": "Sender not found or does not belong to you",
    "error_code": "SENDER_NOT_FOUND",
}
TEMPLATE_NOT_FOUND = {
    "success": False,
    "error": "Template not found or does not belong to this sender",
    "error_code": "TEMPLATE_NOT_FOUND",
}
NO_BALANCE = {
    "success": False,
    "error": "Insufficient balance. Please top up your account.",
    "error_code": "INSUFFICIENT_BALANCE",
}
OFFLINE = {
    "success": False,
    "error": "Sender is not online. Current status: Offline",
    "error_code": "SENDER_OFFLINE",
}
CLOSED_EXPIRED = {
    "is_open": False,
    "can_send_freeform": False,
    "requires_template": True,
    "message": "Session expired. Send a template or wait for customer to reply.",
}
CLOSED_NEW = {**CLOSED_EXPIRED, "message": "No conversation yet. Send a template to start one."}
SESSION_EXPIRED_ERROR = (
    "The 24-hour messaging window is closed. Customer must reply first, or use a template message."
)
SID = re.compile(r"SM[0-9a-f]{32}")


def new_client(**kwargs: Any) -> httpx.Client:
    """A client without TLS set-up (building an SSL context costs ~15 ms per client)."""
    return httpx.Client(verify=False, **kwargs)


@pytest.fixture
def sim() -> Iterator[AutocallsSimulator]:
    with AutocallsSimulator(rate_limit=0) as simulator:
        yield simulator


@pytest.fixture
def api(sim: AutocallsSimulator) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {sim.api_key}"}
    with new_client(base_url=sim.url, headers=headers, timeout=5) as client:
        yield client


@pytest.fixture
def ctl(sim: AutocallsSimulator) -> Iterator[httpx.Client]:
    with new_client(base_url=sim.root_url, timeout=5) as client:
        yield client


def template_payload(**overrides: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "sender_id": 12,
        "template_id": 45,
        "recipient_phone": PHONE,
        "recipient_name": "John Doe",
        "variables": VARIABLES,
    }
    payload.update(overrides)
    return {k: v for k, v in payload.items() if v is not None}


def freeform_payload(**overrides: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {"sender_id": 12, "recipient_phone": PHONE, "message": "Your report is ready."}
    payload.update(overrides)
    return {k: v for k, v in payload.items() if v is not None}


def session(api: httpx.Client, sender_id: int = 12, phone: str = PHONE) -> dict[str, Any]:
    response = api.get(SESSION, params={"sender_id": sender_id, "recipient_phone": phone})
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


def parse_iso(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    assert moment.utcoffset() == timedelta(0)
    return moment


# -- senders --------------------------------------------------------------------------------------


def test_senders_lists_only_online_senders_by_default(api: httpx.Client) -> None:
    response = api.get(SENDERS)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"data": [SENDER_12]}
    assert api.get(SENDERS, params={"status": "online"}).json() == {"data": [SENDER_12]}


def test_senders_status_all_includes_offline_senders(api: httpx.Client) -> None:
    assert api.get(SENDERS, params={"status": "all"}).json() == {"data": [SENDER_12, SENDER_15]}


def test_senders_status_offline_lists_only_offline_senders(api: httpx.Client) -> None:
    assert api.get(SENDERS, params={"status": "offline"}).json() == {"data": [SENDER_15]}


@pytest.mark.parametrize("status", ["ONLINE", "any"])
def test_senders_refuse_other_status_values(api: httpx.Client, status: str) -> None:
    response = api.get(SENDERS, params={"status": status})
    assert response.status_code == 422
    assert response.json() == {
        "message": "The selected status is invalid.",
        "errors": {"status": ["The selected status is invalid."]},
    }


def test_added_sender_follows_its_status(sim: AutocallsSimulator, api: httpx.Client) -> None:
    sim.add_sender(20, "+15550001111", "Ops", messaging_limit=1500, quality_rating="YELLOW")
    listed = api.get(SENDERS).json()["data"]
    assert listed[-1] == {
        "id": 20,
        "phone_number": "+15550001111",
        "display_name": "Ops",
        "status": "online",
        "quality_rating": "YELLOW",
        "messaging_limit": 1500,
        "messaging_limit_formatted": "1,500 / 24hr",
    }
    sim.set_sender_status(20, "offline")
    assert [s["id"] for s in api.get(SENDERS).json()["data"]] == [12]
    sim.set_sender_status(15, "online")
    assert [s["id"] for s in api.get(SENDERS).json()["data"]] == [12, 15]


def test_sender_scripting_rejects_bad_input(sim: AutocallsSimulator) -> None:
    with pytest.raises(KeyError):
        sim.set_sender_status(99, "online")
    with pytest.raises(ValueError, match="status"):
        sim.set_sender_status(12, "away")
    with pytest.raises(ValueError, match="status"):
        sim.add_sender(21, "+15550001111", status="busy")


# -- templates ------------------------------------------------------------------------------------


def test_templates_list_approved_ones_by_default(api: httpx.Client) -> None:
    response = api.get(f"{SENDERS}/12/templates")
    assert response.status_code == 200
    assert response.json() == {"data": [TEMPLATE_45, TEMPLATE_46, TEMPLATE_49]}


@pytest.mark.parametrize(
    ("status", "ids"),
    [("approved", [45, 46, 49]), ("pending", [47]), ("rejected", [48]), ("all", [45, 46, 47, 48, 49])],
)
def test_templates_filter_by_status(api: httpx.Client, status: str, ids: list[int]) -> None:
    data = api.get(f"{SENDERS}/12/templates", params={"status": status}).json()["data"]
    assert [t["id"] for t in data] == ids
    assert all(t["status"] == status for t in data) or status == "all"


@pytest.mark.parametrize("sender", ["99", "abc"])
def test_templates_of_unknown_sender_are_404(api: httpx.Client, sender: str) -> None:
    response = api.get(f"{SENDERS}/{sender}/templates")
    assert response.status_code == 404
    assert response.json() == SENDER_NOT_FOUND


def test_templates_refuse_unknown_status(api: httpx.Client) -> None:
    response = api.get(f"{SENDERS}/12/templates", params={"status": "draft"})
    assert response.status_code == 422
    assert response.json()["errors"] == {"status": ["The selected status is invalid."]}


def test_templates_belong_to_their_sender(sim: AutocallsSimulator, api: httpx.Client) -> None:
    assert api.get(f"{SENDERS}/15/templates").json() == {"data": []}
    sim.add_template(15, 60, "invoice", "Invoice {{1}} is due.", status="approved", category="marketing")
    data = api.get(f"{SENDERS}/15/templates").json()["data"]
    assert data == [
        {
            "id": 60,
            "name": "invoice",
            "language": "en",
            "category": "marketing",
            "status": "approved",
            "body_text": "Invoice {{1}} is due.",
            "variables": [],
            "has_variables": True,
        }
    ]
    assert 60 not in [t["id"] for t in api.get(f"{SENDERS}/12/templates?status=all").json()["data"]]


def test_template_scripting_rejects_bad_input(sim: AutocallsSimulator) -> None:
    with pytest.raises(KeyError):
        sim.add_template(99, 70, "x", "x")
    with pytest.raises(ValueError, match="status"):
        sim.add_template(12, 70, "x", "x", status="draft")
    with pytest.raises(ValueError, match="category"):
        sim.add_template(12, 70, "x", "x", category="spam")


# -- auth, routing, records -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-key"},
        {"Authorization": "sim-key"},
        {"Authorization": "Basic sim-key"},
        {"Authorization": "Bearer"},
    ],
)
def test_missing_or_wrong_key_is_401(sim: AutocallsSimulator, headers: dict[str, str]) -> None:
    with new_client(base_url=sim.url, headers=headers) as client:
        response = client.post(SEND, json=template_payload())
    assert response.status_code == 401
    assert response.json() == {"message": "Unauthenticated."}
    assert sim.delivered == []
    assert [(r["status"], r["authorized"]) for r in sim.requests] == [(401, False)]


def test_the_key_is_never_echoed() -> None:
    secret = "s3cr3t-Value-42"
    with (
        AutocallsSimulator(api_key=secret, rate_limit=0) as other,
        new_client(base_url=other.url, headers={"Authorization": f"Bearer {secret}"}) as good,
        new_client(base_url=other.url, headers={"Authorization": "Bearer s3cr3t-Value-4"}) as bad,
    ):
        other.customer_message(12, PHONE)
        answers = [
            good.get(SENDERS),
            good.get(f"{SENDERS}/12/templates"),
            good.get(SESSION, params={"sender_id": 12, "recipient_phone": PHONE}),
            good.post(SEND, json=template_payload()),
            good.post(SEND, json={}),
            good.post(FREEFORM, json=freeform_payload()),
            good.get("/nope"),
            bad.get(SENDERS),
        ]
        records = json.dumps([other.requests, other.delivered])
    assert [a.status_code for a in answers] == [200, 200, 200, 200, 422, 200, 404, 401]
    for answer in answers:
        assert "s3cr3t" not in answer.text
        assert all("s3cr3t" not in v for v in answer.headers.values())
    assert "s3cr3t" not in records


def test_unknown_paths_are_404_before_auth(sim: AutocallsSimulator) -> None:
    with new_client(base_url=sim.root_url) as client:
        for path in ("/api/user/whatsapp/nope", "/api/user/whatsapp/senders/12", "/elsewhere"):
            response = client.get(path)
            assert response.status_code == 404
            assert response.json() == {"message": "Not Found"}
    assert [(r["endpoint"], r["status"]) for r in sim.requests] == [(None, 404)] * 3


@pytest.mark.parametrize(
    ("method", "path", "endpoint", "allowed"),
    [
        ("GET", SEND, "send_template", "POST"),
        ("GET", FREEFORM, "send_freeform", "POST"),
        ("POST", SENDERS, "senders", "GET"),
        ("DELETE", f"{SENDERS}/12/templates", "templates", "GET"),
    ],
)
def test_wrong_method_is_405(
    sim: AutocallsSimulator, api: httpx.Client, method: str, path: str, endpoint: str, allowed: str
) -> None:
    response = api.request(method, path)
    assert response.status_code == 405
    assert response.headers["allow"] == allowed
    assert response.json() == {
        "message": f"The {method} method is not supported for route api{path}. Supported methods: {allowed}."
    }
    assert sim.requests[-1]["endpoint"] == endpoint


def test_requests_are_recorded_in_order_as_copies(sim: AutocallsSimulator, api: httpx.Client) -> None:
    api.get(SENDERS, params={"status": "all"})
    api.post(SEND, json=template_payload())
    api.get(SESSION, params={"sender_id": "12", "recipient_phone": PHONE})
    records = sim.requests
    assert [r["endpoint"] for r in records] == ["senders", "send_template", "session_status"]
    first, second, third = records
    assert set(first) == {
        "method",
        "path",
        "endpoint",
        "query",
        "json",
        "status",
        "at",
        "authorized",
        "arrived",
    }
    assert first["method"] == "GET"
    assert first["path"] == "/api/user/whatsapp/senders"
    assert first["query"] == {"status": "all"}
    assert first["json"] is None
    assert first["authorized"] is True
    assert second["json"] == template_payload()
    assert second["status"] == 200
    assert third["query"] == {"sender_id": "12", "recipient_phone": PHONE}
    assert abs(parse_iso(first["at"]) - sim.now()) < timedelta(seconds=5)
    records[1]["json"]["sender_id"] = 999
    records.clear()
    assert sim.requests[1]["json"]["sender_id"] == 12


# -- session status and the 24 h window -----------------------------------------------------------


def test_session_status_without_conversation(api: httpx.Client) -> None:
    assert session(api) == {"success": True, "has_conversation": False, "session_status": CLOSED_NEW}


def test_inbound_message_opens_a_24h_window(sim: AutocallsSimulator, api: httpx.Client) -> None:
    sim.customer_message(12, PHONE, "Hello", name="John Doe")
    body = session(api)
    status = body.pop("session_status")
    last = parse_iso(body.pop("last_customer_message_at"))
    assert body == {
        "success": True,
        "has_conversation": True,
        "conversation_id": body["conversation_id"],
        "customer_name": "John Doe",
    }
    assert isinstance(body["conversation_id"], int)
    assert abs(last - sim.now()) < timedelta(seconds=5)
    assert parse_iso(status.pop("expires_at")) - last == timedelta(hours=24)
    assert status == {
        "is_open": True,
        "can_send_freeform": True,
        "requires_template": False,
        "message": "Session open (23 hr 59 min remaining). Unlimited free-form messages allowed.",
        "minutes_remaining": 1439,
    }


def test_window_expires_by_the_movable_clock(sim: AutocallsSimulator, api: httpx.Client) -> None:
    sim.customer_message(12, PHONE)
    opened = session(api)
    sim.advance(24 * 3600 - 90)
    almost = session(api)["session_status"]
    assert almost["minutes_remaining"] == 1
    assert almost["message"].startswith("Session open (0 hr 1 min remaining).")
    sim.advance(100)
    closed = session(api)
    assert closed == {
        "success": True,
        "has_conversation": True,
        "conversation_id": opened["conversation_id"],
        "customer_name": None,
        "last_customer_message_at": opened["last_customer_message_at"],
        "session_status": CLOSED_EXPIRED,
    }


def test_each_customer_message_resets_the_window(sim: AutocallsSimulator, api: httpx.Client) -> None:
    sim.customer_message(12, PHONE)
    first = session(api)
    sim.advance(23 * 3600)
    assert session(api)["session_status"]["minutes_remaining"] == 59
    sim.customer_message(12, PHONE, name="Jo")
    again = session(api)
    assert again["conversation_id"] == first["conversation_id"]
    assert again["customer_name"] == "Jo"
    assert again["session_status"]["minutes_remaining"] == 1439
    assert parse_iso(again["last_customer_message_at"]) > parse_iso(first["last_customer_message_at"])


def test_template_send_opens_the_window_without_a_customer_message(
    sim: AutocallsSimulator, api: httpx.Client
) -> None:
    sent = api.post(SEND, json=template_payload(recipient_name="Ann")).json()
    body = session(api)
    assert body["conversation_id"] == sent["conversation_id"]
    assert body["customer_name"] == "Ann"
    assert body["last_customer_message_at"] is None
    assert body["session_status"]["minutes_remaining"] == 1439


def test_template_send_extends_an_open_window(sim: AutocallsSimulator, api: httpx.Client) -> None:
    sim.customer_message(12, PHONE)
    last = session(api)["last_customer_message_at"]
    sim.advance(23 * 3600)
    assert api.post(SEND, json=template_payload()).status_code == 200
    body = session(api)
    assert body["last_customer_message_at"] == last
    assert body["session_status"]["minutes_remaining"] == 1439
    sim.advance(24 * 3600)
    assert session(api)["session_status"] == CLOSED_EXPIRED


def test_conversations_are_per_sender_and_recipient(sim: AutocallsSimulator, api: httpx.Client) -> None:
    sim.add_sender(20, "+15550001111")
    sim.customer_message(12, PHONE)
    sim.customer_message(20, PHONE)
    sim.customer_message(12, "+15559876543")
    ids = {session(api, 12)["conversation_id"], session(api, 20)["conversation_id"]}
    ids.add(session(api, 12, "+15559876543")["conversation_id"])
    assert len(ids) == 3
    assert session(api, 20, "+15559876543")["has_conversation"] is False


def test_session_status_validation(api: httpx.Client) -> None:
    response = api.get(SESSION)
    assert response.status_code == 422
    assert response.json() == {
        "message": "The sender id field is required. (and 1 more error)",
        "errors": {
            "sender_id": ["The sender id field is required."],
            "recipient_phone": ["The recipient phone field is required."],
        },
    }
    response = api.get(SESSION, params={"sender_id": "twelve", "recipient_phone": PHONE})
    assert response.status_code == 422
    assert response.json() == {
        "message": "The sender id field must be an integer.",
        "errors": {"sender_id": ["The sender id field must be an integer."]},
    }


def test_session_status_of_unknown_sender_is_404(api: httpx.Client) -> None:
    response = api.get(SESSION, params={"sender_id": 99, "recipient_phone": PHONE})
    assert response.status_code == 404
    assert response.json() == SENDER_NOT_FOUND


def test_unencoded_plus_in_the_query_is_a_space_as_in_php(sim: AutocallsSimulator, api: httpx.Client) -> None:
    sim.customer_message(12, PHONE)
    assert session(api)["has_conversation"] is True
    raw = api.get(f"{SESSION}?sender_id=12&recipient_phone={PHONE}")
    assert raw.json()["has_conversation"] is False


# -- send template --------------------------------------------------------------------------------


def test_send_template_success(sim: AutocallsSimulator, api: httpx.Client) -> None:
    response = api.post(SEND, json=template_payload())
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {
        "success",
        "conversation_id",
        "message_id",
        "whatsapp_message_id",
        "message_sid",
        "status",
    }
    assert body["success"] is True
    assert body["status"] == "queued"
    assert SID.fullmatch(body["message_sid"])
    assert all(isinstance(body[k], int) for k in ("conversation_id", "message_id", "whatsapp_message_id"))
    [delivered] = sim.delivered
    assert abs(parse_iso(delivered.pop("at")) - sim.now()) < timedelta(seconds=5)
    assert delivered == {
        "kind": "template",
        "sender_id": 12,
        "recipient_phone": PHONE,
        "recipient_name": "John Doe",
        "template_id": 45,
        "variables": VARIABLES,
        "text": "Hi John, your appointment is on January 15, 2026 at 2:00 PM.",
        "message_sid": body["message_sid"],
        "conversation_id": body["conversation_id"],
        "message_id": body["message_id"],
    }


@pytest.mark.parametrize(
    "variables",
    [
        {"name": "Ann", "date": "May 2", "time": "9:00"},
        {"1": "Ann", "date": "May 2", "3": "9:00"},
        {"3": "9:00", "1": "Ann", "2": "May 2"},
    ],
)
def test_variables_by_position_or_name(
    sim: AutocallsSimulator, api: httpx.Client, variables: dict[str, str]
) -> None:
    assert api.post(SEND, json=template_payload(variables=variables)).status_code == 200
    assert sim.delivered[0]["text"] == "Hi Ann, your appointment is on May 2 at 9:00."


def test_numbers_as_variable_values_and_ids_as_strings(sim: AutocallsSimulator, api: httpx.Client) -> None:
    payload = template_payload(sender_id="12", template_id="45", variables={"1": 7, "2": 2.5, "3": "x"})
    assert api.post(SEND, json=payload).status_code == 200
    assert sim.delivered[0]["text"] == "Hi 7, your appointment is on 2.5 at x."


def test_template_without_variables(sim: AutocallsSimulator, api: httpx.Client) -> None:
    response = api.post(SEND, json=template_payload(template_id=46, variables=None, recipient_name=None))
    assert response.status_code == 200
    [delivered] = sim.delivered
    assert delivered["text"] == "Your data is ready."
    assert delivered["variables"] is None
    assert delivered["recipient_name"] is None


def test_sends_reuse_the_conversation_and_number_messages(api: httpx.Client) -> None:
    first = api.post(SEND, json=template_payload()).json()
    second = api.post(SEND, json=template_payload()).json()
    other = api.post(SEND, json=template_payload(recipient_phone="+15559876543")).json()
    assert first["conversation_id"] == second["conversation_id"] != other["conversation_id"]
    assert len({first["message_id"], second["message_id"], other["message_id"]}) == 3
    assert len({first["whatsapp_message_id"], second["whatsapp_message_id"]}) == 2
    assert first["message_sid"] != second["message_sid"]


@pytest.mark.parametrize(
    ("payload", "errors"),
    [
        (
            {},
            {
                "sender_id": ["The sender id field is required."],
                "template_id": ["The template id field is required."],
                "recipient_phone": ["The recipient phone field is required."],
            },
        ),
        (template_payload(sender_id="abc"), {"sender_id": ["The sender id field must be an integer."]}),
        (template_payload(template_id=True), {"template_id": ["The template id field must be an integer."]}),
        (template_payload(template_id=4.5), {"template_id": ["The template id field must be an integer."]}),
        (
            template_payload(recipient_phone=15551234567),
            {"recipient_phone": ["The recipient phone field must be a string."]},
        ),
        (
            template_payload(recipient_phone="  "),
            {"recipient_phone": ["The recipient phone field is required."]},
        ),
        (
            template_payload(recipient_name="x" * 256),
            {"recipient_name": ["The recipient name field must not be greater than 255 characters."]},
        ),
        (template_payload(variables="John"), {"variables": ["The variables field must be an array."]}),
        (
            template_payload(variables={"1": None, "2": "b", "3": ["c"]}),
            {
                "variables.1": ["The variables.1 field must be a string."],
                "variables.3": ["The variables.3 field must be a string."],
            },
        ),
    ],
)
def test_send_template_validation(
    sim: AutocallsSimulator, api: httpx.Client, payload: dict[str, Any], errors: dict[str, list[str]]
) -> None:
    response = api.post(SEND, json=payload)
    assert response.status_code == 422
    messages = [m for ms in errors.values() for m in ms]
    more = len(messages) - 1
    suffix = f" (and {more} more error{'s' if more > 1 else ''})" if more else ""
    assert response.json() == {"message": messages[0] + suffix, "errors": errors}
    assert sim.delivered == []


def test_unreadable_json_counts_as_no_input(api: httpx.Client) -> None:
    response = api.post(SEND, content=b"{not json", headers={"Content-Type": "application/json"})
    assert response.status_code == 422
    assert set(response.json()["errors"]) == {"sender_id", "template_id", "recipient_phone"}


def test_recipient_name_of_255_characters_is_fine(api: httpx.Client) -> None:
    assert api.post(SEND, json=template_payload(recipient_name="x" * 255)).status_code == 200


def test_send_template_unknown_sender_comes_first(api: httpx.Client) -> None:
    response = api.post(SEND, json=template_payload(sender_id=99, template_id=999))
    assert response.status_code == 404
    assert response.json() == SENDER_NOT_FOUND


def test_send_template_unknown_or_foreign_template(sim: AutocallsSimulator, api: httpx.Client) -> None:
    sim.add_sender(20, "+15550001111")
    sim.add_template(20, 60, "other", "Hello.")
    for template_id in (999, 60):
        response = api.post(SEND, json=template_payload(template_id=template_id))
        assert response.status_code == 404
        assert response.json() == TEMPLATE_NOT_FOUND


def test_balance_comes_before_offline_and_template_and_phone(
    sim: AutocallsSimulator, api: httpx.Client
) -> None:
    sim.balance = 0
    sim.set_sender_status(12, "offline")
    response = api.post(SEND, json=template_payload(template_id=47, recipient_phone="bad"))
    assert response.status_code == 402
    assert response.json() == NO_BALANCE


def test_offline_sender_is_422_on_send_template(sim: AutocallsSimulator, api: httpx.Client) -> None:
    sim.set_sender_status(12, "offline")
    response = api.post(SEND, json=template_payload(template_id=47, recipient_phone="bad"))
    assert response.status_code == 422
    assert response.json() == OFFLINE


@pytest.mark.parametrize(("template_id", "status"), [(47, "pending"), (48, "rejected")])
def test_unapproved_template_is_422(api: httpx.Client, template_id: int, status: str) -> None:
    response = api.post(SEND, json=template_payload(template_id=template_id, recipient_phone="bad"))
    assert response.status_code == 422
    assert response.json() == {
        "success": False,
        "error": f"Template is not approved. Current status: {status}",
        "error_code": "TEMPLATE_NOT_APPROVED",
    }


@pytest.mark.parametrize(
    "phone",
    [
        "15551234567",
        "+05551234567",
        "+123456",
        "+1234567890123456",
        "+1 555 123 4567",
        "+1555123456a",
        "+15551234567\n",
        "00441234567890",
    ],
)
def test_invalid_phone_is_422_before_variables(
    sim: AutocallsSimulator, api: httpx.Client, phone: str
) -> None:
    response = api.post(SEND, json=template_payload(recipient_phone=phone, variables={"9": "x"}))
    assert response.status_code == 422
    body = response.json()
    assert body["error_code"] == "INVALID_PHONE"
    assert body["success"] is False
    assert "+1234567890" in body["error"]
    assert sim.delivered == []


@pytest.mark.parametrize("phone", ["+1234567", "+123456789012345", "+442071234567"])
def test_e164_bounds_are_accepted(api: httpx.Client, phone: str) -> None:
    assert api.post(SEND, json=template_payload(recipient_phone=phone)).status_code == 200


@pytest.mark.parametrize(
    ("template_id", "variables", "problem"),
    [
        (45, {"1": "Jo", "2": "Mon"}, "{{3}} (time)"),
        (45, None, "{{1}} (name)"),
        (45, {"1": " ", "2": "Mon", "3": "9"}, "{{1}}"),
        (45, {**VARIABLES, "4": "x"}, "'4'"),
        (45, {**VARIABLES, "01": "x"}, "'01'"),
        (45, {**VARIABLES, "nickname": "x"}, "'nickname'"),
        (45, {**VARIABLES, "name": "x"}, "{{1}} is given twice"),
        (45, ["Jo", "Mon", "9"], "'0'"),
        (46, {"1": "x"}, "takes no variables"),
    ],
)
def test_variables_that_do_not_fit_are_template_mismatch(
    sim: AutocallsSimulator,
    api: httpx.Client,
    template_id: int,
    variables: Any,
    problem: str,
) -> None:
    sim.balance = 5
    payload = template_payload(template_id=template_id, variables=variables)
    if variables is None:
        payload.pop("variables", None)
    response = api.post(SEND, json=payload)
    assert response.status_code == 422
    body = response.json()
    assert (body["success"], body["error_code"]) == (False, "TEMPLATE_MISMATCH")
    assert problem in body["error"]
    assert sim.delivered == []
    assert sim.balance == 5
    assert session(api)["has_conversation"] is False


# -- balance --------------------------------------------------------------------------------------


def test_balance_counts_down_and_then_refuses_both_sends(sim: AutocallsSimulator, api: httpx.Client) -> None:
    sim.balance = 2
    assert api.post(SEND, json=template_payload()).status_code == 200
    assert sim.balance == 1
    assert api.post(FREEFORM, json=freeform_payload()).status_code == 200
    assert sim.balance == 0
    for path, payload in ((SEND, template_payload()), (FREEFORM, freeform_payload())):
        response = api.post(path, json=payload)
        assert response.status_code == 402
        assert response.json() == NO_BALANCE
    assert len(sim.delivered) == 2
    sim.balance = None
    assert api.post(SEND, json=template_payload()).status_code == 200
    assert sim.balance is None


@pytest.mark.parametrize("value", [-1, 1.5, True, "3"])
def test_balance_setter_validates(sim: AutocallsSimulator, value: Any) -> None:
    with pytest.raises(ValueError, match="balance"):
        sim.balance = value


# -- send freeform --------------------------------------------------------------------------------


def test_freeform_without_conversation_is_403(sim: AutocallsSimulator, api: httpx.Client) -> None:
    response = api.post(FREEFORM, json=freeform_payload())
    assert response.status_code == 403
    assert response.json() == {
        "success": False,
        "error": SESSION_EXPIRED_ERROR,
        "error_code": "SESSION_EXPIRED",
        "session_status": CLOSED_NEW,
    }
    assert sim.delivered == []


def test_freeform_in_an_open_window(sim: AutocallsSimulator, api: httpx.Client) -> None:
    sim.customer_message(12, PHONE)
    sim.advance(3600)
    response = api.post(FREEFORM, json=freeform_payload(message="Done ✓"))
    assert response.status_code == 200
    body = response.json()
    status = body.pop("session_status")
    assert set(body) == {"success", "conversation_id", "message_id", "whatsapp_message_id", "message_sid"}
    assert body["success"] is True
    assert SID.fullmatch(body["message_sid"])
    assert body["conversation_id"] == session(api)["conversation_id"]
    # A freeform message never extends the window: 23 h minus the test's own milliseconds.
    assert status["minutes_remaining"] == 22 * 60 + 59
    assert status["message"] == "Session open (22 hr 59 min remaining). Unlimited free-form messages allowed."
    assert status["is_open"] is True
    [delivered] = sim.delivered
    assert (delivered["kind"], delivered["text"], delivered["template_id"]) == ("freeform", "Done ✓", None)
    assert delivered["message_sid"] == body["message_sid"]


def test_freeform_after_the_window_closed_is_403_as_documented(
    sim: AutocallsSimulator, api: httpx.Client
) -> None:
    sim.customer_message(12, PHONE)
    sim.advance(24 * 3600)
    response = api.post(FREEFORM, json=freeform_payload())
    assert response.status_code == 403
    assert response.json() == {
        "success": False,
        "error": SESSION_EXPIRED_ERROR,
        "error_code": "SESSION_EXPIRED",
        "session_status": CLOSED_EXPIRED,
    }


def test_freeform_after_a_template_send(api: httpx.Client) -> None:
    assert api.post(FREEFORM, json=freeform_payload()).status_code == 403
    assert api.post(SEND, json=template_payload()).status_code == 200
    assert api.post(FREEFORM, json=freeform_payload()).status_code == 200


def test_freeform_offline_sender_is_503_before_the_window(sim: AutocallsSimulator, api: httpx.Client) -> None:
    sim.set_sender_status(12, "offline")
    response = api.post(FREEFORM, json=freeform_payload())
    assert response.status_code == 503
    assert response.json() == OFFLINE


def test_freeform_balance_before_offline(sim: AutocallsSimulator, api: httpx.Client) -> None:
    sim.balance = 0
    sim.set_sender_status(12, "offline")
    response = api.post(FREEFORM, json=freeform_payload())
    assert (response.status_code, response.json()) == (402, NO_BALANCE)


def test_freeform_unknown_sender_is_404(api: httpx.Client) -> None:
    response = api.post(FREEFORM, json=freeform_payload(sender_id=99))
    assert (response.status_code, response.json()) == (404, SENDER_NOT_FOUND)


@pytest.mark.parametrize(
    ("payload", "errors"),
    [
        (
            {},
            {
                "sender_id": ["The sender id field is required."],
                "recipient_phone": ["The recipient phone field is required."],
                "message": ["The message field is required."],
            },
        ),
        (freeform_payload(message=""), {"message": ["The message field is required."]}),
        (freeform_payload(message=42), {"message": ["The message field must be a string."]}),
        (
            freeform_payload(message="x" * 4097),
            {"message": ["The message field must not be greater than 4096 characters."]},
        ),
    ],
)
def test_freeform_validation(
    api: httpx.Client, payload: dict[str, Any], errors: dict[str, list[str]]
) -> None:
    response = api.post(FREEFORM, json=payload)
    assert response.status_code == 422
    assert response.json()["errors"] == errors


def test_freeform_of_4096_characters_is_fine(sim: AutocallsSimulator, api: httpx.Client) -> None:
    sim.customer_message(12, PHONE)
    assert api.post(FREEFORM, json=freeform_payload(message="é" * 4096)).status_code == 200


def test_freeform_invalid_phone_is_checked_after_the_window(
    sim: AutocallsSimulator, api: httpx.Client
) -> None:
    assert api.post(FREEFORM, json=freeform_payload(recipient_phone="12345")).status_code == 403
    sim.customer_message(12, "12345")
    response = api.post(FREEFORM, json=freeform_payload(recipient_phone="12345"))
    assert response.status_code == 422
    assert response.json()["error_code"] == "INVALID_PHONE"


# -- clock ----------------------------------------------------------------------------------------


def test_clock_is_utc_real_time_plus_offset(sim: AutocallsSimulator) -> None:
    now = sim.now()
    assert now.tzinfo is not None
    assert now.utcoffset() == timedelta(0)
    assert abs(now - datetime.now(UTC)) < timedelta(seconds=5)
    moved = sim.advance(7200)
    assert timedelta(hours=2) <= moved - now < timedelta(hours=2, seconds=5)
    assert abs(sim.now() - datetime.now(UTC) - timedelta(hours=2)) < timedelta(seconds=5)
    with pytest.raises(ValueError, match="forward"):
        sim.advance(-1)


# -- rate limiter ---------------------------------------------------------------------------------


def test_limiter_is_a_strict_sliding_window() -> None:
    limiter = SlidingWindowLimiter()
    assert limiter.acquire("k", 2, 0.0) is None
    assert limiter.acquire("k", 2, 0.3) is None
    assert limiter.acquire("k", 2, 0.5) == 1
    assert limiter.acquire("other", 2, 0.5) is None
    assert limiter.acquire("k", 2, 0.99) == 1
    # The hit at 0.0 leaves the window at exactly 1.0; the one at 0.3 stays until 1.3.
    assert limiter.acquire("k", 2, 1.0) is None
    assert limiter.acquire("k", 2, 1.2) == 1
    assert limiter.acquire("k", 2, 1.31) is None


def test_refused_requests_do_not_count_and_retry_after_rounds_up() -> None:
    limiter = SlidingWindowLimiter()
    assert limiter.acquire("k", 1, 10.0) is None
    assert limiter.acquire("k", 1, 10.1) == 1
    assert limiter.acquire("k", 1, 10.9) == 1
    assert limiter.acquire("k", 1, 11.0) is None
    assert limiter.acquire("k", 0, 11.0) is None
    assert limiter.acquire("k", None, 11.0) is None
    # A fractional limit admits the next whole request (3 in a second at 2.5/s).
    assert [limiter.acquire("f", 2.5, 0.1 * i) for i in range(4)] == [None, None, None, 1]


def test_rate_limit_over_http(sim: AutocallsSimulator, api: httpx.Client) -> None:
    sim.rate_limit = 3
    # The limit is per key, whatever the endpoint.
    answers = [api.get(SENDERS), api.get(f"{SENDERS}/12/templates"), api.post(SEND, json=template_payload())]
    assert [a.status_code for a in answers] == [200, 200, 200]
    refused = api.post(SEND, json=template_payload())
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "1"
    assert refused.json() == {"message": "Too Many Attempts."}
    assert sim.rate_limited_count == 1
    assert sim.requests[-1]["status"] == 429
    assert len(sim.delivered) == 1


def test_limiter_uses_the_monotonic_clock_not_the_movable_one(
    sim: AutocallsSimulator, api: httpx.Client
) -> None:
    fake = [100.0]
    sim._state.monotonic = lambda: fake[0]
    sim.rate_limit = 2
    assert [api.get(SENDERS).status_code for _ in range(3)] == [200, 200, 429]
    sim.advance(3600)
    assert api.get(SENDERS).status_code == 429
    fake[0] = 100.5
    assert api.get(SENDERS).status_code == 429
    fake[0] = 101.0
    assert [api.get(SENDERS).status_code for _ in range(3)] == [200, 200, 429]
    assert sim.rate_limited_count == 4


def test_unauthorized_and_control_requests_are_not_limited(
    sim: AutocallsSimulator, api: httpx.Client, ctl: httpx.Client
) -> None:
    sim.rate_limit = 1
    with new_client(base_url=sim.url, headers={"Authorization": "Bearer nope"}) as intruder:
        assert {intruder.get(SENDERS).status_code for _ in range(5)} == {401}
    assert {ctl.get("/_sim/state").status_code for _ in range(10)} == {200}
    assert api.get(SENDERS).status_code == 200
    assert api.get(SENDERS).status_code == 429
    assert len(sim.requests) == 7


def test_rate_limit_zero_or_none_is_unlimited(sim: AutocallsSimulator, api: httpx.Client) -> None:
    for value in (0, None):
        sim.rate_limit = value
        assert {api.get(SENDERS).status_code for _ in range(20)} == {200}
    with pytest.raises(ValueError, match="rate_limit"):
        sim.rate_limit = -1


def test_default_rate_limit_is_five_per_second() -> None:
    with AutocallsSimulator() as limited, new_client(base_url=limited.url) as client:
        assert limited.rate_limit == 5.0
        headers = {"Authorization": "Bearer sim-key"}
        codes = [client.get(SENDERS, headers=headers).status_code for _ in range(6)]
    assert codes == [200] * 5 + [429]


# -- faults ---------------------------------------------------------------------------------------


def test_status_fault_replaces_the_answer_without_processing(
    sim: AutocallsSimulator, api: httpx.Client
) -> None:
    sim.inject(Fault(status=500))
    response = api.post(SEND, json=template_payload())
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"message": "Internal Server Error"}
    assert sim.delivered == []
    assert api.post(SEND, json=template_payload()).status_code == 200
    assert [r["status"] for r in sim.requests] == [500, 200]


def test_429_fault_with_retry_after_only_hits_its_endpoint(
    sim: AutocallsSimulator, api: httpx.Client
) -> None:
    sim.inject(Fault(endpoint="send_template", status=429, headers={"Retry-After": "1"}))
    assert api.get(SENDERS).status_code == 200
    response = api.post(SEND, json=template_payload())
    assert response.status_code == 429
    assert response.headers["retry-after"] == "1"
    assert response.json() == {"message": "Too Many Attempts."}
    assert sim.rate_limited_count == 0
    assert api.post(SEND, json=template_payload()).status_code == 200


@pytest.mark.parametrize(
    ("status", "body", "content_type"),
    [
        (502, "<html><body>Bad Gateway</body></html>", "text/html; charset=utf-8"),
        (503, "", "application/json"),
        (500, '{"success": tr', "application/json"),
    ],
)
def test_fault_raw_bodies(
    sim: AutocallsSimulator, api: httpx.Client, status: int, body: str, content_type: str
) -> None:
    sim.inject(Fault(status=status, body=body, headers={"X-Trace": "abc"}))
    response = api.post(SEND, json=template_payload())
    assert response.status_code == status
    assert response.text == body
    assert response.headers["content-type"] == content_type
    assert response.headers["content-length"] == str(len(body.encode()))
    assert response.headers["x-trace"] == "abc"
    assert sim.delivered == []


def test_fault_headers_can_override_the_content_type(sim: AutocallsSimulator, api: httpx.Client) -> None:
    sim.inject(Fault(status=500, body="oops", headers={"Content-Type": "text/plain"}))
    response = api.get(SENDERS)
    assert (response.status_code, response.text, response.headers["content-type"]) == (
        500,
        "oops",
        "text/plain",
    )


def test_processed_fault_delivers_then_answers_the_fault(sim: AutocallsSimulator, api: httpx.Client) -> None:
    sim.balance = 3
    sim.inject(Fault(endpoint="send_template", status=500, process=True))
    response = api.post(SEND, json=template_payload())
    assert response.status_code == 500
    assert len(sim.delivered) == 1
    assert sim.balance == 2
    assert sim.requests[-1]["status"] == 500


def test_drop_closes_the_connection_without_processing(sim: AutocallsSimulator, api: httpx.Client) -> None:
    sim.inject(Fault(endpoint="send_template", drop=True))
    with pytest.raises(httpx.RemoteProtocolError):
        api.post(SEND, json=template_payload())
    assert sim.delivered == []
    assert sim.requests[-1]["status"] == 0
    assert api.post(SEND, json=template_payload()).status_code == 200


def test_processed_drop_delivers_but_never_answers(sim: AutocallsSimulator, api: httpx.Client) -> None:
    sim.inject(Fault(endpoint="send_freeform", drop=True, process=True))
    sim.customer_message(12, PHONE)
    with pytest.raises(httpx.RemoteProtocolError):
        api.post(FREEFORM, json=freeform_payload())
    assert [d["kind"] for d in sim.delivered] == ["freeform"]
    assert sim.requests[-1]["status"] == 0


def test_delay_only_fault_is_a_slow_normal_answer(sim: AutocallsSimulator, api: httpx.Client) -> None:
    sim.inject(Fault(endpoint="send_template", delay=0.2))
    started = time.monotonic()
    response = api.post(SEND, json=template_payload())
    assert time.monotonic() - started >= 0.2
    assert response.status_code == 200
    assert len(sim.delivered) == 1


def test_slow_answer_past_the_client_timeout_still_delivers(sim: AutocallsSimulator) -> None:
    sim.inject(Fault(endpoint="send_template", delay=0.5))
    with new_client(base_url=sim.url, headers={"Authorization": "Bearer sim-key"}, timeout=0.1) as client:
        with pytest.raises(httpx.ReadTimeout):
            client.post(SEND, json=template_payload())
        assert client.get(SENDERS).status_code == 200
    assert len(sim.delivered) == 1


@pytest.mark.parametrize(
    ("fault", "first_answer", "second_answer"),
    [
        # The API counted the slow request on arrival; its answer is late, but it holds the window.
        (Fault(endpoint="senders", delay=0.3), 200, 429),
        # The request is slow to arrive: the one sent after it gets there first and is counted first.
        (Fault(endpoint="senders", arrival_delay=0.3), 429, 200),
    ],
)
def test_delay_counts_on_arrival_and_arrival_delay_after_it(
    sim: AutocallsSimulator, fault: Fault, first_answer: int, second_answer: int
) -> None:
    sim.rate_limit = 1
    sim.inject(fault)
    answers: dict[str, int] = {}

    def call(name: str) -> None:
        with httpx.Client(base_url=sim.url, headers={"Authorization": "Bearer sim-key"}) as client:
            answers[name] = client.get(SENDERS).status_code

    first = threading.Thread(target=call, args=("first",))
    first.start()
    time.sleep(0.1)  # the first request has left (and, without arrival_delay, arrived)
    call("second")
    first.join()
    assert (answers["first"], answers["second"]) == (first_answer, second_answer)
    arrived = [r["arrived"] for r in sim.requests]
    assert arrived == sorted(arrived)  # records are in the order the limiter counted them


def test_delay_before_a_status_fault(api: httpx.Client, sim: AutocallsSimulator) -> None:
    sim.inject(Fault(status=503, delay=0.1))
    started = time.monotonic()
    assert api.get(SENDERS).status_code == 503
    assert time.monotonic() - started >= 0.1


def test_fault_count_and_fifo_order(sim: AutocallsSimulator, api: httpx.Client) -> None:
    sim.inject(Fault(status=503, count=2))
    sim.inject(Fault(status=500))
    assert [api.get(SENDERS).status_code for _ in range(4)] == [503, 503, 500, 200]


def test_a_fault_for_another_endpoint_is_skipped_not_consumed(
    sim: AutocallsSimulator, api: httpx.Client
) -> None:
    sim.inject(Fault(endpoint="send_template", status=500))
    sim.inject(Fault(endpoint=None, status=503))
    assert api.get(SENDERS).status_code == 503
    assert api.get(SENDERS).status_code == 200
    assert api.post(SEND, json=template_payload()).status_code == 500


def test_unprocessed_fault_comes_before_auth_and_routing(sim: AutocallsSimulator) -> None:
    sim.inject(Fault(status=500, count=2))
    assert httpx.get(sim.url + SENDERS).status_code == 500
    assert httpx.get(sim.url + "/nope").status_code == 500
    assert [(r["authorized"], r["endpoint"]) for r in sim.requests] == [(False, "senders"), (False, None)]


def test_headers_only_fault_decorates_the_real_answer(sim: AutocallsSimulator, api: httpx.Client) -> None:
    sim.inject(Fault(endpoint="senders", headers={"X-Request-Id": "r-1"}))
    response = api.get(SENDERS)
    assert (response.status_code, response.headers["x-request-id"]) == (200, "r-1")
    assert response.json() == {"data": [SENDER_12]}


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"endpoint": "send"}, "endpoint"),
        ({"status": 99}, "status"),
        ({"delay": -1}, "delay"),
        ({"count": 0}, "count"),
    ],
)
def test_fault_validates_its_fields(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Fault(**kwargs)


# -- control endpoints ----------------------------------------------------------------------------


def test_control_inbound_and_advance(sim: AutocallsSimulator, api: httpx.Client, ctl: httpx.Client) -> None:
    response = ctl.post("/_sim/inbound", json={"sender_id": 12, "recipient_phone": PHONE, "name": "Zoe"})
    assert (response.status_code, response.json()["ok"]) == (200, True)
    assert abs(parse_iso(response.json()["at"]) - sim.now()) < timedelta(seconds=5)
    assert session(api)["customer_name"] == "Zoe"
    moved = ctl.post("/_sim/advance", json={"seconds": 86400})
    assert moved.status_code == 200
    assert abs(parse_iso(moved.json()["now"]) - sim.now()) < timedelta(seconds=5)
    assert parse_iso(moved.json()["now"]) - datetime.now(UTC) > timedelta(hours=23)
    assert session(api)["session_status"] == CLOSED_EXPIRED


def test_control_faults(sim: AutocallsSimulator, api: httpx.Client, ctl: httpx.Client) -> None:
    fault = {"endpoint": "send_template", "status": 429, "headers": {"Retry-After": "2"}, "count": 2}
    assert ctl.post("/_sim/faults", json=fault).json() == {"ok": True}
    assert ctl.post("/_sim/faults", json={"endpoint": "senders", "drop": True}).status_code == 200
    assert [api.post(SEND, json=template_payload()).headers.get("retry-after") for _ in range(2)] == [
        "2",
        "2",
    ]
    with pytest.raises(httpx.RemoteProtocolError):
        api.get(SENDERS)
    assert api.post(SEND, json=template_payload()).status_code == 200


@pytest.mark.parametrize(
    "payload",
    [{"endpoint": "nope"}, {"status": "500"}, {"colour": "red"}, {"headers": {"A": 1}}, {"count": 0}, []],
)
def test_control_faults_reject_bad_input(ctl: httpx.Client, payload: Any) -> None:
    response = ctl.post("/_sim/faults", json=payload)
    assert response.status_code == 400
    assert response.json()["error"]


def test_control_config_and_senders(sim: AutocallsSimulator, api: httpx.Client, ctl: httpx.Client) -> None:
    assert ctl.post("/_sim/config", json={"rate_limit": 2.5, "balance": 1}).json() == {"ok": True}
    assert (sim.rate_limit, sim.balance) == (2.5, 1)
    assert ctl.post("/_sim/config", json={"balance": None, "rate_limit": 0}).status_code == 200
    assert (sim.rate_limit, sim.balance) == (0.0, None)
    assert ctl.post("/_sim/config", json={"balance": -3}).status_code == 400
    assert ctl.post("/_sim/senders", json={"id": 15, "status": "online"}).json() == {"ok": True}
    assert [s["id"] for s in api.get(SENDERS).json()["data"]] == [12, 15]
    assert ctl.post("/_sim/senders", json={"id": 99, "status": "online"}).status_code == 404
    assert ctl.post("/_sim/senders", json={"id": 12, "status": "gone"}).status_code == 400


def test_control_reads(sim: AutocallsSimulator, api: httpx.Client, ctl: httpx.Client) -> None:
    api.post(SEND, json=template_payload())
    requests = ctl.get("/_sim/requests").json()["requests"]
    messages = ctl.get("/_sim/messages").json()["messages"]
    assert requests == sim.requests
    assert messages == sim.delivered
    assert len(requests) == len(messages) == 1
    state = ctl.get("/_sim/state").json()
    assert abs(parse_iso(state.pop("now")) - sim.now()) < timedelta(seconds=5)
    assert state == {
        "rate_limit": 0.0,
        "balance": None,
        "requests": 1,
        "messages": 1,
        "pending_faults": 0,
        "conversations": 1,
        "rate_limited": 0,
    }
    assert len(sim.requests) == 1


def test_control_errors(ctl: httpx.Client) -> None:
    assert ctl.get("/_sim/nope").status_code == 404
    assert ctl.get("/_sim/reset").status_code == 405
    assert ctl.post("/_sim/state").status_code == 405
    assert ctl.post("/_sim/inbound", json={"sender_id": 99, "recipient_phone": PHONE}).status_code == 404
    assert ctl.post("/_sim/inbound", json={"recipient_phone": PHONE}).status_code == 400
    assert ctl.post("/_sim/advance", json={"seconds": -5}).status_code == 400
    assert ctl.post("/_sim/advance", json={}).status_code == 400


# -- reset ----------------------------------------------------------------------------------------


def test_reset_restores_the_initial_state(
    sim: AutocallsSimulator, api: httpx.Client, ctl: httpx.Client
) -> None:
    sim.rate_limit = 1
    sim.add_sender(20, "+15550001111")
    sim.set_sender_status(15, "online")
    sim.customer_message(12, PHONE)
    api.post(SEND, json=template_payload())
    api.get(SENDERS)
    sim.balance = 7
    sim.advance(1000)
    sim.inject(Fault(status=500))
    assert (sim.rate_limited_count, len(sim.delivered)) == (1, 1)

    assert ctl.post("/_sim/reset").json() == {"ok": True}

    assert (sim.requests, sim.delivered, sim.rate_limited_count, sim.balance) == ([], [], 0, None)
    assert abs(sim.now() - datetime.now(UTC)) < timedelta(seconds=5)
    assert sim.rate_limit == 1.0
    # Limiter history, faults, conversations and senders are back to the seed.
    assert api.get(SENDERS, params={"status": "all"}).json() == {"data": [SENDER_12, SENDER_15]}
    sim.reset()
    assert (
        api.get(SESSION, params={"sender_id": 12, "recipient_phone": PHONE}).json()["has_conversation"]
        is False
    )


def test_unseeded_simulator_is_empty_also_after_reset() -> None:
    with (
        AutocallsSimulator(seed=False, rate_limit=0) as bare,
        new_client(base_url=bare.url, headers={"Authorization": "Bearer sim-key"}) as client,
    ):
        assert client.get(SENDERS, params={"status": "all"}).json() == {"data": []}
        bare.add_sender(1, "+15550001111")
        bare.reset()
        assert client.get(SENDERS, params={"status": "all"}).json() == {"data": []}


# -- HTTP details and lifecycle -------------------------------------------------------------------


def test_keep_alive_json_and_content_length(sim: AutocallsSimulator) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", sim.port, timeout=5)
    headers = {"Authorization": "Bearer sim-key", "Content-Type": "application/json"}
    for _ in range(3):
        connection.request("GET", "/api" + SENDERS, headers=headers)
        response = connection.getresponse()
        body = response.read()
        assert response.version == 11
        assert response.getheader("Content-Type") == "application/json"
        assert response.getheader("Content-Length") == str(len(body))
        assert response.getheader("Connection") is None
    sock = connection.sock
    connection.request("POST", "/api" + SEND, body=json.dumps(template_payload()), headers=headers)
    assert connection.getresponse().status == 200
    assert connection.sock is sock
    connection.close()


def test_chunked_request_body(sim: AutocallsSimulator, api: httpx.Client) -> None:
    raw = json.dumps(template_payload()).encode()
    chunks = iter([raw[:10], raw[10:]])
    response = api.post(SEND, content=chunks, headers={"Content-Type": "application/json"})
    assert response.status_code == 200
    assert sim.requests[-1]["json"] == template_payload()


def test_concurrent_sends_are_consistent(sim: AutocallsSimulator) -> None:
    results: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        with new_client(base_url=sim.url, headers={"Authorization": "Bearer sim-key"}) as client:
            for _ in range(25):
                response = client.post(SEND, json=template_payload())
                with lock:
                    results.append(response.json()["message_id"])

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == len(set(results)) == 200
    assert len(sim.delivered) == len(sim.requests) == 200


def test_hot_path_is_fast_on_keep_alive(api: httpx.Client) -> None:
    # 200 requests take ~0.1 s; Nagle/delayed-ACK stalls (40 ms each) would take 8 s.
    started = time.monotonic()
    for _ in range(200):
        api.get(SENDERS)
    assert time.monotonic() - started < 2.0


def _get_status(connection: http.client.HTTPConnection, path: str, headers: dict[str, str]) -> int:
    connection.request("GET", path, headers=headers)
    response = connection.getresponse()
    response.read()
    return response.status


def test_lifecycle() -> None:
    simulator = AutocallsSimulator(rate_limit=0)
    assert (simulator.host, simulator.port, simulator.running) == ("127.0.0.1", 0, False)
    with pytest.raises(RuntimeError):
        _ = simulator.url
    headers = {"Authorization": "Bearer sim-key"}
    with simulator as started:
        assert started is simulator
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/api", simulator.url)
        assert simulator.port > 0
        with pytest.raises(RuntimeError):
            simulator.start()
        kept_alive = http.client.HTTPConnection("127.0.0.1", simulator.port, timeout=5)
        assert _get_status(kept_alive, "/api" + SENDERS, headers) == 200
    assert not simulator.running
    simulator.stop()
    try:
        # The open keep-alive connection is cut too, not only the listening socket.
        with pytest.raises((http.client.HTTPException, OSError)):
            _get_status(kept_alive, "/api" + SENDERS, headers)
    finally:
        kept_alive.close()
    with pytest.raises(httpx.ConnectError):
        httpx.get(simulator.url + SENDERS)
    port = simulator.port
    simulator.start()
    try:
        assert simulator.port == port
        assert httpx.get(simulator.url + SENDERS, headers=headers).status_code == 200
    finally:
        simulator.stop()


def test_stop_is_quick(sim: AutocallsSimulator) -> None:
    started = time.monotonic()
    sim.stop()
    assert time.monotonic() - started < 0.5


# -- CLI --------------------------------------------------------------------------------------------


def test_cli_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AUTOCALLS_SIMULATOR_API_KEY", raising=False)
    args = build_parser().parse_args([])
    assert (args.host, args.port, args.api_key, args.rate_limit, args.no_seed) == (
        "127.0.0.1",
        8080,
        "sim-key",
        5.0,
        False,
    )


def _start_cli(*args: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "airflow_provider_autocalls.testing.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert process.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    if not selector.select(timeout=15):
        process.kill()
        pytest.fail("the simulator printed nothing within 15 s")
    return process, process.stdout.readline().rstrip("\n")


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_cli_serves_until_a_signal(stop_signal: signal.Signals) -> None:
    process, line = _start_cli("--port", "0", "--api-key", "cli-key", "--rate-limit", "0")
    try:
        match = re.fullmatch(
            r"Autocalls simulator on (http://127\.0\.0\.1:(\d+)/api) \(API key: cli-key\)", line
        )
        assert match, line
        url = match.group(1)
        assert int(match.group(2)) > 0
        assert httpx.get(url + SENDERS, headers={"Authorization": "Bearer cli-key"}).status_code == 200
        assert httpx.get(url + SENDERS, headers={"Authorization": "Bearer sim-key"}).status_code == 401
        assert httpx.post(url.removesuffix("/api") + "/_sim/reset").json() == {"ok": True}
        process.send_signal(stop_signal)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate()
    with pytest.raises(httpx.ConnectError):
        httpx.get(url + SENDERS)


def test_cli_takes_the_key_from_the_environment_without_printing_it() -> None:
    env = {**os.environ, "AUTOCALLS_SIMULATOR_API_KEY": "env-key-4711"}
    process, line = _start_cli("--port", "0", "--rate-limit", "0", env=env)
    try:
        assert "env-key-4711" not in line
        assert line.endswith("(API key: $AUTOCALLS_SIMULATOR_API_KEY)"), line
        url = line.split(" on ", 1)[1].split()[0]
        assert httpx.get(url + SENDERS, headers={"Authorization": "Bearer env-key-4711"}).status_code == 200
        assert httpx.get(url + SENDERS, headers={"Authorization": "Bearer sim-key"}).status_code == 401
    finally:
        process.kill()
        process.communicate()


def test_cli_reports_a_busy_port(sim: AutocallsSimulator) -> None:
    process = subprocess.run(
        [sys.executable, "-m", "airflow_provider_autocalls.testing.cli", "--port", str(sim.port)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert process.returncode == 2
    assert process.stdout == ""
    assert f"cannot start on 127.0.0.1:{sim.port}" in process.stderr


def test_simulator_modules_import_only_the_standard_library() -> None:
    code = (
        "import sys\n"
        "import airflow_provider_autocalls.testing.simulator, airflow_provider_autocalls.testing.cli\n"
        "print(sorted(m for m in ('httpx', 'pytest', 'airflow', 'pendulum', 'tenacity') if m in sys.modules))\n"
    )
    output = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True
    )
    assert output.stdout.strip() == "[]"


# -- pytest fixtures ------------------------------------------------------------------------------


def test_plugin_imports_nothing_heavy() -> None:
    code = (
        "import sys\n"
        "import airflow_provider_autocalls.testing.pytest_plugin\n"
        "from airflow_provider_autocalls.testing import __all__\n"
        "print(sorted(m for m in ('airflow_provider_autocalls.testing.simulator', 'http.server', 'httpx')"
        " if m in sys.modules))\n"
    )
    output = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True
    )
    assert output.stdout.strip() == "[]"


def test_simulator_fixture(autocalls_simulator: AutocallsSimulator) -> None:
    assert autocalls_simulator.running
    assert autocalls_simulator.url.startswith("http://127.0.0.1:")
    assert autocalls_simulator.rate_limit == 5.0
    headers = {"Authorization": f"Bearer {autocalls_simulator.api_key}"}
    assert httpx.get(autocalls_simulator.url + SENDERS, headers=headers).json() == {"data": [SENDER_12]}


def test_connection_fixture(autocalls_connection: AutocallsSimulator) -> None:
    assert json.loads(os.environ["AIRFLOW_CONN_AUTOCALLS_DEFAULT"]) == {
        "conn_type": "autocalls",
        "host": autocalls_connection.url,
        "password": "sim-key",
        "extra": {"rate_limit": 5.0},  # the simulator's, so both pace alike
    }


def test_fixtures_clean_up_after_the_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import os

        def test_uses_it(autocalls_connection, autocalls_simulator):
            assert autocalls_connection is autocalls_simulator
            print("PORT", autocalls_simulator.port)
            assert "AIRFLOW_CONN_AUTOCALLS_DEFAULT" in os.environ
        """
    )
    before = os.environ.get("AIRFLOW_CONN_AUTOCALLS_DEFAULT")
    result = pytester.runpytest("-s", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    port = int(next(line.split()[-1] for line in result.outlines if "PORT" in line))
    assert os.environ.get("AIRFLOW_CONN_AUTOCALLS_DEFAULT") == before
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), timeout=2):
        pass


def test_a_fault_with_a_probability_hits_about_that_share_of_requests() -> None:
    with AutocallsSimulator(rate_limit=0) as sim:
        sim.inject(Fault(endpoint="senders", status=503, probability=0.2, count=1000))
        with httpx.Client(base_url=sim.url, headers={"Authorization": f"Bearer {sim.api_key}"}) as client:
            statuses = [client.get("/user/whatsapp/senders").status_code for _ in range(300)]
        assert 30 <= statuses.count(503) <= 90
        assert statuses.count(200) == 300 - statuses.count(503)
    with pytest.raises(ValueError, match="probability"):
        Fault(probability=0)
