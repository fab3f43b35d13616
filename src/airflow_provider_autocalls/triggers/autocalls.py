"""Trigger that waits, in the triggerer, for a customer's WhatsApp window to open (or their reply)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_autocalls import exceptions
from airflow_provider_autocalls.exceptions import AutocallsAPIError, AutocallsError, AutocallsValidationError
from airflow_provider_autocalls.hooks.autocalls import AutocallsHook
from airflow_provider_autocalls.sessions import is_ready


class SessionOpenTrigger(BaseTrigger):
    """
    Poll the session status until the window is open (and, optionally, the customer replied).

    It only ever reads: a triggerer restart replays triggers, so a trigger must never send. Every
    trigger of a triggerer shares the process's pacer for the key, so a thousand waiting sensors
    slow down together instead of pushing the API past its rate limit; they also share one
    connection pool per event loop. Errors the hook's own retries could not overcome, and answers
    it cannot read, end the wait with an event ``{"status": "error", ...}`` that the task turns
    into the matching failure; nothing escapes :meth:`run`.

    :param sender_id: the sender's id.
    :param recipient_phone: the recipient in E.164 form.
    :param replied_after: ISO 8601 moment on the API's clock that the customer's last message must
        be later than, or ``None`` to wait for the open window only.
    :param autocalls_conn_id: the Autocalls connection.
    :param poke_interval: seconds between two checks.
    :param hook_kwargs: the hook's overrides (``timeout``, ``rate_limit``, ``max_retries``), so the
        triggerer rebuilds the very same hook.
    :param end_by: ISO 8601 moment after which the wait ends with ``{"status": "timeout"}``, or
        ``None``. The sensor sets it from its ``timeout``, so the wait ends on time even where the
        deferral's own timeout is not enforced (``dag.test()`` runs triggers inline without it).
    """

    def __init__(
        self,
        *,
        sender_id: int,
        recipient_phone: str,
        replied_after: str | None = None,
        autocalls_conn_id: str = AutocallsHook.default_conn_name,
        poke_interval: float = 60.0,
        hook_kwargs: dict[str, Any] | None = None,
        end_by: str | None = None,
    ) -> None:
        super().__init__()
        self.sender_id = sender_id
        self.recipient_phone = recipient_phone
        self.replied_after = replied_after
        self.autocalls_conn_id = autocalls_conn_id
        self.poke_interval = poke_interval
        self.hook_kwargs = hook_kwargs or {}
        self.end_by = end_by

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "sender_id": self.sender_id,
                "recipient_phone": self.recipient_phone,
                "replied_after": self.replied_after,
                "autocalls_conn_id": self.autocalls_conn_id,
                "poke_interval": self.poke_interval,
                "hook_kwargs": self.hook_kwargs,
                "end_by": self.end_by,
            },
        )

    def _hook(self) -> AutocallsHook:
        return AutocallsHook(self.autocalls_conn_id, **self.hook_kwargs)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        try:
            replied_after = _moment(self.replied_after, "replied_after")
            end_by = _moment(self.end_by, "end_by")
        except AutocallsError as error:
            yield TriggerEvent(error_event(error))
            return
        hook = self._hook()
        while True:
            try:
                status = await hook.async_get_session_status(self.sender_id, self.recipient_phone)
                ready = is_ready(status, replied_after)
            except AutocallsError as error:
                yield TriggerEvent(error_event(error))
                return
            if ready:
                yield TriggerEvent({"status": "success", "session_status": status})
                return
            left = None if end_by is None else (end_by - datetime.now(UTC)).total_seconds()
            if left is not None and left <= 0:
                yield TriggerEvent(
                    {
                        "status": "timeout",
                        "message": f"Still not ready at {self.end_by}, the end of the wait.",
                    }
                )
                return
            self.log.debug(
                "Window with %s not ready; next check in %ss.", self.recipient_phone, self.poke_interval
            )
            await asyncio.sleep(self.poke_interval if left is None else min(self.poke_interval, left))


def _moment(value: str | None, field: str) -> datetime | None:
    """A moment the sensor wrote with ``isoformat()`` (aware, UTC)."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except (TypeError, ValueError) as exc:
        raise AutocallsValidationError(field, f"{value!r} is not an ISO 8601 date-time.") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def error_event(error: AutocallsError) -> dict[str, Any]:
    """A JSON event that carries the error to the task (events are serialised, never pickled)."""
    # Internal subclasses (a lost answer, one 429) travel as their public parent class.
    public = next(cls for cls in type(error).__mro__ if getattr(exceptions, cls.__name__, None) is cls)
    return {
        "status": "error",
        "error_type": public.__name__,
        "message": error.args[0] if error.args else str(error),
        "status_code": getattr(error, "status_code", None),
        "error_code": getattr(error, "error_code", None),
    }


def error_from_event(event: dict[str, Any]) -> AutocallsError:
    """The typed error an error event stands for, so the task fails (or retries) as it would have in poke mode."""
    cls = getattr(exceptions, str(event.get("error_type")), None)
    message = str(event.get("message", event))
    if isinstance(cls, type) and issubclass(cls, AutocallsAPIError):
        return cls(message, status_code=event.get("status_code") or 0, error_code=event.get("error_code"))
    if isinstance(cls, type) and issubclass(cls, AutocallsError) and cls is not AutocallsValidationError:
        return cls(message)
    return AutocallsError(message)


# Public here, the module users import triggers from; the body lives in its own module.
from airflow_provider_autocalls.triggers._reply_watch import CustomerReplyTrigger  # noqa: E402

__all__ = ["CustomerReplyTrigger", "SessionOpenTrigger", "error_event", "error_from_event"]
