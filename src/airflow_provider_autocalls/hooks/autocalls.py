"""Hook for the Autocalls WhatsApp Business API."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

from airflow.providers.common.compat.sdk import BaseHook, mask_secret
from tenacity import AsyncRetrying, Retrying

from airflow_provider_autocalls import __version__, metrics
from airflow_provider_autocalls.exceptions import (
    AutocallsAPIError,
    AutocallsError,
    AutocallsValidationError,
    SendOutcomeUnknownError,
)
from airflow_provider_autocalls.hooks._answers import (
    MAX_BODY_BYTES,
    ApiRequest,
    Kind,
    RateLimited,
    decode_answer,
    transport_failure,
)
from airflow_provider_autocalls.hooks._clients import new_client, shared_async_client
from airflow_provider_autocalls.hooks._pacing import Pacer, pacer_for
from airflow_provider_autocalls.hooks._retry import MAX_RETRY_AFTER, retry_policy
from airflow_provider_autocalls.hooks._shared_limit import configured_backend
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

if TYPE_CHECKING:
    import httpx

DEFAULT_BASE_URL: Final = "https://app.autocalls.ai/api"
DEFAULT_TIMEOUT: Final = 30.0
DEFAULT_RATE_LIMIT: Final = 5.0
DEFAULT_MAX_RETRIES: Final = 3


@dataclass(frozen=True)
class ClientSettings:
    """Everything a client needs, read from the connection once. The API key never shows in a repr."""

    base_url: str
    api_key: str = field(repr=False)
    timeout: float = DEFAULT_TIMEOUT
    rate_limit: float = DEFAULT_RATE_LIMIT
    max_retries: int = DEFAULT_MAX_RETRIES
    rate_limit_backend: str | None = None  # the extra; hooks/_shared_limit.py reads it

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
    values = {**{k: v for k, v in extras.items() if v not in (None, "")}, **overrides}
    if not password:
        raise AutocallsValidationError(
            "password",
            f"connection {conn_id!r} has no API key. Put the Autocalls API key in its password field.",
        )
    return ClientSettings(
        base_url=_check_base_url(host or DEFAULT_BASE_URL, _flag(values.get("allow_insecure_http", False))),
        api_key=password,
        timeout=_positive_number(values.get("timeout", DEFAULT_TIMEOUT), "timeout"),
        rate_limit=_positive_number(values.get("rate_limit", DEFAULT_RATE_LIMIT), "rate_limit"),
        max_retries=_count(values.get("max_retries", DEFAULT_MAX_RETRIES), "max_retries"),
        rate_limit_backend=values.get("rate_limit_backend"),
    )


def _pacer(settings: ClientSettings) -> Pacer:
    # One limit per account: keyed by the API key alone (see hooks/_pacing.py).
    return pacer_for(settings.api_key, settings.rate_limit, configured_backend(settings.rate_limit_backend))


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


class AutocallsHook(BaseHook):
    """
    Talk to the Autocalls WhatsApp Business API.

    Every method checks its input before any request, paces itself under the API's rate limit
    (shared by every hook of the process using the same key and base URL), retries what is safe to
    retry, and returns the API's JSON or raises a typed
    :class:`~airflow_provider_autocalls.exceptions.AutocallsError`. Sends are at-most-once: a send
    whose outcome is unknown raises :class:`~airflow_provider_autocalls.exceptions.SendOutcomeUnknownError`
    and is never repeated.

    Methods prefixed ``async_`` do the same on an event loop (for triggers).

    .. code-block:: python

        hook = AutocallsHook()
        hook.send_template(sender_id=12, template_id=45, recipient_phone="+14155550123", variables={"1": "Ada"})

    :param autocalls_conn_id: the Airflow connection: ``host`` is the base URL (empty means
        ``https://app.autocalls.ai/api``), ``password`` the API key; extras ``timeout`` (seconds),
        ``rate_limit`` (requests per second, default 5), ``max_retries`` (default 3).
    :param timeout: overrides the connection's ``timeout``.
    :param rate_limit: overrides the connection's ``rate_limit``.
    :param max_retries: overrides the connection's ``max_retries``.
    """

    conn_name_attr = "autocalls_conn_id"
    default_conn_name = "autocalls_default"
    conn_type = "autocalls"
    hook_name = "Autocalls"

    def __init__(
        self,
        autocalls_conn_id: str = default_conn_name,
        *,
        timeout: float | None = None,
        rate_limit: float | None = None,
        max_retries: int | None = None,
    ) -> None:
        super().__init__()
        self.autocalls_conn_id = autocalls_conn_id
        self.overrides: dict[str, Any] = {
            name: value
            for name, value in (
                ("timeout", timeout),
                ("rate_limit", rate_limit),
                ("max_retries", max_retries),
            )
            if value is not None
        }
        self._async_settings: ClientSettings | None = None
        #: Whether the API may have acted on the latest sync call: a request of it went to the network
        #: and nothing proves the API did nothing (as a 429, a failure to connect or an error answer
        #: do). A send operator reads it when something else (a signal, a broken log pipe)
        #: interrupts the call, to tell a send in doubt from one that surely never went out.
        self.request_may_have_reached_api = False

    # -- connection form -----------------------------------------------------------------------

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """Connection form for Airflow 2.x (3.x reads ``ui-field-behaviour`` from provider info)."""
        from airflow_provider_autocalls.get_provider_info import UI_FIELD_BEHAVIOUR

        return {
            "hidden_fields": UI_FIELD_BEHAVIOUR["hidden-fields"],
            "relabeling": UI_FIELD_BEHAVIOUR["relabeling"],
            "placeholders": UI_FIELD_BEHAVIOUR["placeholders"],
        }

    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        """Extra fields of the connection form for Airflow 2.x (3.x reads ``conn-fields``)."""
        from flask_appbuilder.fieldwidgets import BS3TextFieldWidget
        from flask_babel import lazy_gettext
        from wtforms import BooleanField, StringField
        from wtforms.validators import Optional

        from airflow_provider_autocalls.get_provider_info import CONN_FIELDS

        def text(name: str) -> Any:
            spec = CONN_FIELDS[name]
            return StringField(
                lazy_gettext(spec["label"]),
                widget=BS3TextFieldWidget(),
                validators=[Optional()],
                description=spec["description"],
            )

        return {
            "timeout": text("timeout"),
            "rate_limit": text("rate_limit"),
            "max_retries": text("max_retries"),
            "allow_insecure_http": BooleanField(
                lazy_gettext(CONN_FIELDS["allow_insecure_http"]["label"]),
                description=CONN_FIELDS["allow_insecure_http"]["description"],
            ),
        }

    # -- settings and clients ----------------------------------------------------------------------

    @cached_property
    def settings(self) -> ClientSettings:
        """The connection's client settings, read once (sync path)."""
        conn = self.get_connection(self.autocalls_conn_id)
        return self._settings_from(conn.host, conn.password, conn.extra_dejson)

    async def async_settings(self) -> ClientSettings:
        """The connection's client settings, read once without blocking the event loop."""
        if self._async_settings is None:
            from airflow.providers.common.compat.connection import (
                get_async_connection,
                get_async_extra_dejson,
            )

            conn = await get_async_connection(self.autocalls_conn_id, hook=self)
            extras = await get_async_extra_dejson(conn)
            self._async_settings = self._settings_from(conn.host, conn.password, extras)
        return self._async_settings

    def _settings_from(
        self, host: str | None, password: str | None, extras: Mapping[str, Any]
    ) -> ClientSettings:
        settings = build_settings(self.autocalls_conn_id, host, password, extras, self.overrides)
        mask_secret(settings.api_key)
        return settings

    @cached_property
    def client(self) -> httpx.Client:
        """The hook's one synchronous httpx client, built on first use."""
        return new_client(self.settings)

    def get_conn(self) -> httpx.Client:
        """Return the synchronous httpx client (Airflow's hook interface)."""
        return self.client

    @cached_property
    def pacer(self) -> Pacer:
        """The pacer of this connection's API key (process-wide, or shared through rate_limit_backend)."""
        return _pacer(self.settings)

    async def _async_client(self) -> tuple[httpx.AsyncClient, Pacer]:
        settings = await self.async_settings()
        return shared_async_client(settings), _pacer(settings)

    def close(self) -> None:
        """Close the synchronous client, if one was built (async clients are shared per event loop)."""
        if "client" in self.__dict__:
            self.__dict__.pop("client").close()

    # -- one request, sync and async ---------------------------------------------------------------

    def _request(self, request: ApiRequest) -> Any:
        self.request_may_have_reached_api = False
        retrying = Retrying(**retry_policy(request.kind, self.settings.max_retries))
        return retrying(self._attempt, request)

    def _attempt(self, request: ApiRequest) -> Any:
        import httpx

        client = self.client  # built before the permit is taken: building it takes milliseconds
        try:
            with self.pacer.permit(request.kind.value):
                self.request_may_have_reached_api = True
                with client.stream(
                    request.method, request.path, params=request.params, json=request.body
                ) as r:
                    content = _read_capped(r.iter_bytes(), r.headers)
            return self._decode(request, r.status_code, r.headers, content, self.pacer)
        except httpx.RequestError as exc:  # transport errors, and a body that cannot be decoded
            failure = transport_failure(request, exc)
            self.request_may_have_reached_api = isinstance(failure, SendOutcomeUnknownError)
            raise failure from exc
        except AutocallsError as exc:
            self.request_may_have_reached_api = isinstance(exc, SendOutcomeUnknownError)
            raise

    async def _async_request(self, request: ApiRequest) -> Any:
        settings = await self.async_settings()
        retrying = AsyncRetrying(**retry_policy(request.kind, settings.max_retries))
        return await retrying(self._async_attempt, request)

    async def _async_attempt(self, request: ApiRequest) -> Any:
        import httpx

        client, pacer = await self._async_client()
        try:
            async with (
                pacer.async_permit(request.kind.value),
                client.stream(request.method, request.path, params=request.params, json=request.body) as r,
            ):
                content = await _aread_capped(r.aiter_bytes(), r.headers)
        except httpx.RequestError as exc:  # transport errors, and a body that cannot be decoded
            raise transport_failure(request, exc) from exc
        return self._decode(request, r.status_code, r.headers, content, pacer)

    @staticmethod
    def _decode(
        request: ApiRequest, status: int, headers: httpx.Headers, content: bytes | None, pacer: Pacer
    ) -> Any:
        try:
            return decode_answer(request, status, headers, content)
        except RateLimited as exc:
            metrics.rate_limited(request.kind.value)
            # Past the cap the call fails at once; later calls should not block for an hour either.
            pacer.hold_off(min(exc.retry_after, MAX_RETRY_AFTER))
            raise

    # -- endpoints ---------------------------------------------------------------------------------

    def get_senders(self, status: str = "online") -> list[dict[str, Any]]:
        """
        List the account's WhatsApp senders.

        :param status: ``online`` (default), ``offline`` or ``all``.
        :return: the list under the answer's ``data``.
        """
        request = _senders_request(status)
        return _data_list(request, self._request(request))

    def get_templates(self, sender_id: int | str, status: str = "approved") -> list[dict[str, Any]]:
        """
        List a sender's message templates.

        :param sender_id: the sender's id.
        :param status: ``approved`` (default), ``pending``, ``rejected`` or ``all``.
        :return: the list under the answer's ``data``.
        """
        request = _templates_request(sender_id, status)
        return _data_list(request, self._request(request))

    def get_session_status(self, sender_id: int | str, recipient_phone: str) -> dict[str, Any]:
        """
        Tell whether the 24-hour window with a recipient is open.

        :param sender_id: the sender's id.
        :param recipient_phone: the recipient, in E.164 form (``+14155550123``).
        :return: the whole answer, with ``session_status`` and ``last_customer_message_at``.
        """
        request = _session_status_request(sender_id, recipient_phone)
        return _with_session_status(request, self._request(request))

    async def async_get_session_status(self, sender_id: int | str, recipient_phone: str) -> dict[str, Any]:
        """Async counterpart of :meth:`get_session_status`."""
        request = _session_status_request(sender_id, recipient_phone)
        return _with_session_status(request, await self._async_request(request))

    def send_template(
        self,
        sender_id: int | str,
        template_id: int | str,
        recipient_phone: str,
        recipient_name: str | None = None,
        variables: Mapping[Any, Any] | None = None,
    ) -> dict[str, Any]:
        """
        Send an approved template; this also opens the recipient's 24-hour window.

        :param sender_id: the sender's id.
        :param template_id: the template's id (from :meth:`get_templates`).
        :param recipient_phone: the recipient, in E.164 form.
        :param recipient_name: the recipient's name for the conversation (at most 255 characters).
        :param variables: values for the placeholders, keyed by position (``"1"``) or variable name.
        :return: the answer (``message_sid``, ``conversation_id``, ``status``, ...).
        :raises SendOutcomeUnknownError: the message may have gone out; it was not sent again.
        """
        request = _send_template_request(sender_id, template_id, recipient_phone, recipient_name, variables)
        return dict(self._request(request))

    def send_freeform(self, sender_id: int | str, recipient_phone: str, message: str) -> dict[str, Any]:
        """
        Send free text; only possible while the recipient's 24-hour window is open.

        :param sender_id: the sender's id.
        :param recipient_phone: the recipient, in E.164 form.
        :param message: 1 to 4096 characters.
        :return: the answer (``message_sid``, ``session_status``, ...).
        :raises SessionExpiredError: the window is closed; send a template first.
        :raises SendOutcomeUnknownError: the message may have gone out; it was not sent again.
        """
        request = _send_freeform_request(sender_id, recipient_phone, message)
        return dict(self._request(request))

    async def async_send_template(
        self,
        sender_id: int | str,
        template_id: int | str,
        recipient_phone: str,
        recipient_name: str | None = None,
        variables: Mapping[Any, Any] | None = None,
    ) -> dict[str, Any]:
        """Async counterpart of :meth:`send_template` (for notifiers the triggerer runs)."""
        request = _send_template_request(sender_id, template_id, recipient_phone, recipient_name, variables)
        return dict(await self._async_request(request))

    async def async_send_freeform(
        self, sender_id: int | str, recipient_phone: str, message: str
    ) -> dict[str, Any]:
        """Async counterpart of :meth:`send_freeform` (for notifiers the triggerer runs)."""
        request = _send_freeform_request(sender_id, recipient_phone, message)
        return dict(await self._async_request(request))

    def test_connection(self) -> tuple[bool, str]:
        """Check the connection with a read-only call (list every sender); never raises."""
        try:
            senders = self.get_senders(status="all")
        except AutocallsError as exc:
            return False, str(exc)
        except Exception as exc:
            return False, f"Could not reach the Autocalls API: {type(exc).__name__}."
        finally:
            self.close()
        return True, f"Connected to the Autocalls API: {len(senders)} sender(s) on this account."


def _too_large(headers: httpx.Headers) -> bool:
    declared = headers.get("content-length")
    return declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES


def _read_capped(chunks: Any, headers: httpx.Headers) -> bytes | None:
    if _too_large(headers):
        return None
    body = bytearray()
    for chunk in chunks:
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            return None
    return bytes(body)


async def _aread_capped(chunks: Any, headers: httpx.Headers) -> bytes | None:
    if _too_large(headers):
        return None
    body = bytearray()
    async for chunk in chunks:
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            return None
    return bytes(body)


# -- requests, built (and their input checked) before anything is sent ---------------------------------


def _senders_request(status: str) -> ApiRequest:
    status = check_choice(status, SENDER_STATUSES)
    return ApiRequest("GET", "/user/whatsapp/senders", Kind.READ, params={"status": status})


def _templates_request(sender_id: int | str, status: str) -> ApiRequest:
    sender = check_id(sender_id, "sender_id")
    status = check_choice(status, TEMPLATE_STATUSES)
    return ApiRequest(
        "GET", f"/user/whatsapp/senders/{sender}/templates", Kind.READ, params={"status": status}
    )


def _session_status_request(sender_id: int | str, recipient_phone: str) -> ApiRequest:
    params = {"sender_id": check_id(sender_id, "sender_id"), "recipient_phone": check_phone(recipient_phone)}
    return ApiRequest("GET", "/user/whatsapp/session-status", Kind.READ, params=params)


def _send_template_request(
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


def _send_freeform_request(sender_id: int | str, recipient_phone: str, message: str) -> ApiRequest:
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


def _data_list(request: ApiRequest, body: Any) -> list[dict[str, Any]]:
    data = body.get("data")
    if not isinstance(data, list):
        raise _wrong_shape(request, body, "a list under 'data'")
    return data


def _with_session_status(request: ApiRequest, body: Any) -> dict[str, Any]:
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
