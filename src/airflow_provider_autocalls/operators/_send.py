"""What every single-message send operator shares: checks, the ledger's claim, the XCom, how errors end a task."""

from __future__ import annotations

import time
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import AirflowFailException, BaseOperator, timezone

from airflow_provider_autocalls._task_errors import fail_fast_unless_retryable
from airflow_provider_autocalls.hooks._claims import under_claim
from airflow_provider_autocalls.hooks.autocalls import AutocallsHook
from airflow_provider_autocalls.ledger import ClaimTakenError, Entry, Ledger, State, ledger_for, phone_key
from airflow_provider_autocalls.sessions import REPLY_BASELINE_KEY, take_reply_baseline
from airflow_provider_autocalls.validation import check_id, check_phone

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

IF_SESSION_CLOSED = ("fail", "skip")
#: How often a try that lost the claim to a racing try looks for that try's outcome.
_OUTCOME_POLL = 0.2


class AutocallsSendOperator(BaseOperator):
    """What both send operators share: the hook, the ledger, the XCom shape, how errors end the task."""

    ui_color = "#25d366"

    def __init__(
        self,
        *,
        sender_id: int | str,
        recipient_phone: str,
        autocalls_conn_id: str = AutocallsHook.default_conn_name,
        ledger_location: str | None = None,
        track_reply: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.track_reply = track_reply
        self.sender_id = sender_id
        self.recipient_phone = recipient_phone
        self.autocalls_conn_id = autocalls_conn_id
        self.ledger_location = ledger_location

    @cached_property
    def hook(self) -> AutocallsHook:
        return AutocallsHook(autocalls_conn_id=self.autocalls_conn_id)

    def execute(self, context: Context) -> dict[str, Any]:
        # Every field first (bad input costs no request), then the ledger, then the reads a send
        # needs (the template check, the reply baseline), and last the claim and the send.
        with fail_fast_unless_retryable():
            recipient = self._check()
            ledger = ledger_for(context, self.ledger_location)
        key = phone_key(recipient)
        earlier = None
        if ledger is not None:
            with fail_fast_unless_retryable():
                earlier = ledger.entry(key)
                if earlier is not None and earlier.holder_may_be_sending:
                    # A try racing this one (a zombie, a double schedule) is sending it: its outcome is ours.
                    earlier = self._outcome_of_racing_try(ledger, key)
            if earlier is not None and earlier.state is not State.RELEASED:
                return self._earlier_outcome(ledger, earlier)
        with fail_fast_unless_retryable():
            self.hook.get_conn()  # a missing or broken connection must not leave a claim
            self._prepare()
            extras = self._describe()
        if ledger is None:
            result = self._send_and_describe(extras)
            self._report_sent(result)
            return result
        return self._send_at_most_once(ledger, key, recipient, earlier, extras)

    def _send_at_most_once(
        self, ledger: Ledger, key: str, recipient: str, earlier: Entry | None, extras: dict[str, Any]
    ) -> dict[str, Any]:
        """Claim the message in the task instance's ledger, so that no other try of this task sends it."""
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

    def _check(self) -> str:
        """Check every field (no request); return the recipient."""
        check_id(self.sender_id, "sender_id")
        return check_phone(self.recipient_phone)

    def _prepare(self) -> None:
        """Reads a send needs before it goes (e.g. the template check); nothing by default."""

    def _describe(self) -> dict[str, Any]:
        """
        What the XCom adds to the API's answer; kept with the claim so a later try returns the same.
        With ``track_reply``, ``reply_baseline`` is the API's ``last_customer_message_at`` read right
        before the send: ``SessionOpenSensor(reply_to=...)`` waits for a customer message after it,
        on the API's clock.
        """
        extras: dict[str, Any] = {
            "sent_at": timezone.utcnow().isoformat(),
            "sender_id": self.sender_id,
            "recipient_phone": self.recipient_phone,
        }
        if self.track_reply:
            extras[REPLY_BASELINE_KEY] = self._reply_baseline()
        return extras

    def _reply_baseline(self) -> str | None:
        return take_reply_baseline(self.hook, self.sender_id, self.recipient_phone)

    def _send_and_describe(self, extras: dict[str, Any]) -> dict[str, Any]:
        with fail_fast_unless_retryable():
            answer = self._send(extras)
        return {**answer, **extras}

    def _report_sent(self, result: dict[str, Any]) -> None:
        self.log.info("Sent to %s: message_sid %s", self.recipient_phone, result.get("message_sid"))

    def _send(self, extras: dict[str, Any]) -> dict[str, Any]:
        """
        Send, and return the API's answer. ``extras`` is the XCom's part kept with the claim: what
        a subclass adds to it before its send (the kind it chose) is kept too.
        """
        raise NotImplementedError
