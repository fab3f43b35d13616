"""``BulkSendTemplateOperator``: one template to every recipient of a segment; the engine is in ``bulk_send``."""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal

from airflow.providers.common.compat.sdk import AirflowFailException, BaseOperator

from airflow_provider_autocalls._task_errors import fail_fast_unless_retryable
from airflow_provider_autocalls.bulk import RecipientSource
from airflow_provider_autocalls.bulk_send import BulkSend, Settings, default_in_flight
from airflow_provider_autocalls.hooks.autocalls import AutocallsHook
from airflow_provider_autocalls.ledger import default_location, instance_path, ledger_for, open_location
from airflow_provider_autocalls.templates import read_template
from airflow_provider_autocalls.validation import check_id, check_variables

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context, XComArg


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
            self.hook.get_conn()  # a missing or broken connection fails before anything is recorded
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
