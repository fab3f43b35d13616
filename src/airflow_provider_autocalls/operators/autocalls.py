"""Operators that send WhatsApp messages through the Autocalls API."""

from __future__ import annotations

import functools
import math
import time
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
from airflow_provider_autocalls.bulk import RecipientSource
from airflow_provider_autocalls.bulk_send import BulkSend, Settings, default_in_flight
from airflow_provider_autocalls.exceptions import SessionExpiredError
from airflow_provider_autocalls.hooks._claims import under_claim
from airflow_provider_autocalls.hooks.autocalls import AutocallsHook
from airflow_provider_autocalls.ledger import (
    ClaimTakenError,
    Entry,
    Ledger,
    State,
    default_location,
    instance_path,
    ledger_for,
    open_location,
    phone_key,
)
from airflow_provider_autocalls.templates import read_template
from airflow_provider_autocalls.validation import check_id, check_phone, check_variables

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context, XComArg

IF_SESSION_CLOSED = ("fail", "skip")
#: How often a try that lost the claim to a racing try looks for that try's outcome.
_OUTCOME_POLL = 0.2


def _connect(hook: AutocallsHook) -> None:
    """Read the connection and build the client now, before anything is claimed."""
    hook.get_conn()


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
        with fail_fast_unless_retryable():
            recipient = check_phone(self.recipient_phone)
            ledger = ledger_for(context, self.ledger_location)
        extras = self._describe()
        if ledger is None:
            result = self._send_and_describe(extras)
            self._report_sent(result)
            return result
        return self._send_at_most_once(ledger, recipient, extras)

    def _send_at_most_once(self, ledger: Ledger, recipient: str, extras: dict[str, Any]) -> dict[str, Any]:
        """Claim the message in the task instance's ledger, so that no other try of this task sends it."""
        key = phone_key(recipient)
        with fail_fast_unless_retryable():
            earlier = ledger.entry(key)
            if earlier is not None and earlier.holder_may_be_sending:
                # A try racing this one (a zombie, a double schedule) is sending it: its outcome is ours.
                earlier = self._outcome_of_racing_try(ledger, key)
        if earlier is not None and earlier.state is not State.RELEASED:
            return self._earlier_outcome(ledger, earlier)
        with fail_fast_unless_retryable():
            _connect(self.hook)  # a missing or broken connection must not leave a claim
        claim = ledger.new_claim(key, recipient, earlier.next_gen if earlier else 0, xcom=extras)
        try:
            with under_claim(claim):
                result = self._send_and_describe(extras)
        except AirflowFailException as failure:
            if not isinstance(failure.__cause__, ClaimTakenError):
                raise
            # A try racing this one claimed the message first: its outcome is this task's outcome.
            return self._earlier_outcome(ledger, self._outcome_of_racing_try(ledger, key))
        # The claim recorded "sent" before anything else could fail (even the log line below).
        self._report_sent(result)
        return result

    def _earlier_outcome(self, ledger: Ledger, earlier: Entry | None) -> dict[str, Any]:
        if earlier is not None and earlier.state is State.SENT:
            details = earlier.details
            self.log.info(
                "An earlier try sent this message (try %s, %s); not sending again.",
                earlier.try_number,
                details.get("message_sid"),
            )
            return {**(details.get("answer") or {}), **(details.get("xcom") or {})}
        recipient = self.recipient_phone
        raise AirflowFailException(
            f"Try {earlier.try_number if earlier else '?'} of this task started sending to {recipient} and "
            "no outcome was recorded (the worker stopped, or the answer was lost), so the message may have "
            "been delivered. It is not sent again automatically: check the conversation in the Autocalls "
            "dashboard; if it did not arrive, release it with `airflow autocalls release-unknown` (or "
            f"airflow_provider_autocalls.ledger.release_unknown) and clear the task. Ledger: {ledger.location}"
        )

    def _outcome_of_racing_try(self, ledger: Ledger, key: str) -> Entry | None:
        """Wait, at most the connection's timeout and a little more, for the racing try's outcome."""
        deadline = time.monotonic() + self.hook.settings.timeout + 5
        while True:
            entry = ledger.entry(key)
            if (entry is not None and entry.outcome is not None) or time.monotonic() > deadline:
                return entry
            time.sleep(_OUTCOME_POLL)

    def _describe(self) -> dict[str, Any]:
        """What the XCom adds to the API's answer; kept with the claim so a later try returns the same."""
        return {
            "sent_at": timezone.utcnow().isoformat(),
            "sender_id": self.sender_id,
            "recipient_phone": self.recipient_phone,
        }

    def _send_and_describe(self, extras: dict[str, Any]) -> dict[str, Any]:
        with fail_fast_unless_retryable():
            answer = self._send()
        return {**answer, **extras}

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
        return self.hook.send_template(
            sender_id=self.sender_id,
            template_id=self.template_id,
            recipient_phone=self.recipient_phone,
            recipient_name=self.recipient_name,
            variables=self.variables,
        )

    def _describe(self) -> dict[str, Any]:
        return {**super()._describe(), "template_id": self.template_id}


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
    :param max_in_flight: how many sends may wait for their answers at once. The API answers a
        send only after WhatsApp's provider took it (hundreds of milliseconds), so one at a time
        would let latency, not the rate limit, set the pace. Default: enough for 3 s of latency at
        the connection's rate limit (``ceil(3 * rate_limit)``, 8 when unpaced, at most 100).
    :param check_template: read the sender's templates once before anything is sent (one request)
        and refuse a template that is missing or not approved, and rows whose variables do not fit
        it (in the check pass, with every other row check). ``False`` skips it, for accounts whose
        template listing is not to be trusted.
    :param csv_delimiter: the delimiter of a CSV ``recipients_file``; default: detected from the
        header line (comma, semicolon or tab).
    :param allow_empty: succeed with nothing sent when the segment has no recipient; by default an
        empty list, an empty file or a header-only CSV fails the task.
    :param resend_failed: send again to recipients whose earlier outcome was a definite refusal
        (``failed``); never to ``unknown`` ones, which a person releases after checking
        (:func:`~airflow_provider_autocalls.ledger.release_unknown`).
    :param report_format: ``"jsonl"`` (default) or ``"csv"``.
    :param ledger_location: a folder or object-storage URI every worker can see (templated;
        default ``[autocalls] ledger_location``). The report is written next to the ledger.
    :param progress_interval: seconds between progress lines at most (also one every 5 %).
    :param autocalls_conn_id: the Autocalls connection (templated).
    :return: (XCom) the task instance's counts as in the report (``total``, ``sent``, ``failed``,
        ``unknown``, ``skipped``), ``invalid``, ``duplicates``, ``from_earlier_tries``, ``this_try``
        (what this try itself did: ``sent``, ``failed``, ``unknown``, ``skipped``, and
        ``claimed_by_another_try``: recipients a try racing this one sent first), ``report`` and
        ``ledger`` locations, ``elapsed_s`` and ``rate_per_s`` of this try.
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
        max_in_flight: int | None = None,
        check_template: bool = True,
        csv_delimiter: str | None = None,
        allow_empty: bool = False,
        resend_failed: bool = False,
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
        if max_in_flight is not None and (
            isinstance(max_in_flight, bool) or not isinstance(max_in_flight, int) or max_in_flight < 1
        ):
            raise ValueError(f"max_in_flight must be a whole number >= 1, got {max_in_flight!r}.")
        self.max_in_flight = max_in_flight
        self.check_template = check_template
        self.csv_delimiter = csv_delimiter
        self.allow_empty = allow_empty
        self.resend_failed = resend_failed
        self.report_format = report_format
        self.ledger_location = ledger_location
        self.progress_interval = progress_interval
        self.autocalls_conn_id = autocalls_conn_id

    @cached_property
    def hook(self) -> AutocallsHook:
        return AutocallsHook(autocalls_conn_id=self.autocalls_conn_id)

    def execute(self, context: Context) -> dict[str, Any]:
        with fail_fast_unless_retryable():
            settings = Settings(
                sender_id=check_id(self.sender_id, "sender_id"),
                template_id=check_id(self.template_id, "template_id"),
                shared_variables=check_variables(self.variables),
                on_invalid_row=self.on_invalid_row,
                max_failures=self.max_failures,
                resend_failed=self.resend_failed,
            )
            source = RecipientSource(
                self.recipients, self.recipients_file, self.csv_delimiter, allow_empty=self.allow_empty
            )
            location = self.ledger_location or default_location()
            ledger = ledger_for(context, location)
            _connect(self.hook)
            settings.max_in_flight = self.max_in_flight or default_in_flight(self.hook.settings.rate_limit)
        if ledger is None:
            raise AirflowFailException(
                "BulkSendTemplateOperator needs a task instance in its context for its ledger."
            )
        report = open_location(location, f"{instance_path(context['ti'])}/report.{self.report_format}")
        reader = (
            functools.partial(read_template, self.hook, settings.sender_id, settings.template_id)
            if self.check_template
            else None
        )
        engine = BulkSend(self.hook, ledger, source, settings, self.log.info, self.progress_interval, reader)
        try:
            with fail_fast_unless_retryable():  # a missing or unreadable file stays so on every retry
                outcome = engine.run(report, self.report_format)
        finally:
            engine.close()
        summary = {
            "total": sum(outcome.counts.values()),
            **{status: outcome.counts.get(status, 0) for status in ("sent", "failed", "unknown", "skipped")},
            "invalid": outcome.invalid,
            "duplicates": outcome.duplicates,
            "from_earlier_tries": outcome.from_earlier_tries,
            "this_try": {
                k: outcome.this_try.get(k, 0)
                for k in ("sent", "failed", "unknown", "skipped", "claimed_by_another_try")
            },
            "report": str(report),
            "ledger": ledger.location,
            "elapsed_s": round(outcome.elapsed, 3),
            "rate_per_s": round(outcome.done / outcome.elapsed, 3) if outcome.elapsed > 0 else 0.0,
        }
        self.log.info("Bulk send finished: %s", summary)
        if outcome.stop is not None:
            raise outcome.stop
        return summary
