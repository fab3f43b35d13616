"""
The bulk engine: one template to every recipient of a segment, each at most once.

:class:`BulkSend` puts the pieces of :mod:`~airflow_provider_autocalls.bulk` (reading and checking
rows, progress, the report) together with the ledger: every row is checked before the first send,
earlier outcomes are read once, and each send is made under an exclusive claim that the hook takes
after its rate-limit permit, right before the request leaves. A try racing this one for the same
task instance loses that claim and does not send; it reports the row as claimed by another try.
"""

from __future__ import annotations

import math
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from airflow.providers.common.compat.sdk import AirflowFailException

from airflow_provider_autocalls.bulk import (
    Progress,
    RecipientSource,
    Row,
    SkippedRows,
    check_row,
    write_report,
)
from airflow_provider_autocalls.bulk import phone_key as phone_int
from airflow_provider_autocalls.bulk_stop_rules import Sent, Tally
from airflow_provider_autocalls.exceptions import (
    AutocallsError,
    AutocallsValidationError,
    InvalidPhoneError,
    SendOutcomeUnknownError,
    TemplateMismatchError,
)
from airflow_provider_autocalls.hooks._claims import under_claim
from airflow_provider_autocalls.ledger import ClaimTakenError, Ledger, State, phone_key
from airflow_provider_autocalls.templates import TemplateSpec

#: Errors about one row (its phone, its variables): that row fails, the others go on.
ROW_ERRORS = (InvalidPhoneError, TemplateMismatchError)
#: Sends kept in flight when the operator is not told: enough for ~3 s of latency at the rate limit.
IN_FLIGHT_SECONDS = 3.0


@dataclass
class Settings:
    """What one bulk send is asked to do (checked values)."""

    sender_id: int
    template_id: int
    shared_variables: dict[str, str] | None
    on_invalid_row: str = "fail"
    max_failures: float | None = None
    resend_failed: bool = False
    max_in_flight: int = 1
    #: The template as the API lists it, to check every row's variables against (None: unchecked).
    template: TemplateSpec | None = None


@dataclass
class _BadRows:
    """The rows refused by the checks: counted, the first 20 kept for the error."""

    count: int = 0
    shown: list[str] = field(default_factory=list)

    def add(self, line: int, raw: Any, error: Exception, skipped: SkippedRows) -> None:
        self.count += 1
        skipped.add(line, raw.get("recipient_phone") if isinstance(raw, Mapping) else None, str(error))
        if len(self.shown) < 20:
            self.shown.append(f"line {line}: {error}")


def default_in_flight(rate_limit: float) -> int:
    """Sends in flight enough for ``IN_FLIGHT_SECONDS`` of latency at ``rate_limit`` (8 unpaced)."""
    if rate_limit <= 0:
        return 8
    return max(1, min(100, math.ceil(IN_FLIGHT_SECONDS * rate_limit)))


def _not_attempted_reason(stop: BaseException) -> str:
    return f"not attempted: the task stopped ({type(stop).__name__})"


@dataclass
class Outcome:
    """What a finished (or stopped) bulk send did."""

    counts: Counter[str]
    this_try: Counter[str]
    invalid: int
    duplicates: int
    from_earlier_tries: int
    done: int
    elapsed: float
    stop: BaseException | None = None
    report: Any = None
    extra: dict[str, Any] = field(default_factory=dict)


