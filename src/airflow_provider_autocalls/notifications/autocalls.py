"""Notifier for Airflow callbacks: a WhatsApp message when a task or DAG run succeeds, fails or misses a deadline."""

from __future__ import annotations

import asyncio
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.notifier import BaseNotifier
from airflow.providers.common.compat.version_compat import AIRFLOW_V_3_1_PLUS

from airflow_provider_autocalls.exceptions import AutocallsError, SessionExpiredError
from airflow_provider_autocalls.hooks._claims import unguarded
from airflow_provider_autocalls.hooks.autocalls import AutocallsHook
from airflow_provider_autocalls.sessions import choose_by_window
from airflow_provider_autocalls.templates import template_spec
from airflow_provider_autocalls.validation import (
    check_id,
    check_message,
    check_phone,
    check_recipient_name,
    check_variables,
)

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context


@dataclass(frozen=True)
class _Call:
    """One hook call the notification needs; :meth:`notify` makes it sync, :meth:`async_notify` async."""

    method: str
    args: tuple[Any, ...]


#: What the notification does, written once for both ways of running it: each ``yield`` hands a
#: hook call to the runner and receives its answer (or has the call's error raised at the yield).
_Steps = Generator[_Call, Any, None]


class AutocallsNotifier(BaseNotifier):
    """
    Send a WhatsApp message from a callback: free text while the window is open, else a template.

    With ``message`` only, free text is sent and a closed window is an error. With
    ``template_id`` only, the template is sent. With both, the session status decides (the same
    decision as ``SendMessageOperator``): free text while the window is open, the template
    otherwise, and the template too if the window closes between the check and the send (the API
    refuses the free text then, so nothing is sent twice). With ``check_template`` (default), the
    sender's templates are read once and a template the sender lacks, one not approved, or
    variables that do not fit it fail before anything is sent. Every field is rendered with the
    callback's context.

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
    :param check_template: check the template and ``variables`` against the sender's template
        listing before sending (one extra request). Off: send unchecked, for accounts whose
        listing is not trusted.
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
        check_template: bool = True,
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
        self.check_template = check_template

    @cached_property
    def hook(self) -> AutocallsHook:
        return AutocallsHook(autocalls_conn_id=self.autocalls_conn_id)

    def _steps(self) -> _Steps:
        """Check every rendered field, then the template, then send; the same for sync and async."""
        sender_id = check_id(self.sender_id, "sender_id")
        phone = check_phone(self.recipient_phone)
        message = None if self.message is None else check_message(self.message)
        template_id = None if self.template_id is None else check_id(self.template_id, "template_id")
        variables = check_variables(self.variables)
        name = check_recipient_name(self.recipient_name)
        if template_id is not None and self.check_template:
            templates = yield _Call("get_templates", (sender_id, "all"))
            variables = template_spec(templates, template_id, sender_id).check(variables)
        if message is not None:
            if template_id is not None:
                status = yield _Call("get_session_status", (sender_id, phone))
                if choose_by_window(status, has_fallback=True).kind == "template":
                    self.log.info("The window with %s is closed; sending template %s.", phone, template_id)
                    yield _Call("send_template", (sender_id, template_id, phone, name, variables))
                    return
            try:
                yield _Call("send_freeform", (sender_id, phone, message))
                return
            except SessionExpiredError:
                # A definite refusal (nothing was sent): the window closed since the check.
                if template_id is None:
                    raise
                self.log.info(
                    "The window with %s closed before the send; sending template %s.", phone, template_id
                )
        yield _Call("send_template", (sender_id, template_id, phone, name, variables))

    def notify(self, context: Context) -> None:
        """Send the message (Airflow calls this for task and DAG callbacks)."""
        # A notification belongs to the try that calls it: no task-instance ledger (each failing try
        # notifies), and the hook still never repeats a send in doubt.
        with unguarded():
            self._run()

    def _run(self) -> None:
        steps = self._steps()
        answer: Any = None
        error: AutocallsError | None = None
        while True:
            try:
                call = steps.send(answer) if error is None else steps.throw(error)
            except StopIteration:
                return
            answer, error = None, None
            try:
                answer = getattr(self.hook, call.method)(*call.args)
            except AutocallsError as failed:
                error = failed

    async def async_notify(self, context: Context) -> None:
        """
        Send the message without blocking the event loop (the triggerer calls this, e.g. for deadlines).

        .. note:: Airflow runs such callbacks as triggers, and a triggerer that dies while the send is
            in flight runs the callback again when it restarts: there, a notification is at-least-once.
            The send itself is never retried when its outcome is unknown.
        """
        steps = self._steps()
        answer: Any = None
        error: AutocallsError | None = None
        while True:
            try:
                call = steps.send(answer) if error is None else steps.throw(error)
            except StopIteration:
                return
            answer, error = None, None
            try:
                answer = await self._async_call(call)
            except AutocallsError as failed:
                error = failed

    async def _async_call(self, call: _Call) -> Any:
        method = getattr(self.hook, f"async_{call.method}", None)
        if method is not None:
            return await method(*call.args)
        # The hook has no async template listing: read it on a worker thread, off the event loop.
        return await asyncio.to_thread(getattr(self.hook, call.method), *call.args)


send_autocalls_notification = AutocallsNotifier
