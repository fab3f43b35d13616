"""Operators that send WhatsApp messages through the Autocalls API."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from airflow.providers.common.compat.sdk import AirflowFailException, AirflowSkipException

from airflow_provider_autocalls.exceptions import SessionExpiredError
from airflow_provider_autocalls.hooks.autocalls import AutocallsHook
from airflow_provider_autocalls.operators._send import IF_SESSION_CLOSED, AutocallsSendOperator
from airflow_provider_autocalls.operators.bulk import BulkSendTemplateOperator
from airflow_provider_autocalls.sessions import choose_by_window, reply_baseline
from airflow_provider_autocalls.templates import read_template
from airflow_provider_autocalls.validation import (
    check_id,
    check_message,
    check_recipient_name,
    check_variables,
)

__all__ = [
    "BulkSendTemplateOperator",
    "SendFreeformOperator",
    "SendMessageOperator",
    "SendTemplateOperator",
]


class SendTemplateOperator(AutocallsSendOperator):
    """
    Send an approved WhatsApp template; this also opens the recipient's 24-hour window.

    .. code-block:: python

        SendTemplateOperator(
            task_id="remind",
            sender_id=12,
            template_id=45,
            recipient_phone="{{ params.phone }}",
            variables={"name": "{{ params.name }}", "date": "{{ ds }}"},
        )

    .. seealso:: :meth:`~airflow_provider_autocalls.hooks.autocalls.AutocallsHook.send_template`

    :param sender_id: the WhatsApp sender's id (templated; a rendered numeric string is accepted).
    :param template_id: the approved template's id (templated).
    :param recipient_phone: the recipient in E.164 form, e.g. ``+14155550123`` (templated).
    :param recipient_name: the recipient's name for the conversation (templated).
    :param variables: values for the template's placeholders, keyed by position (``"1"``) or by
        variable name (templated).
    :param check_template: read the sender's templates first (one request) and refuse, before the
        send, a template that is missing or not approved and variables that do not fit it.
    :param autocalls_conn_id: the Autocalls connection (templated).
    :param track_reply: read the session status right before the send (one more request) and put
        the API's ``last_customer_message_at`` in the XCom as ``reply_baseline``, for
        ``SessionOpenSensor(reply_to=...)`` to wait for the customer's reply on the API's clock.
    :param ledger_location: where the task instance's ledger is kept: an absolute folder or an
        object-storage URI every worker can see (templated; default ``[autocalls] ledger_location``).
        The send is claimed there before the request leaves, so no other try of the task (a retry, a
        clear and re-run, a zombie racing its replacement) sends it a second time.
    :return: (XCom) the API's answer (``message_sid``, ``conversation_id``, ``status``, ...) plus
        ``sent_at`` (UTC ISO 8601, taken just before the request), ``sender_id``,
        ``recipient_phone`` and ``template_id``.
    """

    template_fields: Sequence[str] = (
        "sender_id",
        "template_id",
        "recipient_phone",
        "recipient_name",
        "variables",
        "autocalls_conn_id",
        "ledger_location",
    )
    template_fields_renderers = {"variables": "json"}

    def __init__(
        self,
        *,
        sender_id: int | str,
        template_id: int | str,
        recipient_phone: str,
        recipient_name: str | None = None,
        variables: Mapping[Any, Any] | None = None,
        check_template: bool = True,
        autocalls_conn_id: str = AutocallsHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            sender_id=sender_id,
            recipient_phone=recipient_phone,
            autocalls_conn_id=autocalls_conn_id,
            **kwargs,
        )
        self.template_id = template_id
        self.recipient_name = recipient_name
        self.variables = variables
        self.check_template = check_template

    def _check(self) -> str:
        check_id(self.template_id, "template_id")
        check_recipient_name(self.recipient_name)
        check_variables(self.variables)
        return super()._check()

    def _prepare(self) -> None:
        if self.check_template:
            read_template(self.hook, self.sender_id, self.template_id).check(self.variables)

    def _send(self, extras: dict[str, Any]) -> dict[str, Any]:
        return self.hook.send_template(
            sender_id=self.sender_id,
            template_id=self.template_id,
            recipient_phone=self.recipient_phone,
            recipient_name=self.recipient_name,
            variables=self.variables,
        )

    def _describe(self) -> dict[str, Any]:
        return {**super()._describe(), "template_id": self.template_id}


class SendFreeformOperator(AutocallsSendOperator):
    """
    Send free text; WhatsApp allows it only while the recipient's 24-hour window is open.

    .. seealso:: :class:`~airflow_provider_autocalls.sensors.autocalls.SessionOpenSensor` to wait
        for the window (or the customer's reply) first.

    :param sender_id: the WhatsApp sender's id (templated).
    :param recipient_phone: the recipient in E.164 form (templated).
    :param message: the text, 1 to 4096 characters (templated; never read from a file, whatever
        it ends with).
    :param if_session_closed: ``"fail"`` (default): fail with an error saying to send a template
        first; ``"skip"``: skip the task. Either way nothing is sent.
    :param autocalls_conn_id: the Autocalls connection (templated).
    :param ledger_location: as for :class:`SendTemplateOperator`.
    :param track_reply: as for :class:`SendTemplateOperator`.
    :return: (XCom) the API's answer (``message_sid``, ``session_status``, ...) plus ``sent_at``,
        ``sender_id``, ``recipient_phone`` and, with ``track_reply``, ``reply_baseline``.
    """

    template_fields: Sequence[str] = (
        "sender_id",
        "recipient_phone",
        "message",
        "autocalls_conn_id",
        "ledger_location",
    )

    def __init__(
        self,
        *,
        sender_id: int | str,
        recipient_phone: str,
        message: str,
        if_session_closed: Literal["fail", "skip"] = "fail",
        autocalls_conn_id: str = AutocallsHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            sender_id=sender_id,
            recipient_phone=recipient_phone,
            autocalls_conn_id=autocalls_conn_id,
            **kwargs,
        )
        if if_session_closed not in IF_SESSION_CLOSED:
            raise ValueError(f"if_session_closed must be 'fail' or 'skip', got {if_session_closed!r}.")
        self.message = message
        self.if_session_closed = if_session_closed

    def _check(self) -> str:
        check_message(self.message)
        return super()._check()

    def _send(self, extras: dict[str, Any]) -> dict[str, Any]:
        try:
            return self.hook.send_freeform(
                sender_id=self.sender_id, recipient_phone=self.recipient_phone, message=self.message
            )
        except SessionExpiredError as closed:
            # A 403 SESSION_EXPIRED is a definite refusal: nothing was sent.
            text = f"The 24-hour WhatsApp window with {self.recipient_phone} is closed, so nothing was sent."
            if self.if_session_closed == "skip":
                raise AirflowSkipException(text) from closed
            raise AirflowFailException(
                f"{text} Send a template first (SendTemplateOperator), or wait for the customer to reply "
                "(SessionOpenSensor) before sending free text."
            ) from closed


class SendMessageOperator(AutocallsSendOperator):
    """
    Deliver a message whatever the window: free text while it is open, else a template.

    The session status is read first (that read is also the XCom's ``reply_baseline``). While the
    window is open ``message`` goes as free text; when it is closed the fallback template goes. If
    the window closes between that read and the send, the API refuses the free text with
    ``SESSION_EXPIRED`` (nothing is sent) and the fallback goes in the same try. At most once like
    the other send operators: one message per task instance, whichever kind it was.

    .. code-block:: python

        SendMessageOperator(
            task_id="tell_customer",
            sender_id=12,
            recipient_phone="{{ params.phone }}",
            message="Your order {{ params.order }} has shipped.",
            fallback_template_id=45,
            fallback_variables={"name": "{{ params.name }}", "date": "today", "time": "soon"},
        )

    :param sender_id: the WhatsApp sender's id (templated).
    :param recipient_phone: the recipient in E.164 form (templated).
    :param message: the free text, 1 to 4096 characters (templated).
    :param fallback_template_id: the approved template sent while the window is closed (templated);
        ``None``: a closed window ends as ``if_session_closed`` says, and nothing is sent.
    :param fallback_variables: the fallback template's values (templated).
    :param recipient_name: the recipient's name, sent with the template (templated).
    :param if_session_closed: with no fallback, ``"fail"`` (default) or ``"skip"`` the task when the
        window is closed.
    :param check_template: read the sender's templates first (one request) and refuse a missing or
        unapproved fallback, or variables that do not fit it, before anything is sent.
    :param autocalls_conn_id: the Autocalls connection (templated).
    :param ledger_location: as for :class:`SendTemplateOperator` (templated).
    :return: (XCom) the API's answer plus ``kind`` (``"freeform"`` or ``"template"``), ``sent_at``,
        ``sender_id``, ``recipient_phone``, ``reply_baseline``, and ``template_id`` when a template went.
    """

    template_fields: Sequence[str] = (
        "sender_id",
        "recipient_phone",
        "message",
        "fallback_template_id",
        "fallback_variables",
        "recipient_name",
        "autocalls_conn_id",
        "ledger_location",
    )
    template_fields_renderers = {"fallback_variables": "json"}

    def __init__(
        self,
        *,
        sender_id: int | str,
        recipient_phone: str,
        message: str,
        fallback_template_id: int | str | None = None,
        fallback_variables: Mapping[Any, Any] | None = None,
        recipient_name: str | None = None,
        if_session_closed: Literal["fail", "skip"] = "fail",
        check_template: bool = True,
        autocalls_conn_id: str = AutocallsHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            sender_id=sender_id,
            recipient_phone=recipient_phone,
            autocalls_conn_id=autocalls_conn_id,
            track_reply=True,  # the status it reads anyway is the baseline
            **kwargs,
        )
        if if_session_closed not in IF_SESSION_CLOSED:
            raise ValueError(f"if_session_closed must be 'fail' or 'skip', got {if_session_closed!r}.")
        self.message = message
        self.fallback_template_id = fallback_template_id
        self.fallback_variables = fallback_variables
        self.recipient_name = recipient_name
        self.if_session_closed = if_session_closed
        self.check_template = check_template
        self._status: dict[str, Any] = {}

    def _check(self) -> str:
        check_message(self.message)
        if self.fallback_template_id is not None:
            check_id(self.fallback_template_id, "fallback_template_id")
        check_variables(self.fallback_variables)
        check_recipient_name(self.recipient_name)
        return super()._check()

    def _prepare(self) -> None:
        if self.check_template and self.fallback_template_id is not None:
            read_template(self.hook, self.sender_id, self.fallback_template_id).check(
                self.fallback_variables, "fallback_variables"
            )

    def _reply_baseline(self) -> str | None:
        # One read serves both: the baseline and the window decision.
        self._status = self.hook.get_session_status(self.sender_id, self.recipient_phone)
        return reply_baseline(self._status)

    def _send(self, extras: dict[str, Any]) -> dict[str, Any]:
        choice = choose_by_window(self._status, has_fallback=self.fallback_template_id is not None)
        if choice.kind == "freeform":
            extras["kind"] = "freeform"
            try:
                return self.hook.send_freeform(self.sender_id, self.recipient_phone, self.message)
            except SessionExpiredError as closed:
                # A definite refusal: nothing was sent, so the fallback may go in this same try.
                if self.fallback_template_id is None:
                    raise self._closed() from closed
                self.log.info(
                    "The window with %s closed before the send; sending the template.", self.recipient_phone
                )
        elif choice.kind is None:
            raise self._closed()
        extras.update(kind="template", template_id=self.fallback_template_id)
        return self.hook.send_template(
            self.sender_id,
            self.fallback_template_id,  # type: ignore[arg-type]
            self.recipient_phone,
            self.recipient_name,
            self.fallback_variables,
        )

    def _closed(self) -> BaseException:
        text = (
            f"The 24-hour WhatsApp window with {self.recipient_phone} is closed and there is no "
            "fallback_template_id, so nothing was sent."
        )
        if self.if_session_closed == "skip":
            return AirflowSkipException(text)
        return AirflowFailException(
            f"{text} Give a fallback template, or wait for the customer's reply first."
        )
