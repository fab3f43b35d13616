"""
When a bulk send stops early: the running counts of its outcomes and the rules they are held to.

A bulk send stops (and fails its task) when more recipients failed than ``max_failures``, when
the same refusal comes :data:`SAME_ERROR_IN_A_ROW` times in a row (the cause is shared: a variable
or the template), or when :data:`MAX_IN_DOUBT_IN_A_ROW` sends in a row end in doubt (the API is
failing, and every further send would be one more message in doubt).
"""

from __future__ import annotations

from dataclasses import dataclass

from airflow.providers.common.compat.sdk import AirflowFailException

from airflow_provider_autocalls.bulk import Row
from airflow_provider_autocalls.exceptions import AutocallsServerError
from airflow_provider_autocalls.ledger import State

#: Sends in a row that ended in doubt before a bulk send stops (the API is failing).
MAX_IN_DOUBT_IN_A_ROW = 3
#: Rows in a row refused with the same error code before a bulk send stops (the cause is shared).
SAME_ERROR_IN_A_ROW = 10


@dataclass
class Sent:
    """What one send did (made in a worker thread, counted in the task's own)."""

    row: Row
    state: State | None
    error_code: str | None = None
    skipped: str | None = None
    stop: BaseException | None = None
    lost_claim: bool = False


@dataclass
class Tally:
    """The running counts that decide whether a bulk send stops early."""

    failures: int
    limit: float | None
    max_failures: float | None
    attempted: int = 0
    failed_here: int = 0
    in_doubt_in_a_row: int = 0
    same_error_in_a_row: int = 0
    last_error_code: str | None = None
    stop: BaseException | None = None

    def add(self, sent: Sent) -> None:
        if sent.stop is not None and self.stop is None:
            self.stop = sent.stop
        if sent.state is None:
            return
        self.attempted += 1
        failed = sent.state in (State.FAILED, State.UNKNOWN)
        self.failures += failed
        self.failed_here += failed
        self.in_doubt_in_a_row = self.in_doubt_in_a_row + 1 if sent.state is State.UNKNOWN else 0
        repeated = sent.state is State.FAILED and sent.error_code == self.last_error_code
        self.same_error_in_a_row = (
            self.same_error_in_a_row + 1 if repeated else int(sent.state is State.FAILED)
        )
        self.last_error_code = sent.error_code if sent.state is State.FAILED else None
        if self.stop is not None:
            return
        if self.limit is not None and self.failures > self.limit:
            self.stop = AirflowFailException(
                f"{self.failures} recipients failed, more than max_failures={self.max_failures}."
            )
        elif self.same_error_in_a_row >= SAME_ERROR_IN_A_ROW:
            # Every row refused for the same reason: a shared variable or the template is wrong.
            self.stop = AirflowFailException(
                f"{self.same_error_in_a_row} sends in a row were refused with {self.last_error_code}; stopping "
                "before the rest meet the same refusal. See the report's reason column, fix the cause, and "
                "retry with resend_failed=True."
            )
        elif self.in_doubt_in_a_row >= MAX_IN_DOUBT_IN_A_ROW:
            # The API is failing: every further send would be one more message in doubt.
            self.stop = AutocallsServerError(
                f"{self.in_doubt_in_a_row} sends in a row ended without a readable answer; stopping so that no "
                "more messages end in doubt. A retry of the task resumes with the recipients not yet sent to.",
                status_code=0,
            )
