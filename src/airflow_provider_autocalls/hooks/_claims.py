"""
The claim step of a send: permit -> **claim** -> request -> outcome.

A send is made under a :class:`~airflow_provider_autocalls.ledger.Claim` in two cases:

- **An operator chose one** (``with under_claim(claim):``), keyed by recipient: the send operators
  and the bulk engine.
- **The hook runs inside a task** (a TaskFlow ``@task`` calling ``hook.send_template``), and the
  claim is made here, in the task instance's ledger, keyed by what is sent: a digest of the
  endpoint and body, and how many identical sends this try made before. A later try that makes
  the same call gets the first answer back without sending; a task that sends two different
  messages to one recipient sends both.

Outside a task (a script, a test) nothing is claimed and the hook behaves as a plain client.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
from collections import Counter
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import AirflowFailException

from airflow_provider_autocalls.exceptions import AutocallsError, SendOutcomeUnknownError
from airflow_provider_autocalls.ledger import Claim, Entry, Ledger, State, ledger_for

if TYPE_CHECKING:
    from airflow_provider_autocalls.hooks._answers import ApiRequest

#: No claim at all, even inside a task: a notifier's message belongs to each try that fails.
UNGUARDED: Any = object()

_chosen: ContextVar[Any] = ContextVar("autocalls_claim", default=None)


@contextlib.contextmanager
def under_claim(claim: Claim | None) -> Iterator[None]:
    """Make the sends inside the block use ``claim`` (``None``: the hook's own choice)."""
    token = _chosen.set(claim)
    try:
        yield
    finally:
        _chosen.reset(token)


@contextlib.contextmanager
def unguarded() -> Iterator[None]:
    """Sends inside the block take no claim, even inside a task."""
    token = _chosen.set(UNGUARDED)
    try:
        yield
    finally:
        _chosen.reset(token)


class TaskSendOutcomeUnknownError(SendOutcomeUnknownError, AirflowFailException):  # type: ignore[misc]
    """
    A send in doubt inside a running task: also an ``AirflowFailException``, so that Airflow does
    not retry the task (whatever its ``retries``) and message the customer a second time.
    """


@dataclass
class Guard:
    """What the request path needs for one send: the claim to take, or the answer to replay."""

    claim: Claim | None = None
    replay: dict[str, Any] | None = None
    in_task: bool = False

    def nothing_sent(self, error: BaseException) -> None:
        """
        An attempt was refused before the API acted on it (a 429, no connection) and may be tried
        again: release this generation now, so that a kill during the wait before the next attempt
        leaves the message sendable, and claim the next generation at the next attempt.
        """
        claim = self.claim
        if claim is not None and claim.taken:
            # Settled "released": the next attempt's take() claims the next generation.
            claim.settle(
                State.RELEASED, reason=f"refused before the API acted on it ({type(error).__name__})"
            )

    def succeeded(self, answer: dict[str, Any]) -> None:
        if self.claim is not None:
            self.claim.settle(State.SENT, answer=answer, message_sid=answer.get("message_sid"))

    def failed(self, error: BaseException, in_doubt: bool) -> BaseException:
        """Record a failed send; return the error to raise."""
        claim = self.claim
        if claim is not None and claim.taken and claim.settled is None:
            if in_doubt:
                claim.settle(State.UNKNOWN, reason=str(error))
            elif isinstance(error, AutocallsError):
                state = State.FAILED if isinstance(error, claim.failed_on) else State.RELEASED
                claim.settle(state, error_code=getattr(error, "error_code", None), reason=str(error))
            else:
                claim.settle(
                    State.RELEASED, reason=f"interrupted before the request left ({type(error).__name__})"
                )
        if self.in_task and isinstance(error, SendOutcomeUnknownError):
            return _fail_fast(error)
        return error


def guard_for(request: ApiRequest, ledger_location: str | None) -> Guard | None:
    """The guard of a send request, or ``None`` when it is sent unguarded."""
    chosen = _chosen.get()
    if chosen is UNGUARDED:
        return None
    if chosen is not None:
        return Guard(claim=chosen)
    found = _task_ledger(ledger_location)
    if found is None:
        return None
    ledger, counts = found
    key = _content_key(counts, request)
    entry = ledger.entry(key)
    if entry is None or entry.state is State.RELEASED:
        gen = entry.next_gen if entry else 0
        return Guard(claim=ledger.new_claim(key, str(request.recipient_phone), gen), in_task=True)
    if entry.state is State.SENT:
        return Guard(replay=dict(entry.details.get("answer") or {}), in_task=True)
    raise _fail_fast(_in_doubt_before(request, entry, ledger))


# -- the ledger of the running task -------------------------------------------------------------------

_lock = threading.Lock()
# One ledger per running try and process, with its count of identical sends.
_ledgers: dict[tuple[Any, ...], tuple[Ledger, Counter[str]]] = {}


def _task_ledger(location: str | None) -> tuple[Ledger, Counter[str]] | None:
    context = _running_task_context()
    if context is None:
        return None
    ti = context["ti"]
    identity = (
        ti.dag_id,
        ti.run_id,
        ti.task_id,
        getattr(ti, "map_index", -1),
        getattr(ti, "try_number", None),
        location,
    )
    with _lock:
        found = _ledgers.get(identity)
        if found is None:
            ledger = ledger_for(context, location)
            if ledger is None:
                return None
            found = _ledgers[identity] = (ledger, Counter())
        return found


def _content_key(counts: Counter[str], request: ApiRequest) -> str:
    digest = hashlib.sha256(
        json.dumps([request.method, request.path, request.body], sort_keys=True, default=str).encode()
    ).hexdigest()[:32]
    with _lock:
        counts[digest] += 1
        return f"c{digest}-{counts[digest]}"


def _running_task_context() -> Any:
    from airflow.providers.common.compat.sdk import get_current_context

    try:
        context = get_current_context()
    except Exception:  # no task is running in this process (a script, a test, the triggerer)
        return None
    return context if context and context.get("ti") is not None else None


def _in_doubt_before(request: ApiRequest, entry: Entry, ledger: Ledger) -> SendOutcomeUnknownError:
    return SendOutcomeUnknownError(
        f"{request.what} to {request.recipient_phone}: try {entry.try_number} of this task already made this "
        "send and its outcome is unknown (the answer was lost, or the worker stopped mid-request), so the "
        "message may have been delivered. It is not sent again: check the conversation in the Autocalls "
        "dashboard, then release it with `release_unknown` (see the README) if it did not arrive. "
        f"Ledger: {ledger.location}",
        sender_id=request.sender_id,
        recipient_phone=request.recipient_phone,
    )


def _fail_fast(error: SendOutcomeUnknownError) -> TaskSendOutcomeUnknownError:
    if isinstance(error, TaskSendOutcomeUnknownError):
        return error
    failure = TaskSendOutcomeUnknownError(
        str(error),
        sender_id=error.sender_id,
        recipient_phone=error.recipient_phone,
        status_code=error.status_code,
    )
    return failure
