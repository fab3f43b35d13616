"""Data, answers, validation and rate limiting of the Autocalls simulator (standard library only)."""

from __future__ import annotations

import json
import math
import re
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from http import HTTPStatus
from typing import Any

#: Names used in :attr:`Fault.endpoint` and in the ``endpoint`` field of recorded requests.
ENDPOINTS = ("senders", "templates", "session_status", "send_template", "send_freeform")

WINDOW = timedelta(hours=24)
MAX_RECIPIENT_NAME = 255
MAX_MESSAGE = 4096
SENDER_STATUSES = ("online", "offline")
TEMPLATE_STATUSES = ("approved", "pending", "rejected")
TEMPLATE_CATEGORIES = ("marketing", "utility", "authentication")

E164 = re.compile(r"\+[1-9]\d{6,14}")
# PHP's FILTER_VALIDATE_INT (Laravel's ``integer`` rule) also takes numeric strings.
INTEGER = re.compile(r"[+-]?\d+")
_PLACEHOLDER = re.compile(r"\{\{\s*(\d+)\s*\}\}")

_TEMPLATES_PATH = re.compile(r"/api/user/whatsapp/senders/([^/]+)/templates")
_STATIC_ROUTES: dict[str, tuple[str, str]] = {
    "/api/user/whatsapp/senders": ("GET", "senders"),
    "/api/user/whatsapp/session-status": ("GET", "session_status"),
    "/api/user/whatsapp/send": ("POST", "send_template"),
    "/api/user/whatsapp/send-freeform": ("POST", "send_freeform"),
}

MSG_SESSION_EXPIRED = "Session expired. Send a template or wait for customer to reply."
MSG_NO_CONVERSATION = "No conversation yet. Send a template to start one."
ERR_SESSION_EXPIRED = (
    "The 24-hour messaging window is closed. Customer must reply first, or use a template message."
)
ERR_SENDER_NOT_FOUND = "Sender not found or does not belong to you"
ERR_TEMPLATE_NOT_FOUND = "Template not found or does not belong to this sender"
ERR_BALANCE = "Insufficient balance. Please top up your account."
ERR_INVALID_PHONE = "Invalid phone number format. Use international format, e.g. +1234567890."


@dataclass
class Fault:
    """A scripted misbehaviour for the next matching API request(s).

    :param endpoint: one of :data:`ENDPOINTS`; ``None`` matches any API request.
    :param status: answer with this HTTP status instead of the real answer.
    :param body: raw body sent with ``status`` (default: a short JSON error for that status).
    :param headers: extra response headers, e.g. ``{"Retry-After": "1"}``.
    :param process: process the request for real first, then apply ``status``/``drop``.
    :param drop: close the connection without any response.
    :param delay: seconds to sleep before answering (after processing when it happens).
    :param trickle: send the answer (the real one, or the ``status`` one), status line and headers
        included, one byte every ``trickle`` seconds, as a stalled link or proxy would.
    :param arrival_delay: seconds the request takes to *arrive*: it is recorded, counted by the
        rate limiter and processed only after this wait (a slow network before the API; ``delay``
        is the API being slow to answer a request it already counted).
    :param count: how many matching requests the fault applies to.
    :param probability: the chance that a matching request gets the fault (soak tests spread
        faults at random this way; the draws are seeded, so a run can be repeated).
    """

    endpoint: str | None = None
    status: int | None = None
    body: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    process: bool = False
    drop: bool = False
    delay: float = 0.0
    trickle: float = 0.0
    arrival_delay: float = 0.0
    count: int = 1
    probability: float = 1.0

    def __post_init__(self) -> None:
        if self.endpoint is not None and self.endpoint not in ENDPOINTS:
            raise ValueError(f"unknown endpoint {self.endpoint!r}; expected one of {ENDPOINTS} or None")
        if self.status is not None and not 100 <= self.status <= 599:
            raise ValueError(f"status must be an HTTP status code, got {self.status!r}")
        if self.delay < 0 or self.arrival_delay < 0:
            raise ValueError("delay and arrival_delay must be >= 0")
        if self.trickle < 0:
            raise ValueError("trickle must be >= 0")
        if self.count < 1:
            raise ValueError("count must be >= 1")
        if not 0 < self.probability <= 1:
            raise ValueError("probability must be in (0, 1]")

    @property
    def processes(self) -> bool:
        """Whether the request is processed for real (a fault without status or drop only slows/decorates)."""
        return self.process or (self.status is None and not self.drop)


@dataclass
class Sender:
    """A WhatsApp sender (phone number) of the account."""

    id: int
    phone_number: str
    display_name: str
    status: str = "online"
    quality_rating: str = "GREEN"
    messaging_limit: int | None = None

    def as_json(self) -> dict[str, Any]:
        """The sender as Get Senders lists it."""
        limit = self.messaging_limit
        return {
            "id": self.id,
            "phone_number": self.phone_number,
            "display_name": self.display_name,
            "status": self.status,
            "quality_rating": self.quality_rating,
            "messaging_limit": limit,
            "messaging_limit_formatted": "Unlimited" if limit is None else f"{limit:,} / 24hr",
        }


