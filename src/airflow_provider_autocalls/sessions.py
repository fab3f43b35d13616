"""
The customer's conversation, read from the session status: is the window open, did the customer
write since a send, and is this a moment for free text or for a template.

Replies are decided on the API's own clock. A send operator reads the session status just before
it sends and keeps the API's ``last_customer_message_at`` in its XCom under
:data:`REPLY_BASELINE_KEY`; the customer has replied once the API's ``last_customer_message_at``
is later than that baseline. The worker's clock is never compared with the API's, so any skew
between them is harmless. The API writes times to the second, so one case stays out of reach: a
customer message read as the baseline, the send and the reply all in the same second of the API's
clock look like no reply (the timestamps are equal). A human reply takes longer than that.

The sensor, its trigger (and any reply watcher) use :func:`customer_wrote_since`; the send
operators use :func:`take_reply_baseline`; the window-aware send and the notifier use
:func:`choose_message` / :func:`async_choose_message` (or the pure :func:`choose_by_window`).
"""

from __future__ import annotations

import ast
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, Literal

import pendulum

from airflow_provider_autocalls.exceptions import AutocallsAPIError, AutocallsValidationError
from airflow_provider_autocalls.validation import check_id, check_message, check_phone

if TYPE_CHECKING:
    from airflow_provider_autocalls.hooks.autocalls import AutocallsHook

#: The key of a send operator's XCom that holds the API's ``last_customer_message_at`` read just
#: before the send (the API's ISO 8601 text), or ``None`` when the customer had never written.
REPLY_BASELINE_KEY: Final = "reply_baseline"

#: The moment a reply must be later than when the customer had never written before the send:
#: any message of theirs is then a reply.
NO_EARLIER_MESSAGE: Final = datetime.min.replace(tzinfo=UTC)


# -- reading the API's answer ----------------------------------------------------------------------------


def _unreadable(field: str, value: Any, expected: str) -> AutocallsAPIError:
    shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
    return AutocallsAPIError(
        f"The session status has an unreadable {field!r}: {shown}, expected {expected}. The answer "
        "does not look like the Autocalls API's; check the connection's host, or report it to Autocalls.",
        status_code=200,
        response_body={field: value},
    )


def read_is_open(status: Mapping[str, Any]) -> bool:
    """
    The answer's ``session_status.is_open``.

    :raises AutocallsAPIError: it is missing or not a boolean (``"false"`` is not taken as true).
    """
    session = status.get("session_status")
    value = session.get("is_open") if isinstance(session, Mapping) else None
    if not isinstance(value, bool):
        raise _unreadable("session_status.is_open", value, "true or false")
    return value


def read_last_customer_message_at(status: Mapping[str, Any]) -> datetime | None:
    """
    The answer's ``last_customer_message_at`` as an aware UTC datetime, ``None`` when absent.

    A time without an offset is read as UTC, which is how the API writes its times.

    :raises AutocallsAPIError: it is not an ISO 8601 date-time.
    """
    value = status.get("last_customer_message_at")
    if value is None or value == "":
        return None
    moment = _parse_iso(value) if isinstance(value, str) else None
    if moment is None:
        raise _unreadable("last_customer_message_at", value, "an ISO 8601 date-time or null")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _parse_iso(text: str, tz: Any = None) -> datetime | None:
    try:
        parsed = pendulum.parse(text, tz=tz) if tz is not None else pendulum.parse(text, exact=True)
    except (ValueError, TypeError, OverflowError):
        return None
    return parsed if isinstance(parsed, datetime) else None


# -- "did the customer write since X?" --------------------------------------------------------------------


def customer_wrote_since(status: Mapping[str, Any], since: datetime) -> bool:
    """
    Whether the customer's last message, by the API's clock, is later than ``since``.

    The one place that decides "replied": the sensor, its trigger and a reply watcher all call it.

    :param status: a session status answer.
    :param since: an aware moment on the API's clock: a baseline from :func:`reply_since`, or
        :data:`NO_EARLIER_MESSAGE` (any message counts).
    """
    last = read_last_customer_message_at(status)
    return last is not None and last > since