class BulkSend:
    """
    One try of a bulk send.

    :param hook: the :class:`~airflow_provider_autocalls.hooks.autocalls.AutocallsHook` to send with.
    :param ledger: the task instance's ledger.
    :param source: the recipients.
    :param settings: the checked parameters.
    :param log: where progress lines go.
    :param progress_interval: seconds between progress lines at most.
    :param template_reader: reads the template to check every row against (one request), once
        the rows passed their own checks; ``None`` sends unchecked.
    """

    def __init__(
        self,
        hook: Any,
        ledger: Ledger,
        source: RecipientSource,
        settings: Settings,
        log: Callable[..., None],
        progress_interval: float = 10.0,
        template_reader: Callable[[], TemplateSpec] | None = None,
    ) -> None:
        self.hook = hook
        self.ledger = ledger
        self.source = source
        self.settings = settings
        self.log = log
        self.progress_interval = progress_interval
        self.template_reader = template_reader
        self.skipped = SkippedRows()
        self.this_try: Counter[str] = Counter()

    def close(self) -> None:
        self.skipped.close()

    def run(self, report_destination: Any, report_format: str) -> Outcome:
        started = time.monotonic()
        first_line, invalid, duplicates = self.check_all()
        earlier = self._earlier(first_line)
        to_send = sum(1 for key in first_line if key not in earlier or self._sendable_again(earlier[key]))
        self.log(
            f"{len(first_line)} valid recipients ({invalid} invalid, {duplicates} duplicates), "
            f"{len(first_line) - to_send} already handled by earlier tries; sending to {to_send}."
        )
        progress = Progress(to_send, self.log, self.progress_interval)
        stop = self._send_all(first_line, earlier, progress)
        progress.finish()
        counts = self._write_report(report_destination, first_line, report_format)
        return Outcome(
            counts=counts,
            this_try=self.this_try,
            invalid=invalid,
            duplicates=duplicates,
            from_earlier_tries=len(first_line) - to_send,
            done=progress.done,
            elapsed=time.monotonic() - started,
            stop=stop,
            report=report_destination,
        )

    # -- before the first send ---------------------------------------------------------------------

    def check_all(self) -> tuple[dict[int, int], int, int]:
        """
        Check every row before the first send; return the first line of each phone and the counts.

        Rows are checked on their own first, so that bad input costs no request; then, when a
        template reader is given, the template is read (one request) and every row's variables are
        checked against it in a second pass.
        """
        first_line: dict[int, int] = {}
        bad = _BadRows()
        duplicates = 0
        for line, raw in self.source:
            try:
                row = check_row(line, raw, self.settings.shared_variables)
            except AutocallsValidationError as error:
                bad.add(line, raw, error, self.skipped)
                continue
            key = phone_int(row.phone)
            if key in first_line:
                duplicates += 1
                self.skipped.add(line, row.phone, f"duplicate of line {first_line[key]}")
            else:
                first_line[key] = line
        self._refuse(bad)
        if self.template_reader is not None:
            self.settings.template = self.template_reader()
            for row_line, raw in self.source:
                try:
                    row = check_row(row_line, raw, self.settings.shared_variables)
                except AutocallsValidationError:
                    continue  # refused by the first pass
                if first_line.get(phone_int(row.phone)) != row_line:
                    continue  # a duplicate: its first row speaks for it
                try:
                    self.settings.template.check(row.variables, "variables")
                except AutocallsValidationError as error:
                    bad.add(row_line, raw, error, self.skipped)
                    del first_line[phone_int(row.phone)]
            self._refuse(bad)
        return first_line, bad.count, duplicates

    def _refuse(self, bad: _BadRows) -> None:
        if bad.count and self.settings.on_invalid_row == "fail":
            more = f" (and {bad.count - len(bad.shown)} more)" if bad.count > len(bad.shown) else ""
            raise AirflowFailException(
                f"{bad.count} invalid recipient rows; nothing was sent. Fix them, or set on_invalid_row='skip':\n"
                + "\n".join(bad.shown)
                + more
            )

    def _earlier(self, first_line: dict[int, int]) -> dict[int, tuple[int, State]]:
        """The newest generation and state of each recipient of this segment, read once."""
        earlier: dict[int, tuple[int, State]] = {}
        for key, newest in self.ledger.states().items():
            if key.startswith("p") and key[1:].isdigit() and int(key[1:]) in first_line:
                earlier[int(key[1:])] = newest
        return earlier

    def _sendable_again(self, newest: tuple[int, State]) -> bool:
        state = newest[1]
        return state is State.RELEASED or (state is State.FAILED and self.settings.resend_failed)

    # -- sending -----------------------------------------------------------------------------------

    def _send_all(
        self, first_line: dict[int, int], earlier: dict[int, tuple[int, State]], progress: Progress
    ) -> BaseException | None:
        """
        Keep up to ``max_in_flight`` sends going, so that the rate limit and not the API's latency
        bounds the pace; the hook's shared pacer spaces them. Outcomes are counted here, in order
        of completion, and the first reason to stop ends the submitting (sends in flight finish).
        """
        # Failures of earlier tries count too: max_failures is about the task instance, not one try.
        tally = Tally(
            failures=sum(
                1
                for newest in earlier.values()
                if newest[1] in (State.FAILED, State.UNKNOWN) and not self._sendable_again(newest)
            ),
            limit=self._failure_limit(len(first_line)),
            max_failures=self.settings.max_failures,
        )
        in_flight: set[Future[Sent]] = set()
        with ThreadPoolExecutor(self.settings.max_in_flight, thread_name_prefix="autocalls-bulk") as pool:
            try:
                for row in self._rows_to_send(first_line, earlier):
                    while len(in_flight) >= self.settings.max_in_flight and tally.stop is None:
                        done, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
                        self._count(done, tally, progress)
                    if tally.stop is not None:
                        self._not_attempted(row, tally.stop)
                        continue
                    in_flight.add(pool.submit(self._send_one, row, earlier.get(phone_int(row.phone))))
            finally:
                # Whatever stopped the submitting, the sends already out finish and are recorded.
                done, _ = wait(in_flight)
            self._count(done, tally, progress)
        if tally.stop is None and tally.attempted and tally.attempted == tally.failed_here:
            tally.stop = AirflowFailException(
                f"Every one of the {tally.attempted} sends of this try failed (last error: "
                f"{tally.last_error_code}); see the report. Nothing suggests the rest would pass."
            )
        return tally.stop

    def _count(self, done: set[Future[Sent]], tally: Tally, progress: Progress) -> None:
        for future in done:
            sent = future.result()
            if sent.skipped is not None:
                self.skipped.add(sent.row.line, sent.row.phone, sent.skipped)
                self.this_try["skipped"] += 1
            if sent.lost_claim:
                self.this_try["claimed_by_another_try"] += 1
            if sent.state is not None:
                self.this_try[sent.state.value] += 1
                progress.count(sent.state)
            tally.add(sent)

    def _first_rows(self, first_line: dict[int, int]) -> Iterator[Row]:
        """Each recipient's first valid row, in the order of the source."""
        for line, raw in self.source:
            try:
                row = check_row(line, raw, self.settings.shared_variables, self.settings.template)
            except AutocallsValidationError:
                continue  # reported by the check pass
            if first_line.get(phone_int(row.phone)) == line:
                yield row

    def _rows_to_send(
        self, first_line: dict[int, int], earlier: dict[int, tuple[int, State]]
    ) -> Iterator[Row]:
        for row in self._first_rows(first_line):
            newest = earlier.get(phone_int(row.phone))
            if newest is None or self._sendable_again(newest):
                yield row

    def _send_one(self, row: Row, newest: tuple[int, State] | None) -> Sent:
        """Send to one recipient (in a worker thread); say what happened."""
        gen = newest[0] + 1 if newest else 0
        claim = self.ledger.new_claim(
            phone_key(row.phone), row.phone, gen, line=row.line, recipient_name=row.name
        )
        claim.failed_on = ROW_ERRORS
        try:
            with under_claim(claim):
                self.hook.send_template(
                    self.settings.sender_id, self.settings.template_id, row.phone, row.name, row.variables
                )
        except ClaimTakenError:
            # The try holding the claim reports this recipient; this one only counts it.
            return Sent(row, None, lost_claim=True)
        except SendOutcomeUnknownError:
            return Sent(row, State.UNKNOWN)
        except ROW_ERRORS as error:
            return Sent(row, State.FAILED, error_code=error.error_code)
        except AutocallsError as error:
            # Not about this row: every other recipient would get the same answer. Nothing was sent;
            # stop, and retry later (sender offline, no balance, API unreachable) or fail now.
            stop = error if error.retryable else AirflowFailException(f"{type(error).__name__}: {error}")
            return Sent(row, None, skipped=_not_attempted_reason(error), stop=stop)
        return Sent(row, State.SENT)

    def _not_attempted(self, row: Row, stop: BaseException) -> None:
        self.skipped.add(row.line, row.phone, _not_attempted_reason(stop))
        self.this_try["skipped"] += 1

    def _failure_limit(self, valid: int) -> float | None:
        limit = self.settings.max_failures
        if limit is None:
            return None
        return limit * valid if 0 < limit < 1 else limit

    # -- the report --------------------------------------------------------------------------------

    def _write_report(self, destination: Any, first_line: dict[int, int], report_format: str) -> Counter[str]:
        """Write the report whole, then put it in place: a try racing this one may write it too."""
        if not isinstance(destination, Path) or hasattr(destination, "fs"):  # ObjectStoragePath: one PUT
            return write_report(
                destination,
                self._report_rows(first_line),
                self.skipped,
                report_format,
                self.ledger.try_number,
            )
        partial = destination.with_name(f".{destination.name}.{self.ledger.attempt}")
        try:
            counts = write_report(
                partial, self._report_rows(first_line), self.skipped, report_format, self.ledger.try_number
            )
            os.replace(partial, destination)
        finally:
            partial.unlink(missing_ok=True)
        return counts

    def _report_rows(self, first_line: dict[int, int]) -> Iterator[dict[str, Any]]:
        """One row per recipient whose newest outcome is final, in the order of the source."""
        for row in self._first_rows(first_line):
            entry = self.ledger.entry(phone_key(row.phone))
            if entry is None or not entry.state.final:
                continue  # never claimed, or released: reported as skipped (not attempted)
            details = entry.details
            answer = details.get("answer") or {}
            reason = details.get("reason")
            if entry.outcome is None and entry.state is State.UNKNOWN:
                reason = (
                    f"try {entry.try_number} claimed this send and recorded no outcome: it stopped during the "
                    "request (or is still sending), so the message may have been delivered"
                )
            yield {
                "line": row.line,
                "recipient": row.phone,
                "recipient_name": row.name,
                "state": entry.state.value,
                "message_sid": details.get("message_sid") or answer.get("message_sid"),
                "error_code": details.get("error_code"),
                "reason": reason,
                "try_number": entry.try_number,
            }
