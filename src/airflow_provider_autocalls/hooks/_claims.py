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

How a call ends is decided here too, by one :class:`Settlement` for the sync and the async path:
``sent``, ``failed``, ``unknown`` (the request may have reached the API) or ``released`` (it
provably did not), by what reached the wire and never by the type of an interruption.
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
from types import TracebackType
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import AirflowFailException

from airflow_provider_autocalls import metrics
from airflow_provider_autocalls.exceptions import AutocallsError, SendOutcomeUnknownError
from airflow_provider_autocalls.hooks._answers import Kind
from airflow_provider_autocalls.hooks._retry import may_retry
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


class Settlement:
    """
    How one call (every attempt of one request) ends, for the sync and the async path alike.

    Wrap the attempts in ``with settlement:`` and put the answer in :attr:`answer`. The attempts
    tell what reached the wire: :meth:`request_may_be_out` is the ``on_send`` of each attempt's
    :class:`~airflow_provider_autocalls.hooks._transport.WireWatch`, :meth:`attempt_failed` takes
    an error that proves what happened. On leaving the block, a send's claim is settled and its
    outcome counted: ``sent``; ``unknown`` when the request may have reached the API (an answer
    lost, or an interruption from outside, such as a signal or a cancelled coroutine, while the
    request was out); ``failed`` or ``released`` for a definite refusal; ``released`` for an
    interruption before a byte of the request was written. The error goes on as it came (a
    cancellation stays a cancellation), but for a send in doubt inside a task, which becomes one
    that fails the task without Airflow retries.

    :param request: the request the call makes.
    :param guard: its claim (``None``: a read, or a send made unguarded).
    """

    def __init__(self, request: ApiRequest, guard: Guard | None) -> None:
        self.request = request
        self.guard = guard
        #: Whether the API may have acted on a request of this call: one went to the network and
        #: nothing proves the API did nothing (as a 429, a failure to connect or an error answer do).
        self.may_have_reached_api = False
        #: The call's answer, set inside the block.
        self.answer: Any = None

    def request_may_be_out(self) -> None:
        """Called right before the first byte of an attempt's request may be written."""
        self.may_have_reached_api = True

    def attempt_failed(self, error: AutocallsError) -> None:
        """
        An attempt ended with ``error``, which tells whether its request may have reached the API.
        One the retry policy tries again released its claim (see :meth:`Guard.nothing_sent`).
        """
        self.may_have_reached_api = isinstance(error, SendOutcomeUnknownError)
        if self.guard is not None and may_retry(self.request.kind, error):
            self.guard.nothing_sent(error)

    def in_doubt(self, error: BaseException) -> bool:
        """Whether the API may have acted on the call that ended with ``error``."""
        if isinstance(error, SendOutcomeUnknownError):
            return True
        if isinstance(error, AutocallsError):
            return False  # every other error of ours is a definite "nothing was sent"
        # Interrupted from outside: in doubt only if a request was out at that moment.
        return self.may_have_reached_api

    def __enter__(self) -> Settlement:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if error is None:
            if self.guard is not None:
                self.guard.succeeded(self.answer)
            self._count(None, in_doubt=False)
            return
        in_doubt = self.in_doubt(error)
        self._count(error, in_doubt)
        if self.guard is not None and (failure := self.guard.failed(error, in_doubt)) is not error:
            raise failure from error

    def _count(self, error: BaseException | None, in_doubt: bool) -> None:
        """Count a send's outcome: ``autocalls.sent``, ``unknown`` or ``failed`` (a refusal)."""
        if self.request.kind is not Kind.SEND:
            return
        if error is None:
            metrics.sent()
        elif in_doubt:
            metrics.unknown()
        elif isinstance(error, AutocallsError):
            metrics.failed()


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