def is_ready(status: Mapping[str, Any], replied_since: datetime | None) -> bool:
    """
    Whether the window is open and, with ``replied_since``, the customer wrote after that moment.

    A template send opens the window by itself, so "open" alone does not mean the customer answered.
    Both fields are read (and checked) on every call, so an unreadable answer is an error whether
    or not the window is open.
    """
    is_open = read_is_open(status)
    if replied_since is None:
        return is_open
    replied = customer_wrote_since(status, replied_since)
    return is_open and replied


def reply_baseline(status: Mapping[str, Any]) -> str | None:
    """
    What a send operator keeps under :data:`REPLY_BASELINE_KEY`: the API's ``last_customer_message_at``
    as the API wrote it (checked readable), or ``None`` when the customer has never written.
    """
    if read_last_customer_message_at(status) is None:
        return None
    return str(status["last_customer_message_at"])


def take_reply_baseline(hook: AutocallsHook, sender_id: int | str, recipient_phone: str) -> str | None:
    """
    Read the session status right before a send; return the value for :data:`REPLY_BASELINE_KEY`.

    :raises AutocallsAPIError: the status could not be read, or is unreadable.
    """
    return reply_baseline(hook.get_session_status(sender_id, recipient_phone))


def reply_since(send_xcom: Any, field: str = "reply_to") -> datetime:
    """
    The moment a reply to a send must be later than, from that send's XCom.

    :param send_xcom: the XCom of a send operator (a mapping with :data:`REPLY_BASELINE_KEY`), or
        its text as a Jinja template renders it (JSON or a Python literal).
    :raises AutocallsValidationError: it is empty, not a mapping, or has no baseline.
    """
    value = send_xcom
    if isinstance(value, str):
        if not value.strip() or value.strip() == "None":
            raise AutocallsValidationError(
                field,
                f"rendered as {value!r}. Pass the send task's XCom, e.g. reply_to=send_task.output "
                "(or \"{{ ti.xcom_pull(task_ids='send_task') }}\"), and make sure that task ran first.",
            )
        try:
            value = json.loads(value)
        except ValueError:
            try:
                value = ast.literal_eval(value)
            except (ValueError, SyntaxError) as exc:
                raise AutocallsValidationError(field, "is text that is not a send task's XCom.") from exc
    if not isinstance(value, Mapping):
        raise AutocallsValidationError(
            field, f"must be a send task's XCom (a mapping), got {type(value).__name__}."
        )
    if REPLY_BASELINE_KEY not in value:
        raise AutocallsValidationError(
            field,
            f"has no {REPLY_BASELINE_KEY!r}. Pass the XCom of SendTemplateOperator or SendFreeformOperator "
            "with track_reply=True, or of SendMessageOperator (they read the session status before "
            "sending), or use replied_after.",
        )
    baseline = value[REPLY_BASELINE_KEY]
    if baseline is None:
        return NO_EARLIER_MESSAGE
    moment = _parse_iso(baseline) if isinstance(baseline, str) else None
    if moment is None:
        raise AutocallsValidationError(
            f"{field}[{REPLY_BASELINE_KEY!r}]", f"{baseline!r} is not an ISO 8601 date-time or None."
        )
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)


