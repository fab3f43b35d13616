"""
The API's endpoints as requests: each built, and its input checked, before anything is sent; and
the shape each answer must have.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

from airflow_provider_autocalls import metrics
from airflow_provider_autocalls.exceptions import AutocallsAPIError, AutocallsValidationError
from airflow_provider_autocalls.hooks._answers import ApiRequest, Kind
from airflow_provider_autocalls.validation import (
    SENDER_STATUSES,
    TEMPLATE_STATUSES,
    check_choice,
    check_id,
    check_message,
    check_phone,
    check_recipient_name,
    check_variables,
)


@contextlib.contextmanager
def refusals_counted() -> Iterator[None]:
    """Count a send refused for its input, before any request (``autocalls.refused_before_send``)."""
    try:
        yield
    except AutocallsValidationError:
        metrics.refused_before_send()
        raise


def senders_request(status: str) -> ApiRequest:
    status = check_choice(status, SENDER_STATUSES)
    return ApiRequest("GET", "/user/whatsapp/senders", Kind.READ, params={"status": status})


def templates_request(sender_id: int | str, status: str) -> ApiRequest:
    sender = check_id(sender_id, "sender_id")
    status = check_choice(status, TEMPLATE_STATUSES)
    return ApiRequest(
        "GET", f"/user/whatsapp/senders/{sender}/templates", Kind.READ, params={"status": status}
    )


def session_status_request(sender_id: int | str, recipient_phone: str) -> ApiRequest:
    params = {"sender_id": check_id(sender_id, "sender_id"), "recipient_phone": check_phone(recipient_phone)}
    return ApiRequest("GET", "/user/whatsapp/session-status", Kind.READ, params=params)


def send_template_request(
    sender_id: int | str,
    template_id: int | str,
    recipient_phone: str,
    recipient_name: str | None,
    variables: Mapping[Any, Any] | None,
) -> ApiRequest:
    body: dict[str, Any] = {
        "sender_id": check_id(sender_id, "sender_id"),
        "template_id": check_id(template_id, "template_id"),
        "recipient_phone": check_phone(recipient_phone),
    }
    if (name := check_recipient_name(recipient_name)) is not None:
        body["recipient_name"] = name
    if (values := check_variables(variables)) is not None:
        body["variables"] = values
    return ApiRequest(
        "POST",
        "/user/whatsapp/send",
        Kind.SEND,
        body=body,
        sender_id=body["sender_id"],
        recipient_phone=recipient_phone,
    )


def send_freeform_request(sender_id: int | str, recipient_phone: str, message: str) -> ApiRequest:
    body: dict[str, Any] = {
        "sender_id": check_id(sender_id, "sender_id"),
        "recipient_phone": check_phone(recipient_phone),
        "message": check_message(message),
    }
    return ApiRequest(
        "POST",
        "/user/whatsapp/send-freeform",
        Kind.SEND,
        body=body,
        sender_id=body["sender_id"],
        recipient_phone=recipient_phone,
    )


def data_list(request: ApiRequest, body: Any) -> list[dict[str, Any]]:
    data = body.get("data")
    if not isinstance(data, list):
        raise _wrong_shape(request, body, "a list under 'data'")
    return data


def with_session_status(request: ApiRequest, body: Any) -> dict[str, Any]:
    if not isinstance(body.get("session_status"), Mapping):
        raise _wrong_shape(request, body, "a 'session_status' object")
    return dict(body)


def _wrong_shape(request: ApiRequest, body: Any, expected: str) -> AutocallsAPIError:
    return AutocallsAPIError(
        f"{request.what} answered 200 without {expected}. The base URL may point at something other than "
        "the Autocalls API; check the connection's host.",
        status_code=200,
        response_body=body,
    )
