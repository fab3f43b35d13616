"""Notifier for Airflow callbacks: a WhatsApp message when a task or DAG run succeeds, fails or misses a deadline."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.notifier import BaseNotifier
from airflow.providers.common.compat.version_compat import AIRFLOW_V_3_1_PLUS

from airflow_provider_autocalls.exceptions import SessionExpiredError
from airflow_provider_autocalls.hooks.autocalls import AutocallsHook
from airflow_provider_autocalls.validation import (
    check_id,
    check_message,
    check_phone,
    check_recipient_name,
    check_variables,
)

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context


class AutocallsNotifier(BaseNotifier):
    """
    Send a WhatsApp message from a callback: free text while the window is open, else a template.

    With ``message`` only, free text is sent and a closed window is an error. With
    ``template_id`` only, the template is sent. With both, free text is tried first and the
    template is sent when the window is closed (the API refuses free text then, so nothing is sent
    twice). Every field is rendered with the callback's context.

    .. code-block:: python

        PythonOperator(
            ...,
            on_failure_callback=send_autocalls_notification(
                sender_id=12,
                recipient_phone="+14155550123",
                template_id=46,
                message="{{ dag.dag_id }}.{{ ti.task_id }} failed: {{ exception }}",
            ),
        )

    :param sender_id: the WhatsApp sender's id (templated).
    :param recipient_phone: the recipient in E.164 form (templated).
    :param message: free text, 1 to 4096 characters (templated).
    :param template_id: an approved template's id (templated).
    :param variables: the template's placeholder values (templated).
    :param recipient_name: the recipient's name for the conversation (templated).
    :param autocalls_conn_id: the Autocalls connection (templated).
    """

    template_fields: Sequence[str] = (
        "sender_id",
        "recipient_phone",
        "message",
        "template_id",
        "variables",
        "recipient_name",
        "autocalls_conn_id",
    )

    def __init__(
        self,
        *,
        sender_id: int | str,
        recipient_phone: str,
        message: str | None = None,
        template_id: int | str | None = None,
        variables: Mapping[Any, Any] | None = None,
        recipient_name: str | None = None,
        autocalls_conn_id: str = AutocallsHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        if AIRFLOW_V_3_1_PLUS:
            super().__init__(**kwargs)
        else:
            super().__init__()
        if message is None and template_id is None:
            raise ValueError("AutocallsNotifier needs a message, a template_id, or both.")
        self.sender_id = sender_id
        self.recipient_phone = recipient_phone
        self.message = message
        self.template_id = template_id
        self.variables = variables
        self.recipient_name = recipient_name
        self.autocalls_conn_id = autocalls_conn_id

    @cached_property
    def hook(self) -> AutocallsHook:
        return AutocallsHook(autocalls_conn_id=self.autocalls_conn_id)

    @property
    def _template_id(self) -> int | str:
        if self.template_id is None:
            raise ValueError("AutocallsNotifier needs a message, a template_id, or both.")
        return self.template_id

    def _check(self) -> None:
        """Check every rendered field before any request, whichever message ends up being sent."""
        check_id(self.sender_id, "sender_id")
        check_phone(self.recipient_phone)
        if self.message is not None:
            check_message(self.message)
        if self.template_id is not None:
            check_id(self.template_id, "template_id")
        check_variables(self.variables)
        check_recipient_name(self.recipient_name)

    def notify(self, context: Context) -> None:
        """Send the message (Airflow calls this for task and DAG callbacks)."""
        self._check()
        if self.message is not None:
            try:
                self.hook.send_freeform(self.sender_id, self.recipient_phone, self.message)
                return
            except SessionExpiredError:
                if self.template_id is None:
                    raise
                self.log.info(
                    "The window with %s is closed; sending template %s.",
                    self.recipient_phone,
                    self.template_id,
                )
        self.hook.send_template(
            self.sender_id, self._template_id, self.recipient_phone, self.recipient_name, self.variables
        )

    async def async_notify(self, context: Context) -> None:
        """
        Send the message without blocking the event loop (the triggerer calls this, e.g. for deadlines).

        .. note:: Airflow runs such callbacks as triggers, and a triggerer that dies while the send is
            in flight runs the callback again when it restarts: there, a notification is at-least-once.
            The send itself is never retried when its outcome is unknown.
        """
        self._check()
        if self.message is not None:
            try:
                await self.hook.async_send_freeform(self.sender_id, self.recipient_phone, self.message)
                return
            except SessionExpiredError:
                if self.template_id is None:
                    raise
        await self.hook.async_send_template(
            self.sender_id, self._template_id, self.recipient_phone, self.recipient_name, self.variables
        )


send_autocalls_notification = AutocallsNotifier
