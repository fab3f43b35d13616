"""
Input checks, run before any request is made.

Pure functions: each returns the value in the form the API takes, or raises
:class:`~airflow_provider_autocalls.exceptions.AutocallsValidationError` naming the field.
Hook methods, operators (after rendering) and bulk row checks all call these, so a rule lives here
and nowhere else.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any, Final

from airflow_provider_autocalls.exceptions import AutocallsValidationError

MAX_MESSAGE_LENGTH: Final = 4096
MAX_RECIPIENT_NAME_LENGTH: Final = 255
SENDER_STATUSES: Final = ("online", "offline", "all")
TEMPLATE_STATUSES: Final = ("approved", "pending", "rejected", "all")

# [0-9] rather than \d: \d also matches other scripts' digits, which the API does not accept.
_E164: Final = re.compile(r"\+[1-9][0-9]{6,14}")
_ASCII_DIGITS: Final = re.compile(r"[0-9]+")


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def check_phone(value: Any, field: str = "recipient_phone") -> str:
    """
    Return ``value`` if it is an E.164 phone number exactly as given.

    A number is never rewritten (a rewritten number can message the wrong person): spaces, dashes,
    a missing ``+`` or a trailing newline are refused, not cleaned.
    """
    if not isinstance(value, str) or _E164.fullmatch(value) is None:
        raise AutocallsValidationError(
            field,
            f"{_shown(value)} is not a phone number in E.164 form. Write '+', the country code and "
            "the number as 7 to 15 digits with nothing else, e.g. '+14155551234'.",
        )
    return value


def check_id(value: Any, field: str) -> int:
    """Return ``value`` as a positive integer id; a string of ASCII digits (a rendered template) is converted."""
    if isinstance(value, str) and _ASCII_DIGITS.fullmatch(value):
        value = int(value)
    # bool is a subclass of int, and True is never a meaningful id.
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise AutocallsValidationError(
            field,
            f"{_shown(value)} is not a positive integer id. Use the numeric id the Autocalls API lists.",
        )
    return value


def check_message(value: Any, field: str = "message") -> str:
    """Return ``value`` if it is 1 to 4096 characters of text that is not only whitespace."""
    if not isinstance(value, str):
        raise AutocallsValidationError(field, f"must be text, got {type(value).__name__}.")
    if not value.strip():
        raise AutocallsValidationError(field, "is empty or only whitespace. Give the text to send.")
    if len(value) > MAX_MESSAGE_LENGTH:
        raise AutocallsValidationError(
            field,
            f"has {len(value)} characters; WhatsApp allows at most {MAX_MESSAGE_LENGTH}. Shorten it or split it.",
        )
    return value


def check_recipient_name(value: Any, field: str = "recipient_name") -> str | None:
    """Return ``value`` (``None`` allowed) if it is text of at most 255 characters."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise AutocallsValidationError(field, f"must be text or None, got {type(value).__name__}.")
    if len(value) > MAX_RECIPIENT_NAME_LENGTH:
        raise AutocallsValidationError(
            field, f"has {len(value)} characters; the API allows at most {MAX_RECIPIENT_NAME_LENGTH}."
        )
    return value


def check_variables(value: Any, field: str = "variables") -> dict[str, str] | None:
    """
    Return the template variables as a dict of non-empty string keys to strings.

    Keys are positions (``"1"``, ``"2"``, ...) or the template's variable names; numbers, as keys or
    values, are converted to strings. ``None`` means no variables.
    """
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise AutocallsValidationError(
            field,
            f"must be a mapping such as {{'1': 'Ada'}} or {{'name': 'Ada'}}, got {type(value).__name__}.",
        )
    checked: dict[str, str] = {}
    for key, item in value.items():
        name = _scalar_text(key)
        if name is None or not name.strip():
            raise AutocallsValidationError(
                field, f"key {_shown(key)} must be a non-empty string or a position."
            )
        text = _scalar_text(item)
        if text is None:
            raise AutocallsValidationError(
                f"{field}[{name!r}]", f"must be a string or a number, got {type(item).__name__}."
            )
        checked[name] = text
    return checked


def _scalar_text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return str(value)
    return None


def check_choice(value: Any, choices: tuple[str, ...], field: str = "status") -> str:
    """Return ``value`` if it is one of ``choices``."""
    if value not in choices:
        raise AutocallsValidationError(field, f"{_shown(value)} is not one of {', '.join(choices)}.")
    return str(value)