def parse_moment(value: Any, field: str = "replied_after") -> datetime | None:
    """
    Return ``value`` as an aware UTC datetime; ``None`` stays ``None``.

    A naive value is read in Airflow's ``[core] default_timezone``, as Airflow reads naive times.

    :param value: ``None``, a datetime, or an ISO 8601 string.
    :raises AutocallsValidationError: it is empty (a template that rendered nothing), or not a
        date-time.
    """
    if value is None:
        return None
    if isinstance(value, str):
        if not value.strip():
            raise AutocallsValidationError(
                field,
                "rendered empty, so there is no moment to wait for a reply after. Check the template; "
                "to wait for the reply to a send, pass reply_to=<the send task's XCom> instead; to wait "
                f"for the window only, leave {field} unset.",
            )
        parsed = _parse_iso(value, tz=_default_timezone())
        if parsed is None:
            raise AutocallsValidationError(field, f"{value!r} is not an ISO 8601 date-time.")
        return parsed.astimezone(UTC)
    if isinstance(value, datetime):
        moment = value if value.tzinfo else pendulum.instance(value, tz=_default_timezone())
        return moment.astimezone(UTC)
    raise AutocallsValidationError(
        field, f"must be a datetime or an ISO 8601 string, got {type(value).__name__}."
    )


def _default_timezone() -> Any:
    """Airflow's ``[core] default_timezone``, read now (a test or a config change sees it)."""
    from airflow.providers.common.compat.sdk import conf

    name = conf.get("core", "default_timezone", fallback="utc") or "utc"
    return pendulum.local_timezone() if name == "system" else pendulum.timezone(name)  # type: ignore[operator]


# -- "free text or template?" --------------------------------------------------------------------------


@dataclass(frozen=True)
class WindowChoice:
    """
    What to send, decided from the session status.

    :param kind: ``"freeform"`` while the window is open; ``"template"`` when it is closed and a
        fallback template was given; ``None`` when it is closed and there is no fallback.
    :param window_open: the API's ``is_open``.
    :param status: the session status answer the choice was made from.
    :param reply_baseline: the value for :data:`REPLY_BASELINE_KEY` of the send that follows.
    """

    kind: Literal["freeform", "template"] | None
    window_open: bool
    status: dict[str, Any]
    reply_baseline: str | None


def choose_by_window(status: Mapping[str, Any], has_fallback: bool) -> WindowChoice:
    """The pure decision: free text while the window is open, else the fallback template, if any."""
    window_open = read_is_open(status)
    if window_open:
        kind: Literal["freeform", "template"] | None = "freeform"
    else:
        kind = "template" if has_fallback else None
    return WindowChoice(kind, window_open, dict(status), reply_baseline(status))


def _checked(
    sender_id: int | str, recipient_phone: str, message: str, fallback_template_id: int | str | None
) -> tuple[int, str]:
    """Every input checked before the status is read (bad input never costs a request)."""
    sender = check_id(sender_id, "sender_id")
    phone = check_phone(recipient_phone)
    check_message(message)
    if fallback_template_id is not None:
        check_id(fallback_template_id, "fallback_template_id")
    return sender, phone


def choose_message(
    hook: AutocallsHook,
    sender_id: int | str,
    recipient_phone: str,
    message: str,
    fallback_template_id: int | str | None = None,
) -> WindowChoice:
    """
    Read the session status and say whether to send ``message`` as free text or the fallback template.

    A window can still close between this read and the send: the API then refuses the free text
    with ``SESSION_EXPIRED`` (a definite refusal, nothing sent), and the caller sends the fallback.

    :param hook: the hook to read with.
    :param sender_id: the sender's id.
    :param recipient_phone: the recipient in E.164 form.
    :param message: the free text (checked here, before any request).
    :param fallback_template_id: the template for a closed window, or ``None``.
    """
    sender, phone = _checked(sender_id, recipient_phone, message, fallback_template_id)
    return choose_by_window(hook.get_session_status(sender, phone), fallback_template_id is not None)


async def async_choose_message(
    hook: AutocallsHook,
    sender_id: int | str,
    recipient_phone: str,
    message: str,
    fallback_template_id: int | str | None = None,
) -> WindowChoice:
    """Async counterpart of :func:`choose_message` (for the triggerer)."""
    sender, phone = _checked(sender_id, recipient_phone, message, fallback_template_id)
    status = await hook.async_get_session_status(sender, phone)
    return choose_by_window(status, fallback_template_id is not None)