@dataclass
class Template:
    """A message template of one sender."""

    id: int
    sender_id: int
    name: str
    body_text: str
    variables: tuple[str, ...] = ()
    status: str = "approved"
    language: str = "en"
    category: str = "utility"

    @property
    def placeholders(self) -> list[int]:
        """Positions used in the body, sorted."""
        return sorted({int(m) for m in _PLACEHOLDER.findall(self.body_text)})

    @property
    def positions(self) -> int:
        """Highest valid position key (``"1"`` .. this)."""
        return max([len(self.variables), *self.placeholders])

    def as_json(self) -> dict[str, Any]:
        """The template as Get Templates lists it."""
        return {
            "id": self.id,
            "name": self.name,
            "language": self.language,
            "category": self.category,
            "status": self.status,
            "body_text": self.body_text,
            "variables": list(self.variables),
            "has_variables": self.positions > 0,
        }

    def render(self, variables: Mapping[str, str]) -> tuple[str | None, str | None]:
        """Fill the placeholders.

        :returns: ``(text, None)``, or ``(None, problem)`` when the variables don't fit.
        """
        count = self.positions
        by_name = {name: i + 1 for i, name in enumerate(self.variables)}
        values: dict[int, str] = {}
        for key, value in variables.items():
            if key.isdigit() and str(int(key)) == key and 1 <= int(key) <= count:
                position = int(key)
            elif key in by_name:
                position = by_name[key]
            else:
                if count:
                    names = f" or names {', '.join(self.variables)}" if self.variables else ""
                    takes = f"takes positions 1-{count}{names}"
                else:
                    takes = "takes no variables"
                return None, f"Unknown template variable '{key}': template '{self.name}' {takes}."
            if position in values:
                return None, f"Template variable {{{{{position}}}}} is given twice."
            values[position] = value
        for position in self.placeholders:
            if not values.get(position, "").strip():
                label = f" ({self.variables[position - 1]})" if position <= len(self.variables) else ""
                return None, f"Missing value for template variable {{{{{position}}}}}{label}."
        text = _PLACEHOLDER.sub(lambda m: values[int(m.group(1))], self.body_text)
        return text, None


@dataclass
class Conversation:
    """One (sender, recipient) conversation and its 24 h window."""

    id: int
    sender_id: int
    recipient_phone: str
    customer_name: str | None = None
    last_customer_message_at: datetime | None = None
    expires_at: datetime | None = None


@dataclass(slots=True)
class Response:
    """An HTTP answer: status, body bytes and headers (Content-Length is added when sending)."""

    status: int
    body: bytes
    headers: dict[str, str]


def json_response(status: int, payload: Any, headers: Mapping[str, str] | None = None) -> Response:
    """A JSON answer."""
    body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
    return Response(status, body, {"Content-Type": "application/json", **(headers or {})})


_FAULT_MESSAGES = {401: "Unauthenticated.", 404: "Not Found", 429: "Too Many Attempts."}


def fault_response(fault: Fault) -> Response:
    """The answer a fault with a ``status`` gives instead of the real one."""
    assert fault.status is not None
    if fault.body is None:
        # The statuses the simulator also gives for real keep their real bodies.
        phrase = _FAULT_MESSAGES.get(fault.status)
        if phrase is None:
            try:
                phrase = HTTPStatus(fault.status).phrase
            except ValueError:
                phrase = "Error"
        response = json_response(fault.status, {"message": phrase})
    else:
        sniffed = "text/html; charset=utf-8" if fault.body.lstrip().startswith("<") else "application/json"
        response = Response(fault.status, fault.body.encode(), {"Content-Type": sniffed})
    response.headers.update(fault.headers)
    return response


def iso(moment: datetime) -> str:
    """ISO 8601 to the second with ``+00:00``, as the API writes times."""
    return moment.isoformat(timespec="seconds")


def fail(status: int, code: str, error: str, **extra: Any) -> Response:
    return json_response(status, {"success": False, "error": error, "error_code": code, **extra})


def validation_error(errors: dict[str, list[str]]) -> Response:
    """Laravel's 422: the first message, "(and N more errors)", and every message by field."""
    messages = [m for field_messages in errors.values() for m in field_messages]
    message = messages[0]
    if len(messages) > 1:
        more = len(messages) - 1
        message += f" (and {more} more error{'s' if more > 1 else ''})"
    return json_response(422, {"message": message, "errors": errors})


def _label(name: str) -> str:
    # Laravel names an attribute by its key with underscores as spaces.
    return name.replace("_", " ").replace(".", " ")


def _missing(value: Any) -> bool:
    # Laravel's ``required``: null, "" (after trimming) and [] are missing.
    return value is None or (isinstance(value, str) and not value.strip()) or value in ([], {})


