"""
The bulk engine: one template to every recipient of a segment, each at most once.

:class:`BulkSend` puts the pieces of :mod:`~airflow_provider_autocalls.bulk` (reading and checking
rows, progress, the report) together with the ledger: every row is checked before the first send,
earlier outcomes are read once, and each send is made under an exclusive claim that the hook takes
after its rate-limit permit, right before the request leaves. A try racing this one for the same
task instance loses that claim and does not send; it reports the row as claimed by another try.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
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
from airflow_provider_autocalls.exceptions import (
    AutocallsError,
    AutocallsServerError,
    AutocallsValidationError,
    InvalidPhoneError,
    SendOutcomeUnknownError,
    TemplateMismatchError,
)
from airflow_provider_autocalls.hooks._claims import under_claim
from airflow_provider_autocalls.ledger import ClaimTakenError, Ledger, State, phone_key

#: Errors about one row (its phone, its variables): that row fails, the others go on.
ROW_ERRORS = (InvalidPhoneError, TemplateMismatchError)
#: Sends in a row that ended in doubt before a bulk send stops (the API is failing).
MAX_IN_DOUBT_IN_A_ROW = 3


@dataclass
class Settings:
    """What one bulk send is asked to do (checked values)."""

    sender_id: int
    template_id: int
    shared_variables: dict[str, str] | None
    on_invalid_row: str = "fail"
    max_failures: float | None = None
    resend_failed: bool = False


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
    """

    def __init__(
        self,
        hook: Any,
        ledger: Ledger,
        source: RecipientSource,
        settings: Settings,
        log: Callable[..., None],
        progress_interval: float = 10.0,
    ) -> None:
        self.hook = hook
        self.ledger = ledger
        self.source = source
        self.settings = settings
        self.log = log
        self.progress_interval = progress_interval
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
        counts = write_report(report_destination, self._report_rows(first_line), self.skipped, report_format)
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
        """Check every row before the first send; return the first line of each phone and the counts."""
        first_line: dict[int, int] = {}
        bad: list[str] = []
        invalid = duplicates = 0
        for line, raw in self.source:
            try:
                row = check_row(line, raw, self.settings.shared_variables)
            except AutocallsValidationError as error:
                invalid += 1
                phone = raw.get("recipient_phone") if isinstance(raw, Mapping) else None
                self.skipped.add(line, phone, str(error))
                if len(bad) < 20:
                    bad.append(f"line {line}: {error}")
                continue
            key = phone_int(row.phone)
            if key in first_line:
                duplicates += 1
                self.skipped.add(line, row.phone, f"duplicate of line {first_line[key]}")
            else:
                first_line[key] = line
        if invalid and self.settings.on_invalid_row == "fail":
            more = f" (and {invalid - len(bad)} more)" if invalid > len(bad) else ""
            raise AirflowFailException(
                f"{invalid} invalid recipient rows; nothing was sent. Fix them, or set on_invalid_row='skip':\n"
                + "\n".join(bad)
                + more
            )
        return first_line, invalid, duplicates

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
        # Failures of earlier tries count too: max_failures is about the task instance, not one try.
        failures = sum(
            1
            for newest in earlier.values()
            if newest[1] in (State.FAILED, State.UNKNOWN) and not self._sendable_again(newest)
        )
        limit = self._failure_limit(len(first_line))
        stop: BaseException | None = None
        in_doubt_in_a_row = 0
        for row in self._rows_to_send(first_line, earlier):
            if stop is not None:
                self._not_attempted(row, stop)
                continue
            status, stop = self._send_one(row, earlier.get(phone_int(row.phone)))
            if status is None:
                continue
            progress.count(status)
            failures += status in (State.FAILED, State.UNKNOWN)
            in_doubt_in_a_row = in_doubt_in_a_row + 1 if status == State.UNKNOWN else 0
            if stop is None and limit is not None and failures > limit:
                stop = AirflowFailException(
                    f"{failures} recipients failed, more than max_failures={self.settings.max_failures}."
                )
            if stop is None and in_doubt_in_a_row >= MAX_IN_DOUBT_IN_A_ROW:
                # The API is failing: every further send would be one more message in doubt.
                stop = AutocallsServerError(
                    f"{in_doubt_in_a_row} sends in a row ended without a readable answer; stopping so that no "
                    "more messages end in doubt. A retry of the task resumes with the recipients not yet sent to.",
                    status_code=0,
                )
        return stop

    def _first_rows(self, first_line: dict[int, int]) -> Iterator[Row]:
        """Each recipient's first valid row, in the order of the source."""
        for line, raw in self.source:
            try:
                row = check_row(line, raw, self.settings.shared_variables)
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

    def _send_one(
        self, row: Row, newest: tuple[int, State] | None
    ) -> tuple[State | None, BaseException | None]:
        """Send to one recipient; return its outcome, and the error that must stop the task, if any."""
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
        except ClaimTakenError as error:
            self.skipped.add(row.line, row.phone, f"claimed by another try: {error}")
            self.this_try["skipped"] += 1
            return None, None
        except SendOutcomeUnknownError:
            return self._counted(State.UNKNOWN), None
        except ROW_ERRORS:
            return self._counted(State.FAILED), None
        except AutocallsError as error:
            # Not about this row: every other recipient would get the same answer. Nothing was sent;
            # stop, and retry later (sender offline, no balance, API unreachable) or fail now.
            self._not_attempted(row, error)
            return None, error if error.retryable else AirflowFailException(
                f"{type(error).__name__}: {error}"
            )
        return self._counted(State.SENT), None

    def _counted(self, state: State) -> State:
        self.this_try[state.value] += 1
        return state

    def _not_attempted(self, row: Row, stop: BaseException) -> None:
        self.skipped.add(row.line, row.phone, f"not attempted: the task stopped ({type(stop).__name__})")
        self.this_try["skipped"] += 1

    def _failure_limit(self, valid: int) -> float | None:
        limit = self.settings.max_failures
        if limit is None:
            return None
        return limit * valid if 0 < limit < 1 else limit

    # -- the report --------------------------------------------------------------------------------

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
