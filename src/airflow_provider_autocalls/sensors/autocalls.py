"""Sensor that waits for a customer's 24-hour WhatsApp window to be open."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import (
    AirflowFailException,
    AirflowSkipException,
    BaseSensorOperator,
    PokeReturnValue,
    conf,
)

from airflow_provider_autocalls._task_errors import fail_fast_unless_retryable
from airflow_provider_autocalls.hooks.autocalls import AutocallsHook
from airflow_provider_autocalls.sessions import is_ready, parse_moment
from airflow_provider_autocalls.triggers.autocalls import SessionOpenTrigger, error_from_event
from airflow_provider_autocalls.validation import check_id, check_phone

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context


class SessionOpenSensor(BaseSensorOperator):
    """
    Wait until the recipient's 24-hour window is open, or until the customer replied after a moment.

    A template send opens the window by itself, so to wait for the customer's *answer* to a
    template pass ``replied_after`` (e.g. the template task's ``sent_at``). Works in ``poke`` and
    ``reschedule`` mode and deferred to the triggerer (``deferrable=True``); ``timeout`` and
    ``soft_fail`` behave as for every sensor.

    .. code-block:: python

        SessionOpenSensor(
            task_id="wait_for_reply",
            sender_id=12,
            recipient_phone="+14155550123",
            replied_after="{{ ti.xcom_pull(task_ids='send_template')['sent_at'] }}",
            deferrable=True,
            poke_interval=60,
            timeout=6 * 3600,
        )

    :param sender_id: the WhatsApp sender's id (templated).
    :param recipient_phone: the recipient in E.164 form (templated).
    :param replied_after: a datetime or ISO 8601 string (templated): succeed only once the customer's
        last message is later than this moment. Naive values are taken as UTC.
    :param autocalls_conn_id: the Autocalls connection (templated).
    :param deferrable: wait in the triggerer instead of holding a worker slot. Defaults to
        ``[operators] default_deferrable``.
    :return: (XCom) the session status, as the API returns it.
    """

    template_fields: Sequence[str] = ("sender_id", "recipient_phone", "replied_after", "autocalls_conn_id")
    ui_color = "#25d366"

    def __init__(
        self,
        *,
        sender_id: int | str,
        recipient_phone: str,
        replied_after: datetime | str | None = None,
        autocalls_conn_id: str = AutocallsHook.default_conn_name,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.sender_id = sender_id
        self.recipient_phone = recipient_phone
        self.replied_after = replied_after
        self.autocalls_conn_id = autocalls_conn_id
        self.deferrable = deferrable

    @cached_property
    def hook(self) -> AutocallsHook:
        return AutocallsHook(autocalls_conn_id=self.autocalls_conn_id)

    def _moment(self) -> datetime | None:
        with fail_fast_unless_retryable():
            return parse_moment(self.replied_after)

    def poke(self, context: Context) -> PokeReturnValue:
        moment = self._moment()  # checked before any request, like every other input
        with fail_fast_unless_retryable():
            status = self.hook.get_session_status(self.sender_id, self.recipient_phone)
        done = is_ready(status, moment)
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
            if self.soft_fail or getattr(self, "never_fail", False):
                raise AirflowSkipException(f"Skipping, as soft_fail is set: {failure}") from failure
            raise
        if first.is_done:
            return first.xcom_value
        moment = self._moment()
        self.defer(
            trigger=SessionOpenTrigger(
                sender_id=sender_id,
                recipient_phone=recipient_phone,
                replied_after=moment.isoformat() if moment else None,
                autocalls_conn_id=self.autocalls_conn_id,
                poke_interval=self.poke_interval,
                hook_kwargs=self.hook.overrides,
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=self.timeout),
        )

    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        """Turn the trigger's event into the sensor's XCom, or into the failure it reports."""
        if event.get("status") == "success":
            return event["session_status"]
        with fail_fast_unless_retryable():
            raise error_from_event(event)