def check_integer(data: Mapping[str, Any], name: str, errors: dict[str, list[str]]) -> None:
    value = data.get(name)
    if _missing(value):
        errors[name] = [f"The {_label(name)} field is required."]
    elif not (
        (isinstance(value, int) and not isinstance(value, bool))
        or (isinstance(value, str) and INTEGER.fullmatch(value.strip()))
    ):
        errors[name] = [f"The {_label(name)} field must be an integer."]


def check_string(
    data: Mapping[str, Any],
    name: str,
    errors: dict[str, list[str]],
    *,
    required: bool = True,
    max_length: int | None = None,
) -> None:
    value = data.get(name)
    if _missing(value):
        if required:
            errors[name] = [f"The {_label(name)} field is required."]
    elif not isinstance(value, str):
        errors[name] = [f"The {_label(name)} field must be a string."]
    elif max_length is not None and len(value) > max_length:
        errors[name] = [f"The {_label(name)} field must not be greater than {max_length} characters."]


def check_variables(data: Mapping[str, Any], errors: dict[str, list[str]]) -> dict[str, str] | None:
    """Laravel-validate ``variables`` (nullable array of scalars); returns them keyed by string."""
    value = data.get("variables")
    if value is None:
        return None
    if isinstance(value, list):
        # A JSON list is a PHP array keyed 0, 1, ...: it passes ``array`` and then fits no template.
        value = {str(i): v for i, v in enumerate(value)}
    if not isinstance(value, dict):
        errors["variables"] = ["The variables field must be an array."]
        return None
    result: dict[str, str] = {}
    for key, item in value.items():
        if isinstance(item, str):
            result[key] = item
        elif isinstance(item, int | float) and not isinstance(item, bool):
            result[key] = str(item)
        else:
            errors[f"variables.{key}"] = [f"The variables.{key} field must be a string."]
    return result


class SlidingWindowLimiter:
    """Strict sliding one-second window per key; refused requests don't count.

    Not thread-safe on its own: :class:`SimulatorState` calls it under its lock.
    """

    def __init__(self) -> None:
        self._accepted: dict[str, deque[float]] = {}

    def acquire(self, key: str, limit: float | None, now: float) -> int | None:
        """Count a request at monotonic time ``now``.

        :returns: ``None`` if accepted, else the whole seconds (>= 1) until a slot frees up.
        """
        if not limit:
            return None
        accepted = self._accepted.get(key)
        if accepted is None:
            accepted = self._accepted[key] = deque()
        cutoff = now - 1.0
        while accepted and accepted[0] <= cutoff:
            accepted.popleft()
        if len(accepted) >= limit:
            return max(1, math.ceil(accepted[0] + 1.0 - now))
        accepted.append(now)
        return None

    def clear(self) -> None:
        """Forget every key's history."""
        self._accepted.clear()


def route(method: str, path: str) -> tuple[str | None, str | None, Response | None]:
    """Match an ``/api`` path.

    :returns: ``(endpoint, sender segment of the templates path, error answer or None)``.
    """
    if len(path) > 1:
        path = path.rstrip("/")
    sender_segment = None
    static = _STATIC_ROUTES.get(path)
    if static is None:
        match = _TEMPLATES_PATH.fullmatch(path)
        if match is None:
            return None, None, json_response(404, {"message": "Not Found"})
        static = ("GET", "templates")
        sender_segment = match.group(1)
    allowed, endpoint = static
    if method != allowed:
        message = (
            f"The {method} method is not supported for route {path.lstrip('/')}. "
            f"Supported methods: {allowed}."
        )
        return endpoint, sender_segment, json_response(405, {"message": message}, {"Allow": allowed})
    return endpoint, sender_segment, None


def fault_from_json(data: Any) -> Fault:
    """Build a :class:`Fault` from a control-endpoint JSON object (raises ``ValueError``)."""
    if not isinstance(data, dict):
        raise ValueError("expected a JSON object with Fault fields")
    known = set(Fault.__dataclass_fields__)
    unknown = set(data) - known
    if unknown:
        raise ValueError(f"unknown Fault fields: {sorted(unknown)}")
    checks: dict[str, Callable[[Any], bool]] = {
        "endpoint": lambda v: v is None or isinstance(v, str),
        "status": lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool)),
        "body": lambda v: v is None or isinstance(v, str),
        "headers": lambda v: isinstance(v, dict) and all(isinstance(x, str) for x in _items(v)),
        "process": lambda v: isinstance(v, bool),
        "drop": lambda v: isinstance(v, bool),
        "delay": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
        "trickle": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
        "arrival_delay": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
        "count": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "probability": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    }
    for name, value in data.items():
        if not checks[name](value):
            raise ValueError(f"bad value for Fault.{name}: {value!r}")
    return Fault(**data)


def _items(mapping: dict[Any, Any]) -> Iterable[Any]:
    for key, value in mapping.items():
        yield key
        yield value
