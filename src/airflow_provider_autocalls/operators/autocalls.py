"""Operators that send WhatsApp messages through the Autocalls API."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Mapping, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal

from airflow.providers.common.compat.sdk import (
    AirflowFailException,
    AirflowSkipException,
    BaseOperator,
    timezone,
)

from airflow_provider_autocalls._task_errors import fail_fast_unless_retryable
from airflow_provider_autocalls.bulk import (
    Progress,
    RecipientSource,
    Row,
    SkippedRows,
    check_row,
    phone_key,
    write_report,
)
from airflow_provider_autocalls.exceptions import (
    AutocallsError,
    AutocallsServerError,
    AutocallsValidationError,
    InvalidPhoneError,
    SendOutcomeUnknownError,
    SessionExpiredError,
    TemplateMismatchError,
)
from airflow_provider_autocalls.hooks.autocalls import AutocallsHook
from airflow_provider_autocalls.ledger import (
    Ledger,
    State,
    default_location,
    instance_path,
    ledger_for,
    open_location,
)
from airflow_provider_autocalls.validation import check_id, check_variables

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context, XComArg

IF_SESSION_CLOSED = ("fail", "skip")


#: Errors about one row (its phone, its variables): that row fails, the others go on.
ROW_ERRORS = (InvalidPhoneError, TemplateMismatchError)
#: Sends in a row that ended in doubt before a bulk send stops (the API is failing).
MAX_IN_DOUBT_IN_A_ROW = 3


def _connect(hook: AutocallsHook) -> None:
    """Read the connection and build the client now, before anything is recorded as started."""
    hook.get_conn()


def _in_doubt(error: BaseException, hook: AutocallsHook) -> bool:
    """Whether a send that ended in ``error`` may have reached the API."""
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, SendOutcomeUnknownError):
            return True
        if isinstance(cause, AutocallsError):
            return False  # every other error of ours is a definite "nothing was sent"
        cause = cause.__cause__
    if isinstance(error, AirflowSkipException | AirflowFailException):
        return False
    # Killed, timed out or interrupted: in doubt if a request was out and not surely refused.
    # (Interrupted between attempts, after a 429 say, nothing is out.)
    return hook.request_may_have_reached_api


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
            result = self._send_and_describe()
            self._report_sent(result)
            return result
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
        with fail_fast_unless_retryable():
            _connect(self.hook)  # a missing or broken connection must not leave a write-ahead record
        ledger.begin(recipient)
        try:
            result = self._send_and_describe()
        except BaseException as error:
            ledger.finish(recipient, State.UNKNOWN if _in_doubt(error, self.hook) else State.RELEASED)
            raise
        # Recorded before anything else can fail (even the log line below): the API said "sent".
        ledger.finish(recipient, State.SENT, message_sid=result.get("message_sid"), xcom=result)
        self._report_sent(result)
        return result

    def _send_and_describe(self) -> dict[str, Any]:
        sent_at = timezone.utcnow().isoformat()
        with fail_fast_unless_retryable():
            answer = self._send()
        return {
            **answer,
            "sent_at": sent_at,
            "sender_id": self.sender_id,
            "recipient_phone": self.recipient_phone,
        }

    def _report_sent(self, result: dict[str, Any]) -> None:
        self.log.info("Sent to %s: message_sid %s", self.recipient_phone, result.get("message_sid"))

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


class BulkSendTemplateOperator(BaseOperator):
    """
    Send one approved template to every recipient of a segment, as fast as the API allows, once each.

    Every row is checked before the first send. Sends go out at the connection's rate limit,
    paced by the hook (no 429s). Each recipient gets a write-ahead record in the task instance's
    ledger before its request and the outcome after it, so a retry, a clear and re-run, or a
    restart after the worker was killed sends only to recipients with no record; a recipient whose
    request started but whose outcome is unknown is reported as ``unknown`` and never sent to again
    automatically. A report with one row per recipient is written next to the ledger.

    .. code-block:: python

        BulkSendTemplateOperator(
            task_id="send_offer",
            sender_id=12,
            template_id=45,
            recipients_file="s3://exports/{{ ds }}/segment.csv",
            variables={"date": "{{ ds }}"},
            max_failures=0.05,
        )

    :param sender_id: the WhatsApp sender's id (templated).
    :param template_id: the approved template's id (templated).
    :param recipients: a list of mappings with ``recipient_phone``, optional ``recipient_name`` and
        ``variables`` (templated, so an upstream task's XCom works).
    :param recipients_file: instead of ``recipients``: a CSV or JSON Lines file, as a path or an
        object-storage URI (``file://``, ``s3://``, ...), read as a stream (templated). CSV columns:
        ``recipient_phone``, ``recipient_name``, and ``variables`` (a JSON object) or ``variables.<key>``.
    :param variables: values shared by every recipient; a row's own variables win (templated).
    :param on_invalid_row: ``"fail"`` (default): any bad row fails the task before anything is sent,
        listing the bad rows by line; ``"skip"``: report bad rows as skipped and send to the rest.
    :param max_failures: fail the task once more recipients than this failed (a count, or a
        fraction of the valid recipients when below 1); ``None`` never fails for failed rows.
        Unknown outcomes count as failures here.
    :param report_format: ``"jsonl"`` (default) or ``"csv"``.
    :param ledger_location: a folder or object-storage URI every worker can see (templated;
        default ``[autocalls] ledger_location``). The report is written next to the ledger.
    :param progress_interval: seconds between progress lines at most (also one every 5 %).
    :param autocalls_conn_id: the Autocalls connection (templated).
    :return: (XCom) counts (``total``, ``sent``, ``failed``, ``unknown``, ``skipped``, ``invalid``,
        ``duplicates``, ``from_earlier_tries``), ``report`` and ``ledger`` locations, ``elapsed_s``
        and ``rate_per_s`` of this try.
    """

    template_fields: Sequence[str] = (
        "sender_id",
        "template_id",
        "recipients",
        "recipients_file",
        "variables",
        "ledger_location",
        "autocalls_conn_id",
    )
    template_fields_renderers = {"recipients": "json", "variables": "json"}
    ui_color = "#25d366"

    def __init__(
        self,
        *,
        sender_id: int | str,
        template_id: int | str,
        recipients: Any = None,
        recipients_file: str | XComArg | None = None,
        variables: Mapping[Any, Any] | None = None,
        on_invalid_row: Literal["fail", "skip"] = "fail",
        max_failures: float | None = None,
        report_format: Literal["jsonl", "csv"] = "jsonl",
        ledger_location: str | None = None,
        progress_interval: float = 10.0,
        autocalls_conn_id: str = AutocallsHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if on_invalid_row not in ("fail", "skip"):
            raise ValueError(f"on_invalid_row must be 'fail' or 'skip', got {on_invalid_row!r}.")
        if report_format not in ("jsonl", "csv"):
            raise ValueError(f"report_format must be 'jsonl' or 'csv', got {report_format!r}.")
        if max_failures is not None and (
            isinstance(max_failures, bool)
            or not isinstance(max_failures, int | float)
            or not math.isfinite(max_failures)
            or max_failures < 0
        ):
            raise ValueError(f"max_failures must be a count, a fraction or None, got {max_failures!r}.")
        self.sender_id = sender_id
        self.template_id = template_id
        self.recipients = recipients
        self.recipients_file = recipients_file
        self.variables = variables
        self.on_invalid_row = on_invalid_row
        self.max_failures = max_failures
        self.report_format = report_format
        self.ledger_location = ledger_location
        self.progress_interval = progress_interval
        self.autocalls_conn_id = autocalls_conn_id

    @cached_property
    def hook(self) -> AutocallsHook:
        return AutocallsHook(autocalls_conn_id=self.autocalls_conn_id)

    def execute(self, context: Context) -> dict[str, Any]:
        with fail_fast_unless_retryable():
            sender_id = check_id(self.sender_id, "sender_id")
            template_id = check_id(self.template_id, "template_id")
            shared = check_variables(self.variables)
            source = RecipientSource(self.recipients, self.recipients_file)
            _connect(self.hook)
        location = self.ledger_location or default_location()
        ledger = ledger_for(context, location, suffix="bulk.jsonl")
        if ledger is None:
            raise AirflowFailException(
                "BulkSendTemplateOperator needs a task instance in its context for its ledger."
            )
        skipped = SkippedRows()
        try:
            return self._run(context, source, shared, ledger, skipped, sender_id, template_id, location)
        finally:
            skipped.close()
            ledger.close()

    def _run(
        self,
        context: Context,
        source: RecipientSource,
        shared: dict[str, str] | None,
        ledger: Ledger,
        skipped: SkippedRows,
        sender_id: int,
        template_id: int,
        location: str,
    ) -> dict[str, Any]:
        started = time.monotonic()
        with fail_fast_unless_retryable():  # a missing or unreadable file stays so on every retry
            first_line, invalid, duplicates = self._check_all(source, shared, skipped)
        done = self._earlier_outcomes(ledger, first_line)
        to_send = sum(1 for key in first_line if key not in done)
        self.log.info(
            "%d valid recipients (%d invalid, %d duplicates), %d already handled by earlier tries; sending to %d.",
            len(first_line),
            invalid,
            duplicates,
            len(first_line) - to_send,
            to_send,
        )
        progress = Progress(to_send, self.log.info, self.progress_interval)
        stop: BaseException | None = None
        # Failures of earlier tries count too: max_failures is about the task instance, not one try.
        failures = sum(1 for key in first_line if done.get(key) in (State.FAILED, State.UNKNOWN))
        in_doubt_in_a_row = 0
        limit = self._failure_limit(len(first_line))
        for line, raw in source:
            row = self._sendable(line, raw, shared, first_line, done)
            if row is None:
                continue
            if stop is not None:
                skipped.add(row.line, row.phone, f"not attempted: the task stopped ({type(stop).__name__})")
                continue
            status, stop = self._send_one(ledger, row, sender_id, template_id)
            if status == State.RELEASED:
                skipped.add(row.line, row.phone, f"not attempted: the task stopped ({type(stop).__name__})")
                continue
            progress.count(status)
            failures += status in (State.FAILED, State.UNKNOWN)
            in_doubt_in_a_row = in_doubt_in_a_row + 1 if status == State.UNKNOWN else 0
            if stop is None and limit is not None and failures > limit:
                stop = AirflowFailException(
                    f"{failures} recipients failed, more than max_failures={self.max_failures}."
                )
            if stop is None and in_doubt_in_a_row >= MAX_IN_DOUBT_IN_A_ROW:
                # The API is failing: every further send would be one more message in doubt.
                stop = AutocallsServerError(
                    f"{in_doubt_in_a_row} sends in a row ended without a readable answer; stopping so that no "
                    "more messages end in doubt. A retry of the task resumes with the recipients not yet sent to.",
                    status_code=0,
                )
        progress.finish()
        report = open_location(location, f"{instance_path(context['ti'])}.report.{self.report_format}")
        counts = write_report(report, _final(ledger), skipped, self.report_format)
        elapsed = time.monotonic() - started
        summary = {
            "total": sum(counts.values()),
            **{status: counts.get(status, 0) for status in ("sent", "failed", "unknown", "skipped")},
            "invalid": invalid,
            "duplicates": duplicates,
            "from_earlier_tries": len(first_line) - to_send,
            "report": str(report),
            "ledger": ledger.location,
            "elapsed_s": round(elapsed, 3),
            "rate_per_s": round(progress.done / elapsed, 3) if elapsed > 0 else 0.0,
        }
        self.log.info("Bulk send finished: %s", summary)
        if stop is not None:
            raise stop
        return summary

    def _earlier_outcomes(self, ledger: Ledger, first_line: dict[int, int]) -> dict[int, State]:
        """What earlier tries did; a send that started but never finished becomes ``unknown``."""
        states: dict[int, State] = {}
        for record in ledger.records():
            states[phone_key(record["recipient"])] = State(record["state"])
        for key, state in states.items():
            if state == State.STARTED:
                states[key] = State.UNKNOWN
                ledger.finish(
                    f"+{key}",
                    State.UNKNOWN,
                    line=first_line.get(key),
                    reason="an earlier try stopped during this send; it may have been delivered",
                )
        return {key: state for key, state in states.items() if state.final}

    def _check_all(
        self, source: RecipientSource, shared: dict[str, str] | None, skipped: SkippedRows
    ) -> tuple[dict[int, int], int, int]:
        """Check every row before the first send; return the first line of each phone and the counts."""
        first_line: dict[int, int] = {}
        bad: list[str] = []
        invalid = duplicates = 0
        for line, raw in source:
            try:
                row = check_row(line, raw, shared)
            except AutocallsValidationError as error:
                invalid += 1
                skipped.add(
                    line, raw.get("recipient_phone") if isinstance(raw, Mapping) else None, str(error)
                )
                if len(bad) < 20:
                    bad.append(f"line {line}: {error}")
                continue
            key = phone_key(row.phone)
            if key in first_line:
                duplicates += 1
                skipped.add(line, row.phone, f"duplicate of line {first_line[key]}")
            else:
                first_line[key] = line
        if invalid and self.on_invalid_row == "fail":
            more = f" (and {invalid - len(bad)} more)" if invalid > len(bad) else ""
            raise AirflowFailException(
                f"{invalid} invalid recipient rows; nothing was sent. Fix them, or set on_invalid_row='skip':\n"
                + "\n".join(bad)
                + more
            )
        return first_line, invalid, duplicates

    @staticmethod
    def _sendable(
        line: int, raw: Any, shared: dict[str, str] | None, first_line: dict[int, int], done: dict[int, State]
    ) -> Row | None:
        try:
            row = check_row(line, raw, shared)
        except AutocallsValidationError:
            return None  # reported by the check pass
        key = phone_key(row.phone)
        return row if first_line.get(key) == line and key not in done else None

    def _send_one(
        self, ledger: Ledger, row: Row, sender_id: int, template_id: int
    ) -> tuple[State, BaseException | None]:
        """Send to one recipient; return its outcome, and the error that must stop the task, if any."""
        ledger.begin(row.phone)
        try:
            answer = self.hook.send_template(sender_id, template_id, row.phone, row.name, row.variables)
        except SendOutcomeUnknownError as error:
            ledger.finish(row.phone, State.UNKNOWN, line=row.line, reason=str(error))
            return State.UNKNOWN, None
        except ROW_ERRORS as error:
            ledger.finish(
                row.phone, State.FAILED, line=row.line, error_code=error.error_code, reason=str(error)
            )
            return State.FAILED, None
        except AutocallsError as error:
            # Not about this row: every other recipient would get the same answer. Nothing was sent;
            # stop, and retry later (sender offline, no balance, API unreachable) or fail now.
            ledger.finish(row.phone, State.RELEASED)
            return State.RELEASED, error if error.retryable else AirflowFailException(
                f"{type(error).__name__}: {error}"
            )
        except BaseException as error:
            if _in_doubt(error, self.hook):
                ledger.finish(row.phone, State.UNKNOWN, line=row.line, reason="interrupted during the send")
            else:  # interrupted before the request went out, or between attempts
                ledger.finish(row.phone, State.RELEASED)
            raise
        ledger.finish(row.phone, State.SENT, line=row.line, message_sid=answer.get("message_sid"))
        return State.SENT, None

    def _failure_limit(self, valid: int) -> float | None:
        if self.max_failures is None:
            return None
        return self.max_failures * valid if 0 < self.max_failures < 1 else self.max_failures


def _final(ledger: Ledger) -> Iterator[dict[str, Any]]:
    return (record for record in ledger.records() if State(record["state"]).final)
