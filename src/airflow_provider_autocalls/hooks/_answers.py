"""
Turning what came back (an answer, or a transport failure) into data or a typed error.

Shared by the sync and async request paths: they differ only in how bytes are read, never in
what the bytes mean. Nothing here parses error text to decide anything; the decision is made from
the HTTP status and the body's ``error_code``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from enum import Enum
from typing import TYPE_CHECKING, Any, Final

from airflow_provider_autocalls.exceptions import (
    AuthenticationError,
    AutocallsAPIError,
    AutocallsConnectionError,
    AutocallsError,
    AutocallsServerError,
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

if TYPE_CHECKING:
    from collections.abc import Mapping

#: Bodies larger than this are refused unread: no answer of this API comes near it.
MAX_BODY_BYTES: Final = 1024 * 1024
#: Without ``Retry-After``, a 429 holds every caller of the key back this long (one window).
DEFAULT_RETRY_AFTER: Final = 1.0


class Kind(Enum):
    """What a request does, which decides what may be retried."""

    READ = "read"
    SEND = "send"


@dataclass(frozen=True)
class ApiRequest:
    """One call to the API, as the request path sees it."""

    method: str
    path: str
    kind: Kind
    params: dict[str, Any] | None = None
    body: dict[str, Any] | None = None
    # Named in SendOutcomeUnknownError so the user knows which message is in doubt.
    sender_id: int | None = field(default=None, compare=False)
    recipient_phone: str | None = field(default=None, compare=False)

    @property
    def what(self) -> str:
        return f"{self.method} {self.path}"


class RateLimited(RateLimitError):
    """A 429 on one attempt; the retry policy waits ``retry_after`` and tries again."""

    def __init__(self, message: str, *, retry_after: float, **kwargs: Any) -> None:
        self.retry_after = retry_after
        super().__init__(message, **kwargs)


class TransientReadError(AutocallsServerError):
    """A read that failed in a way a later attempt may not (timeout, dropped connection)."""


_BY_ERROR_CODE: Final[dict[str, type[AutocallsAPIError]]] = {
    "SESSION_EXPIRED": SessionExpiredError,
    "SENDER_OFFLINE": SenderOfflineError,
    "SENDER_NOT_FOUND": NotFoundError,
    "TEMPLATE_NOT_FOUND": NotFoundError,
    "TEMPLATE_NOT_APPROVED": TemplateNotApprovedError,
    "TEMPLATE_MISMATCH": TemplateMismatchError,
    "INVALID_PHONE": InvalidPhoneError,
    "INSUFFICIENT_BALANCE": InsufficientBalanceError,
}
_BY_STATUS: Final[dict[int, type[AutocallsAPIError]]] = {
    401: AuthenticationError,
    402: InsufficientBalanceError,
    403: AuthenticationError,
    404: NotFoundError,
    429: RateLimitError,
}
_ADVICE: Final[dict[type[AutocallsAPIError], str]] = {
    AuthenticationError: "Check the API key (password) of the Autocalls connection.",
    InsufficientBalanceError: "Top up the Autocalls account; nothing was sent.",
    SessionExpiredError: "The 24-hour window is closed: send a template first, or wait for the customer to reply.",
    NotFoundError: "Check the sender_id and template_id against get_senders() / get_templates().",
    SenderOfflineError: "The WhatsApp sender is offline; nothing was sent. Retry once it is online.",
    TemplateNotApprovedError: "Only templates approved by Meta can be sent; pick an approved template.",
    TemplateMismatchError: "Give a value for every placeholder, keyed by position ('1') or by variable name.",
    InvalidPhoneError: "Give the recipient's number in E.164 form, e.g. +14155551234.",
    RateLimitError: "The API's rate limit was hit on every attempt; lower rate_limit on the connection.",
    AutocallsServerError: "The Autocalls API failed; try again later.",
}


def decode_answer(request: ApiRequest, status: int, headers: Mapping[str, str], content: bytes | None) -> Any:
    """
    Return the JSON body of a successful answer, or raise the typed error it stands for.

    :param content: the body, or ``None`` when it was larger than :data:`MAX_BODY_BYTES`.

    :raises RateLimited: on a 429, with the wait the API asked for.
    :raises SendOutcomeUnknownError: when the answer to a send does not say whether it went out.
    :raises AutocallsAPIError: (a subclass) for every other error answer.
    """
    body = _json_or_none(content) if content is not None else None
    if 200 <= status < 300 and _is_success(request, body):
        return body
    error_code = body.get("error_code") if isinstance(body, dict) else None
    error_code = error_code if isinstance(error_code, str) else None
    shown_body = body if body is not None else (content or b"")[:500].decode("utf-8", "replace")

    if status == 429:
        raise RateLimited(
            f"{request.what} was rate limited by the API.",
            retry_after=_retry_after(headers),
            status_code=status,
            response_body=shown_body,
        )
    if request.kind is Kind.SEND and _outcome_unknown(status, error_code, body):
        raise SendOutcomeUnknownError(
            f"{request.what} to {request.recipient_phone} from sender {request.sender_id} got an answer "
            f"(HTTP {status}) that does not say whether the message went out, so it was not sent again. "
            "It may have been delivered: check the conversation in the Autocalls dashboard (or "
            "get_session_status) before sending it again by hand.",
            sender_id=request.sender_id,
            recipient_phone=request.recipient_phone,
            status_code=status,
        )
    cls = _error_class(status, error_code)
    api_text = body.get("error") or body.get("message") if isinstance(body, dict) else None
    advice = _ADVICE.get(cls, "See the response body for details.")
    if isinstance(api_text, str) and api_text:
        detail = api_text.rstrip(". ")
    elif content is None:
        detail = f"the answer is larger than {MAX_BODY_BYTES} bytes and was not read"
    elif 300 <= status < 400:
        detail = f"the API redirected to {headers.get('location', 'another URL')}"
        advice = "Set the connection's base URL to the final address; redirects are not followed."
    elif body is None:
        detail = "the answer is not JSON"
    else:
        detail = "the answer is not the documented shape"
    raise cls(
        f"{request.what} failed: {detail}. {advice}",
        status_code=status,
        error_code=error_code,
        response_body=shown_body,
    )


def _is_success(request: ApiRequest, body: Any) -> bool:
    if not isinstance(body, dict) or body.get("success", True) is False:
        return False
    # A send counts as done only on an answer that says so: anything else at that URL (a proxy's
    # page, a wrong base path) must not be taken for a delivered message.
    return (
        request.kind is Kind.READ or body.get("success") is True or isinstance(body.get("message_sid"), str)
    )


def _json_or_none(content: bytes) -> Any:
    try:
        return json.loads(content)
    except ValueError:
        return None


def _outcome_unknown(status: int, error_code: str | None, body: Any) -> bool:
    """Whether an answer to a send leaves open that the message went out."""
    if error_code == "SENDER_OFFLINE":
        return False  # a definite refusal, whichever status carries it (422 or 503)
    if status >= 500 or error_code == "UNKNOWN_ERROR":
        return True
    # A 2xx whose body can't be read or says neither yes nor no: the send may have happened.
    return 200 <= status < 300 and (not isinstance(body, dict) or body.get("success") is not False)


def _error_class(status: int, error_code: str | None) -> type[AutocallsAPIError]:
    if error_code in _BY_ERROR_CODE:
        return _BY_ERROR_CODE[error_code]
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    if status >= 500:
        return AutocallsServerError
    return AutocallsAPIError


def _retry_after(headers: Mapping[str, str]) -> float:
    value = headers.get("retry-after")
    if value is None:
        return DEFAULT_RETRY_AFTER
    try:
        seconds = float(value)
    except ValueError:
        try:
            from datetime import UTC, datetime

            seconds = (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds()
        except (TypeError, ValueError):
            return DEFAULT_RETRY_AFTER
    return seconds if math.isfinite(seconds) and seconds > 0 else DEFAULT_RETRY_AFTER


def transport_failure(request: ApiRequest, exc: Exception, *, sent: bool, timeout: float) -> AutocallsError:
    """
    Map a failure of the transport (an httpx error, or the request's deadline) to our error.

    :param sent: whether writing the request had begun (see ``hooks._transport.WireWatch``). Before
        that, nothing reached the API, whatever the error; after it, a send is in doubt.
    :param timeout: the request's deadline in seconds, named when it is what ended the request.
    """
    import httpx

    cause = type(exc).__name__
    if isinstance(exc, TimeoutError | httpx.TimeoutException):
        cause = f"{cause}: not done within the connection's timeout of {timeout:g} s"
    if not sent:
        return AutocallsConnectionError(
            f"{request.what}: the request could not be sent to the Autocalls API ({cause}); nothing was "
            "sent. Check the connection's base URL and this machine's network, then retry."
        )
    if request.kind is Kind.SEND:
        return SendOutcomeUnknownError(
            f"{request.what} to {request.recipient_phone} from sender {request.sender_id}: the connection "
            f"failed after the request was sent ({cause}), so the message may have been delivered. It was "
            "not sent again: check the conversation in the Autocalls dashboard (or get_session_status) "
            "before sending it again by hand.",
            sender_id=request.sender_id,
            recipient_phone=request.recipient_phone,
        )
    return TransientReadError(
        f"{request.what}: the answer was lost ({cause}). The API may be slow or unreachable; try again "
        "later or raise the connection's timeout.",
        status_code=0,
    )
