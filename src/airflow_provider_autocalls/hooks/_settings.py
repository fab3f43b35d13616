"""
Connection -> client settings: the one place where a connection's fields are read and checked.

Shared by the sync and async request paths (and so by triggers, which rebuild the hook from its
serialised arguments). Everything here is checked before any request is made, and no error
raised here ever shows the API key.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit

from airflow_provider_autocalls import __version__
from airflow_provider_autocalls.exceptions import AutocallsValidationError

DEFAULT_BASE_URL: Final = "https://app.autocalls.ai/api"
DEFAULT_TIMEOUT: Final = 30.0
DEFAULT_RATE_LIMIT: Final = 5.0
DEFAULT_MAX_RETRIES: Final = 3


@dataclass(frozen=True)
class ClientSettings:
    """Everything a client needs, read from the connection once. The API key never shows in a repr."""

    base_url: str
    api_key: str = field(repr=False)
    #: The deadline of one request, in seconds: connecting, sending and reading the whole answer.
    timeout: float = DEFAULT_TIMEOUT
    rate_limit: float = DEFAULT_RATE_LIMIT
    max_retries: int = DEFAULT_MAX_RETRIES
    #: The connection extra ``rate_limit_backend``; ``hooks/_shared_limit.py`` reads it.
    rate_limit_backend: str | None = None

    @property
    def headers(self) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {self.api_key}",
            "Accept": "application/json",
            "User-Agent": f"airflow-provider-autocalls/{__version__}",
        }


def build_settings(
    conn_id: str,
    host: str | None,
    password: str | None,
    extras: Mapping[str, Any],
    overrides: Mapping[str, Any],
) -> ClientSettings:
    """
    Turn a connection into client settings; hook arguments (``overrides``) win over extras.

    :raises AutocallsValidationError: naming the connection field that is wrong.
    """
    api_key = _check_api_key(conn_id, password)
    values = {**{k: v for k, v in extras.items() if v not in (None, "")}, **overrides}
    return ClientSettings(
        base_url=_check_base_url(host or DEFAULT_BASE_URL, _flag(values.get("allow_insecure_http", False))),
        api_key=api_key,
        timeout=_positive_number(values.get("timeout", DEFAULT_TIMEOUT), "timeout"),
        rate_limit=_positive_number(values.get("rate_limit", DEFAULT_RATE_LIMIT), "rate_limit"),
        max_retries=_count(values.get("max_retries", DEFAULT_MAX_RETRIES), "max_retries"),
        rate_limit_backend=values.get("rate_limit_backend"),
    )


def _check_api_key(conn_id: str, password: str | None) -> str:
    """
    The key as it goes into the ``Authorization`` header, or an error that never shows it.

    A key pasted with a line break would otherwise fail inside the HTTP library, whose error quotes
    the whole header (escaped, so the secret masker misses it) and happens while a request is being
    written. Only printable ASCII without spaces can be a bearer token.
    """
    if not password:
        raise AutocallsValidationError(
            "password",
            f"connection {conn_id!r} has no API key. Put the Autocalls API key in its password field.",
        )
    for index, char in enumerate(password):
        if char.isascii() and char.isprintable() and not char.isspace():
            continue
        where = "at its start" if index == 0 else "at its end" if index == len(password) - 1 else "inside it"
        raise AutocallsValidationError(
            "password",
            f"the API key of connection {conn_id!r} has {_kind_of(char)} {where}; an API key is printable "
            "ASCII without spaces. Paste the key into the password field again, without it (the key is not "
            "shown here).",
        )
    return password


def _kind_of(char: str) -> str:
    if char in "\r\n":
        return "a line break"
    if char == "\t":
        return "a tab"
    if char.isspace():
        return "a space" if char == " " else "a whitespace character"
    if not char.isascii():
        return "a non-ASCII character"
    return "a control character"


def _check_base_url(url: str, allow_insecure_http: bool) -> str:
    url = url.strip().rstrip("/")
    if any(c.isspace() or not c.isprintable() for c in url):
        raise AutocallsValidationError("host", f"{url!r} contains spaces or control characters; remove them.")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
    except ValueError as exc:
        raise AutocallsValidationError("host", f"{url!r} is not a valid URL ({exc}).") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise AutocallsValidationError(
            "host",
            f"{url!r} is not a base URL. Give the whole URL with its scheme, e.g. {DEFAULT_BASE_URL!r}.",
        )
    if parts.username or parts.password or parts.query or parts.fragment:
        raise AutocallsValidationError(
            "host",
            "the base URL must not carry credentials, a query or a fragment; put the API key in password.",
        )
    if parts.scheme == "http" and not (allow_insecure_http or _is_loopback(parts.hostname)):
        raise AutocallsValidationError(
            "host",
            f"plain http:// would send the API key unencrypted to {parts.hostname}. Use https://, or set the "
            "extra allow_insecure_http to true if this network is trusted.",
        )
    # One API, one pacer: the scheme and host are case-insensitive, the path is not.
    return parts._replace(scheme=parts.scheme.lower(), netloc=parts.netloc.lower()).geturl()


def _flag(value: Any, name: str = "allow_insecure_http") -> bool:
    """A boolean extra; text from a URI or JSON is read strictly ("false" must never mean True)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no", ""):
        return False
    raise AutocallsValidationError(name, f"{value!r} is not true or false (connection extra {name!r}).")


def _is_loopback(hostname: str) -> bool:
    if hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False


def _positive_number(value: Any, name: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if isinstance(value, bool) or not number > 0 or number == float("inf"):
        raise AutocallsValidationError(
            name, f"{value!r} is not a positive number (connection extra {name!r})."
        )
    return number


def _count(value: Any, name: str) -> int:
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise AutocallsValidationError(
            name, f"{value!r} is not a whole number >= 0 (connection extra {name!r})."
        )
    return value
