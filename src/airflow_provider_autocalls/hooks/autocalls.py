"""Hook for the Autocalls WhatsApp Business API."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Mapping
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import BaseHook, mask_secret
from tenacity import AsyncRetrying, Retrying

from airflow_provider_autocalls import metrics
from airflow_provider_autocalls.exceptions import AutocallsError
from airflow_provider_autocalls.hooks import _endpoints as endpoints
from airflow_provider_autocalls.hooks._answers import (
    ApiRequest,
    Kind,
    RateLimited,
    decode_answer,
    transport_failure,
)
from airflow_provider_autocalls.hooks._claims import Guard, Settlement, guard_for
from airflow_provider_autocalls.hooks._clients import new_client, shared_async_client
from airflow_provider_autocalls.hooks._pacing import Pacer, pacer_for
from airflow_provider_autocalls.hooks._retry import MAX_RETRY_AFTER, retry_policy
from airflow_provider_autocalls.hooks._settings import (
    DEFAULT_BASE_URL,
    DEFAULT_MAX_RETRIES,
    DEFAULT_RATE_LIMIT,
    DEFAULT_TIMEOUT,
    ClientSettings,
    build_settings,
)
from airflow_provider_autocalls.hooks._shared_limit import configured_backend

if TYPE_CHECKING:
    import httpx


# Importable from here as before; they live in the settings module.
__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_MAX_RETRIES",
    "DEFAULT_RATE_LIMIT",
    "DEFAULT_TIMEOUT",
    "AutocallsHook",
    "ClientSettings",
    "build_settings",
]


def _pacer(settings: ClientSettings) -> Pacer:
    # One limit per account: keyed by the API key alone (see hooks/_pacing.py).
    return pacer_for(settings.api_key, settings.rate_limit, configured_backend(settings.rate_limit_backend))


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
        ``https://app.autocalls.ai/api``), ``password`` the API key; extras ``timeout`` (seconds
        one request may take in all, answer included), ``rate_limit`` (requests per second,
        default 5), ``max_retries`` (default 3).
    :param timeout: overrides the connection's ``timeout``.
    :param rate_limit: overrides the connection's ``rate_limit``.
    :param max_retries: overrides the connection's ``max_retries``.
    :param ledger_location: inside a running task, where the task instance's ledger of sends made
        through this hook is kept (default ``[autocalls] ledger_location``); see "At most once".
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
        ledger_location: str | None = None,
    ) -> None:
        super().__init__()
        self.autocalls_conn_id = autocalls_conn_id
        self.ledger_location = ledger_location
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
        # Per thread: a bulk send calls one hook from several threads at once.
        self._calls = threading.local()

    @property
    def request_may_have_reached_api(self) -> bool:
        """
        Whether the API may have acted on this thread's latest sync call: a request of it went to
        the network and nothing proves the API did nothing (as a 429, a failure to connect or an
        error answer do). Read when something else (a signal, a broken log pipe) interrupts the
        call, to tell a send in doubt from one that surely never went out.
        """
        latest: Settlement | None = getattr(self._calls, "latest", None)
        return latest is not None and latest.may_have_reached_api

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

    def _guard(self, request: ApiRequest) -> Guard | None:
        """The claim a send is made under (see ``hooks/_claims.py``); reads have none."""
        return guard_for(request, self.ledger_location) if request.kind is Kind.SEND else None

    # A call: its claim (if a send), then attempts under the retry policy, all inside one
    # ``Settlement`` (hooks/_claims.py), which settles the claim by what reached the wire.
    # Each attempt: wait for the pacer's permit; from the moment it is granted, one deadline
    # (the connection's ``timeout``) bounds everything until the permit is given back. Between
    # the permit and the request is the one place for a step that must come right before a
    # request leaves. The request itself is written and its answer read in ``hooks/_transport.py``.

    def _request(self, request: ApiRequest) -> Any:
        self._calls.latest = None
        guard = self._guard(request)
        if guard is not None and guard.replay is not None:
            self.log.info("An earlier try of this task made this send already; returning its answer.")
            return guard.replay
        # Kept per thread, for ``request_may_have_reached_api``.
        settlement = self._calls.latest = Settlement(request, guard)
        retrying = Retrying(**retry_policy(request.kind, self.settings.max_retries))
        with settlement:
            settlement.answer = retrying(self._attempt, request, settlement)
        return settlement.answer

    def _attempt(self, request: ApiRequest, settlement: Settlement) -> Any:
        import httpx

        from airflow_provider_autocalls.hooks._transport import WireWatch, exchange

        # Built before the permit is taken: building the client takes milliseconds.
        client, pacer, timeout = self.client, self.pacer, self.settings.timeout
        guard = settlement.guard
        # Its callback runs in this thread, right before the first byte may be written, so that an
        # interruption from outside (a signal, a kill) that comes later finds the call in doubt.
        wire = WireWatch(on_send=settlement.request_may_be_out)
        try:
            with pacer.permit(request.kind.value):
                deadline = time.monotonic() + timeout
                if guard is not None and guard.claim is not None:
                    guard.claim.take()  # after the permit, right before the request leaves
                status, headers, content = exchange(client, request, wire, deadline)
            return self._decode(request, status, headers, content, pacer)
        except httpx.RequestError as exc:  # transport errors, and a body that cannot be decoded
            failure = transport_failure(request, exc, sent=wire.sent, timeout=timeout)
            settlement.attempt_failed(failure)
            raise failure from exc
        except AutocallsError as exc:
            settlement.attempt_failed(exc)
            raise

    async def _async_request(self, request: ApiRequest) -> Any:
        settings = await self.async_settings()
        guard = self._guard(request)
        if guard is not None and guard.replay is not None:
            return guard.replay
        # Per call, not per hook: coroutines of one hook run interleaved on one thread.
        settlement = Settlement(request, guard)
        retrying = AsyncRetrying(**retry_policy(request.kind, settings.max_retries))
        with settlement:
            settlement.answer = await retrying(self._async_attempt, request, settlement)
        return settlement.answer

    async def _async_attempt(self, request: ApiRequest, settlement: Settlement) -> Any:
        import httpx

        from airflow_provider_autocalls.hooks._transport import WireWatch, async_exchange

        client, pacer = await self._async_client()
        timeout = (await self.async_settings()).timeout
        guard = settlement.guard
        # As on the sync path: a cancellation after the request may have left finds the call in doubt.
        wire = WireWatch(on_send=settlement.request_may_be_out)
        try:
            async with pacer.async_permit(request.kind.value):
                deadline = asyncio.get_running_loop().time() + timeout
                if guard is not None and guard.claim is not None:
                    guard.claim.take()  # after the permit, right before the request leaves
                async with asyncio.timeout_at(deadline):
                    status, headers, content = await async_exchange(client, request, wire)
            return self._decode(request, status, headers, content, pacer)
        # Transport errors, bodies that cannot be decoded, and the deadline (TimeoutError).
        except (httpx.RequestError, TimeoutError) as exc:
            failure = transport_failure(request, exc, sent=wire.sent, timeout=timeout)
            settlement.attempt_failed(failure)
            raise failure from exc
        except AutocallsError as exc:
            settlement.attempt_failed(exc)
            raise

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
        request = endpoints.senders_request(status)
        return endpoints.data_list(request, self._request(request))

    def get_templates(self, sender_id: int | str, status: str = "approved") -> list[dict[str, Any]]:
        """
        List a sender's message templates.

        :param sender_id: the sender's id.
        :param status: ``approved`` (default), ``pending``, ``rejected`` or ``all``.
        :return: the list under the answer's ``data``.
        """
        request = endpoints.templates_request(sender_id, status)
        return endpoints.data_list(request, self._request(request))

    def get_session_status(self, sender_id: int | str, recipient_phone: str) -> dict[str, Any]:
        """
        Tell whether the 24-hour window with a recipient is open.

        :param sender_id: the sender's id.
        :param recipient_phone: the recipient, in E.164 form (``+14155550123``).
        :return: the whole answer, with ``session_status`` and ``last_customer_message_at``.
        """
        request = endpoints.session_status_request(sender_id, recipient_phone)
        return endpoints.with_session_status(request, self._request(request))

    async def async_get_session_status(self, sender_id: int | str, recipient_phone: str) -> dict[str, Any]:
        """Async counterpart of :meth:`get_session_status`."""
        request = endpoints.session_status_request(sender_id, recipient_phone)
        return endpoints.with_session_status(request, await self._async_request(request))

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
        with endpoints.refusals_counted():
            request = endpoints.send_template_request(
                sender_id, template_id, recipient_phone, recipient_name, variables
            )
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
        with endpoints.refusals_counted():
            request = endpoints.send_freeform_request(sender_id, recipient_phone, message)
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
        with endpoints.refusals_counted():
            request = endpoints.send_template_request(
                sender_id, template_id, recipient_phone, recipient_name, variables
            )
        return dict(await self._async_request(request))

    async def async_send_freeform(
        self, sender_id: int | str, recipient_phone: str, message: str
    ) -> dict[str, Any]:
        """Async counterpart of :meth:`send_freeform` (for notifiers the triggerer runs)."""
        with endpoints.refusals_counted():
            request = endpoints.send_freeform_request(sender_id, recipient_phone, message)
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
