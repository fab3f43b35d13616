"""Operators that send WhatsApp messages through the Autocalls API."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal

from airflow.providers.common.compat.sdk import (
    AirflowFailException,
    AirflowSkipException,
    BaseOperator,
    timezone,
)

from airflow_provider_autocalls._task_errors import fail_fast_unless_retryable
from airflow_provider_autocalls.exceptions import AutocallsError, SendOutcomeUnknownError, SessionExpiredError
from airflow_provider_autocalls.hooks.autocalls import AutocallsHook
from airflow_provider_autocalls.ledger import Ledger, State, ledger_for

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

IF_SESSION_CLOSED = ("fail", "skip")


def _in_doubt(error: BaseException) -> bool:
    """Whether a send that ended in ``error`` may have reached the API."""
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, SendOutcomeUnknownError):
            return True
        if isinstance(cause, AutocallsError):
            return False  # every other error of ours is a definite "nothing was sent"
        cause = cause.__cause__
    # Killed, timed out or interrupted mid-call: the request may have been on the wire.
    return not isinstance(error, AirflowSkipException | AirflowFailException)


class _AutocallsSendOperator(BaseOperator):
    """What both send operators share: the hook, the ledger, the XCom shape, how errors end the task."""

    ui_color = "#25d366"

    def __init__(
        self,
        *,
        sender_id: int | str,
        recipient_phone: str,
        autocalls_conn_id: str = AutocallsHook.default_conn_name,
        ledger_location: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.sender_id = sender_id
        self.recipient_phone = recipient_phone
        self.autocalls_conn_id = autocalls_conn_id
        self.ledger_location = ledger_location

    @cached_property
    def hook(self) -> AutocallsHook:
        return AutocallsHook(autocalls_conn_id=self.autocalls_conn_id)

    def execute(self, context: Context) -> dict[str, Any]:
        ledger = ledger_for(context, self.ledger_location)
        if ledger is None:
            return self._send_and_describe()
        try:
            return self._send_at_most_once(ledger)
        finally:
            ledger.close()

    def _send_at_most_once(self, ledger: Ledger) -> dict[str, Any]:
        """Consult the task instance's ledger so that no later try of this task sends again."""
        recipient = str(self.recipient_phone)
        earlier = ledger.last(recipient)
        if earlier and earlier["state"] == State.SENT:
            self.log.info(
                "An earlier try sent this message (%s); not sending again.", earlier.get("message_sid")
            )
            return dict(earlier["xcom"])
        if earlier and earlier["state"] in (State.STARTED, State.UNKNOWN):
            if earlier["state"] == State.STARTED:
                ledger.finish(recipient, State.UNKNOWN)
            raise AirflowFailException(
                f"An earlier try of this task started sending to {recipient} and never learned the outcome "
                "(the worker stopped, or the answer was lost), so the message may have been delivered. It is "
                "not sent again automatically: check the conversation in the Autocalls dashboard, and to send "
                f"anyway remove the ledger {ledger.location}."
            )
        ledger.begin(recipient)
        try:
            result = self._send_and_describe()
        except BaseException as error:
            ledger.finish(recipient, State.UNKNOWN if _in_doubt(error) else State.RELEASED)
            raise
        ledger.finish(recipient, State.SENT, message_sid=result.get("message_sid"), xcom=result)
        return result

    def _send_and_describe(self) -> dict[str, Any]:
        sent_at = timezone.utcnow().isoformat()
        with fail_fast_unless_retryable():
            answer = self._send()
        self.log.info("Sent to %s: message_sid %s", self.recipient_phone, answer.get("message_sid"))
        return {
            **answer,
            "sent_at": sent_at,
            "sender_id": self.sender_id,
            "recipient_phone": self.recipient_phone,
        }

    def _send(self) -> dict[str, Any]:
        raise NotImplementedError


class SendTemplateOperator(_AutocallsSendOperator):
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
    :param autocalls_conn_id: the Autocalls connection (templated).
    :param ledger_location: where the task instance's ledger is kept: a folder or an object-storage
        URI every worker can see (default ``[autocalls] ledger_location``). A later try of the task
        reads it and never sends a second time.
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

    def _send(self) -> dict[str, Any]:
        answer = self.hook.send_template(
            sender_id=self.sender_id,
            template_id=self.template_id,
            recipient_phone=self.recipient_phone,
            recipient_name=self.recipient_name,
            variables=self.variables,
        )
        return {**answer, "template_id": self.template_id}


class SendFreeformOperator(_AutocallsSendOperator):
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
    :return: (XCom) the API's answer (``message_sid``, ``session_status``, ...) plus ``sent_at``,
        ``sender_id`` and ``recipient_phone``.
    """

    template_fields: Sequence[str] = ("sender_id", "recipient_phone", "message", "autocalls_conn_id")

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

    def _send(self) -> dict[str, Any]:
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
