"""Sensor that waits for a customer's 24-hour WhatsApp window to be open, or for their reply."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import (
    AirflowFailException,
    AirflowSensorTimeout,
    AirflowSkipException,
    BaseSensorOperator,
    PokeReturnValue,
    conf,
)

from airflow_provider_autocalls._task_errors import fail_fast_unless_retryable
from airflow_provider_autocalls.hooks.autocalls import AutocallsHook
from airflow_provider_autocalls.sessions import is_ready, parse_moment, reply_since
from airflow_provider_autocalls.triggers.autocalls import SessionOpenTrigger, error_from_event
from airflow_provider_autocalls.validation import check_id, check_phone

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context


class SessionOpenSensor(BaseSensorOperator):
    """
    Wait until the recipient's 24-hour window is open, or until the customer replied to a send.

    A template send opens the window by itself, so "open" alone does not mean the customer
    answered. To wait for the customer's *reply* to a send, pass that send task's XCom as
    ``reply_to``: the send operators read the session status just before sending and keep the
    API's ``last_customer_message_at`` in their XCom (key ``reply_baseline``); the sensor succeeds
    once the API's ``last_customer_message_at`` is later than that. Both times come from the API's
    clock, so a worker whose clock is minutes off the API's changes nothing, and a reply in the
    same second as the send is seen. (The one case out of reach: an earlier customer message,
    the send and the reply all within one second of the API's clock, which writes whole seconds.)

    Works in ``poke`` and ``reschedule`` mode and deferred to the triggerer (``deferrable=True``);
    ``timeout`` and ``soft_fail`` behave as for every sensor, and the deferred wait ends at
    ``timeout`` by itself as well.

    .. code-block:: python

        send = SendTemplateOperator(task_id="send_template", ...)
        SessionOpenSensor(
            task_id="wait_for_reply",
            sender_id=12,
            recipient_phone="+14155550123",
            reply_to=send.output,
            deferrable=True,
            poke_interval=60,
            timeout=6 * 3600,
        )

    :param sender_id: the WhatsApp sender's id (templated).
    :param recipient_phone: the recipient in E.164 form (templated).
    :param reply_to: the XCom of the send to wait for a reply to (templated): ``send_task.output``,
        or ``"{{ ti.xcom_pull(task_ids='send_task') }}"``. It must hold ``reply_baseline``.
    :param replied_after: instead of ``reply_to``: a datetime or ISO 8601 string (templated); the
        customer's last message must be later than this moment, which is compared with the API's
        clock (to the second). A naive value is read in ``[core] default_timezone``; a value that
        renders empty is an error.
    :param autocalls_conn_id: the Autocalls connection (templated).
    :param deferrable: wait in the triggerer instead of holding a worker slot. Defaults to
        ``[operators] default_deferrable``.
    :return: (XCom) the session status, as the API returns it.
    """

    template_fields: Sequence[str] = (
        "sender_id",
        "recipient_phone",
        "reply_to",
        "replied_after",
        "autocalls_conn_id",
    )
    template_fields_renderers = {"reply_to": "json"}
    ui_color = "#25d366"

    def __init__(
        self,
        *,
        sender_id: int | str,
        recipient_phone: str,
        reply_to: Any = None,
        replied_after: datetime | str | None = None,
        autocalls_conn_id: str = AutocallsHook.default_conn_name,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if reply_to is not None and replied_after is not None:
            raise ValueError("Give reply_to or replied_after, not both.")
        self.sender_id = sender_id
        self.recipient_phone = recipient_phone
        self.reply_to = reply_to
        self.replied_after = replied_after
        self.autocalls_conn_id = autocalls_conn_id
        self.deferrable = deferrable

    @cached_property
    def hook(self) -> AutocallsHook:
        return AutocallsHook(autocalls_conn_id=self.autocalls_conn_id)

    def _replied_since(self) -> datetime | None:
        """The moment (API clock) the customer's last message must be later than; ``None``: no reply check."""
        with fail_fast_unless_retryable():
            if self.reply_to is not None:
                return reply_since(self.reply_to)
            return parse_moment(self.replied_after)

    def poke(self, context: Context) -> PokeReturnValue:
        since = self._replied_since()  # checked before any request, like every other input
        with fail_fast_unless_retryable():
            status = self.hook.get_session_status(self.sender_id, self.recipient_phone)
            done = is_ready(status, since)
        if not done:
            self.log.info("The window with %s is not ready yet.", self.recipient_phone)
        return PokeReturnValue(is_done=done, xcom_value=status)

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            return super().execute(context)
        # Check once first: no deferral (and no triggerer round trip) when the window is ready now.
        try:
            first = self.poke(context)
            with fail_fast_unless_retryable():
                sender_id = check_id(self.sender_id, "sender_id")
                recipient_phone = check_phone(self.recipient_phone)
        except AirflowFailException as failure:
            # What BaseSensorOperator does for a poke that fails, which this first check bypasses.
            self._skip_if_soft_fail(failure)
            raise
        if first.is_done:
            return first.xcom_value
        since = self._replied_since()
        timeout = timedelta(seconds=self.timeout)
        self.defer(
            trigger=SessionOpenTrigger(
                sender_id=sender_id,
                recipient_phone=recipient_phone,
                replied_after=since.isoformat() if since else None,
                autocalls_conn_id=self.autocalls_conn_id,
                poke_interval=self.poke_interval,
                hook_kwargs=self.hook.overrides,
                end_by=(datetime.now(UTC) + timeout).isoformat(),
            ),
            method_name="execute_complete",
            timeout=timeout,
        )

    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        """Turn the trigger's event into the sensor's XCom, or into the failure it reports."""
        if event.get("status") == "success":
            return event["session_status"]
        if event.get("status") == "timeout":
            timed_out = AirflowSensorTimeout(f"Sensor has timed out: {event.get('message', '')}")
            self._skip_if_soft_fail(timed_out)
            raise timed_out
        try:
            with fail_fast_unless_retryable():
                raise error_from_event(event)
        except AirflowFailException as failure:
            self._skip_if_soft_fail(failure)
            raise

    def _skip_if_soft_fail(self, failure: BaseException) -> None:
        if self.soft_fail or getattr(self, "never_fail", False):
            raise AirflowSkipException(f"Skipping, as soft_fail is set: {failure}") from failure
