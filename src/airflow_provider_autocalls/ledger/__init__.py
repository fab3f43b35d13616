"""
The ledger: "was this message already sent?", answered the same way by every sender.

Each task instance (DAG, run, task, map index) has one ledger. A message in it has a **key** (the
recipient for the operators, a digest of the request for the hook inside a ``@task``) and, per
key, numbered **generations**. A generation is three records at most, each created exclusively
(see :mod:`._stores`), never changed:

- ``<key>.<gen>.claim``: made right before the request leaves, after the rate-limit permit. Only
  one try can create it, so of two tries racing for a message (a zombie and its replacement) only
  one sends; the other is told it lost and does not send.
- ``<key>.<gen>.outcome``: ``sent`` (with the API's answer), ``failed`` (a definite refusal of this
  recipient), ``unknown`` (the request reached the API and its answer was lost) or ``released``
  (nothing reached the API: the next generation may send).
- ``<key>.<gen>.release``: a person who checked the dashboard released an ``unknown`` message, so
  the next try may send it again (:func:`release_unknown`).

A claim without an outcome is ``unknown``: its try was killed during the request, or is still
sending. Nothing decides by a wall clock: records are named by key and generation, so their
meaning is the same whatever the clocks of the workers that wrote them.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import conf

from airflow_provider_autocalls.exceptions import AutocallsError
from airflow_provider_autocalls.ledger._stores import LedgerStoreError, Store, is_local, open_store

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

__all__ = [
    "Claim",
    "ClaimTakenError",
    "Entry",
    "Ledger",
    "LedgerCorruptError",
    "LedgerStoreError",
    "State",
    "default_location",
    "instance_path",
    "ledger_for",
    "open_location",
    "phone_key",
]

log = logging.getLogger(__name__)

_KINDS = ("claim", "outcome", "release")


class State(StrEnum):
    """A message's state in the ledger."""

    SENT = "sent"
    FAILED = "failed"
    UNKNOWN = "unknown"
    RELEASED = "released"

    @property
    def final(self) -> bool:
        """Whether no further try sends this message by itself."""
        return self is not State.RELEASED


class ClaimTakenError(AutocallsError):
    """Another try of this task instance claimed the message first; this try sent nothing."""

    def __init__(self, message: str, *, holder: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.holder = dict(holder or {})


class LedgerCorruptError(AutocallsError):
    """A ledger record cannot be read; nothing is sent until a person looks at it."""


def phone_key(phone: str) -> str:
    """The key of a recipient (a checked E.164 number): ``p`` and its digits."""
    return "p" + phone.removeprefix("+")


@dataclass(slots=True)
class Entry:
    """The newest generation of one key, and what it says."""

    key: str
    gen: int
    state: State
    claim: dict[str, Any] | None = None
    outcome: dict[str, Any] | None = None

    @property
    def next_gen(self) -> int:
        return self.gen + 1

    @property
    def try_number(self) -> Any:
        return (self.outcome or self.claim or {}).get("try_number")

    @property
    def holder_may_be_sending(self) -> bool:
        """
        Whether the try that claimed this message, with no outcome yet, may still be sending it: it
        runs on another host, or in another live process of this one.
        """
        if self.state is not State.UNKNOWN or self.outcome is not None or not self.claim:
            return False
        pid = self.claim.get("pid")
        if self.claim.get("host") != socket.gethostname() or not isinstance(pid, int):
            return True  # another machine: nothing here can tell
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    @property
    def details(self) -> dict[str, Any]:
        return dict((self.outcome or {}).get("details") or (self.claim or {}).get("details") or {})


@dataclass
class Claim:
    """
    The right to send one generation of one message, once taken.

    :param failed_on: the API's refusals that record ``failed`` (a bulk row refused for itself);
        any other definite refusal records ``released``, and the next try may send.
    """

    ledger: Ledger
    key: str
    gen: int
    recipient: str
    details: dict[str, Any] = field(default_factory=dict)
    failed_on: tuple[type[BaseException], ...] = ()
    taken: bool = False
    settled: State | None = None

    def take(self) -> None:
        """
        Create the claim; right before the request leaves. Raises :class:`ClaimTakenError`.

        A claim released (nothing reached the API: a 429, a closed window) moves on to the next
        generation; one that went out (or may have) can never be taken again.
        """
        if self.taken and self.settled is None:
            return
        if self.settled is State.RELEASED:
            self.gen, self.taken, self.settled = self.gen + 1, False, None
        elif self.settled is not None:
            raise RuntimeError(f"the claim on {self.recipient} is {self.settled.value}: it cannot send again")
        record = {**self.ledger.stamp(self.key, self.gen, self.recipient), "details": self.details}
        if not self.ledger.store.create(_name(self.key, self.gen, "claim"), record):
            holder = self.ledger.store.read(_name(self.key, self.gen, "claim")) or {}
            raise ClaimTakenError(
                f"Another try of this task instance (try {holder.get('try_number', '?')} on "
                f"{holder.get('host', '?')}) claimed the message to {self.recipient} first, so this try did "
                "not send it.",
                holder=holder,
            )
        self.taken = True

    def settle(self, state: State, **details: Any) -> None:
        """Record the outcome of the taken claim (``details``: the answer, reasons, ...)."""
        if not self.taken or self.settled is not None:
            return
        record = {
            **self.ledger.stamp(self.key, self.gen, self.recipient),
            "state": state.value,
            "details": {**self.details, **details},
        }
        self.ledger.store.create(_name(self.key, self.gen, "outcome"), record)
        self.settled = state


class Ledger:
    """
    The ledger of one task instance.

    :param store: where its records are kept.
    :param try_number: the try writing (shown in records and reports).
    """

    def __init__(self, store: Store, try_number: Any = None) -> None:
        self.store = store
        self.try_number = try_number
        #: Tells two tries with the same try number apart (a zombie and its replacement).
        self.attempt = uuid.uuid4().hex[:12]

    @property
    def location(self) -> str:
        return self.store.location

    def stamp(self, key: str, gen: int, recipient: str) -> dict[str, Any]:
        return {
            "key": key,
            "gen": gen,
            "recipient": recipient,
            "try_number": self.try_number,
            "attempt": self.attempt,
            "host": socket.gethostname(),
            "pid": os.getpid(),
        }

    def entry(self, key: str, from_gen: int = 0) -> Entry | None:
        """The newest generation of ``key``, reading from generation ``from_gen`` on."""
        gen = from_gen
        newest: Entry | None = None
        while True:
            claim = self._read(_name(key, gen, "claim"))
            if claim is None:
                return newest
            newest = self._entry_at(key, gen, claim)
            gen += 1

    def _entry_at(self, key: str, gen: int, claim: dict[str, Any], listed: set[str] | None = None) -> Entry:
        """The entry of one generation; ``listed``, when given, spares reads of records that do not exist."""

        def read(kind: str) -> dict[str, Any] | None:
            name = _name(key, gen, kind)
            return self._read(name) if listed is None or name in listed else None

        return _derive(key, gen, claim, read("outcome"), read("release"))

    def states(self) -> dict[str, tuple[int, State]]:
        """The newest generation of every key and its state, from one listing (small in memory)."""
        newest: dict[str, int] = {}
        names = set()
        for name in self.store.names():
            key, gen, kind = _parse(name, self.location)
            names.add(name)
            if kind == "claim" and gen >= newest.get(key, -1):
                newest[key] = gen
        result = {}
        for key, gen in newest.items():
            entry = self._entry_at(key, gen, self._read(_name(key, gen, "claim")) or {}, names)
            result[key] = (gen, entry.state)
        return result

    def new_claim(self, key: str, recipient: str, gen: int = 0, **details: Any) -> Claim:
        """A claim on generation ``gen`` of ``key`` (not taken yet)."""
        return Claim(self, key, gen, recipient, dict(details))

    def release(self, entry: Entry, reason: str, by: str) -> bool:
        """Let the next try send a message whose outcome is ``unknown``; return whether it was released."""
        if entry.state is not State.UNKNOWN:
            return False
        record = {
            **self.stamp(entry.key, entry.gen, (entry.claim or {}).get("recipient", "")),
            "reason": reason,
            "by": by,
        }
        return self.store.create(_name(entry.key, entry.gen, "release"), record)

    def _read(self, name: str) -> dict[str, Any] | None:
        return self.store.read(name)


def _name(key: str, gen: int, kind: str) -> str:
    return f"{key}.{gen}.{kind}"


def _parse(name: str, location: str) -> tuple[str, int, str]:
    key, _, rest = name.partition(".")
    gen, _, kind = rest.partition(".")
    if not gen.isdigit() or kind not in _KINDS:
        raise LedgerCorruptError(
            f"{name!r} in the ledger {location} is not a record this provider writes. Remove it (or the "
            "ledger, after checking the Autocalls dashboard) and try again."
        )
    return key, int(gen), kind


def _derive(
    key: str, gen: int, claim: dict[str, Any], outcome: dict[str, Any] | None, released: dict[str, Any] | None
) -> Entry:
    # Records appear whole (a link of a finished file, or one PUT), so an unreadable ({}) one was
    # damaged afterwards: nothing is known of that send, and it stays in doubt.
    if outcome == {}:
        outcome = None
    if released == {}:
        raise LedgerCorruptError(
            f"The ledger record {key}.{gen}.release is damaged. Check the Autocalls dashboard, remove the "
            "record, and release the message again."
        )
    if outcome is not None:
        try:
            state = State(outcome["state"])
        except (KeyError, ValueError) as exc:
            raise LedgerCorruptError(
                f"The ledger record {key}.{gen}.outcome has no valid state ({outcome!r}); nothing is sent for "
                "it until a person checks the Autocalls dashboard and removes the damaged record."
            ) from exc
    else:
        state = State.UNKNOWN  # claimed, then killed during the request (or still sending)
    if state is State.UNKNOWN and released is not None:
        state = State.RELEASED
    return Entry(key, gen, state, claim, outcome)


# -- where ledgers live ------------------------------------------------------------------------------


def default_location() -> str:
    """``[autocalls] ledger_location``, else a folder in the Airflow home."""
    configured = conf.get("autocalls", "ledger_location", fallback=None)
    if configured:
        return configured
    home = conf.get("core", "airflow_home", fallback=None) or os.environ.get("AIRFLOW_HOME") or "~/airflow"
    return str(Path(home).expanduser() / "autocalls" / "ledger")


def ledger_for(context: Context | None, location: str | None = None) -> Ledger | None:
    """
    Open the ledger of the task instance running in ``context``.

    Returns ``None`` without a task instance in the context (an ``execute`` called by hand), where
    there is no later try to protect.

    :raises LedgerStoreError: a relative folder, or a store that cannot create exclusively.
    """
    ti = context.get("ti") if context else None
    if ti is None:
        return None
    return ledger_of(
        ti.dag_id,
        ti.run_id,
        ti.task_id,
        getattr(ti, "map_index", -1),
        location,
        getattr(ti, "try_number", None),
    )


def ledger_of(
    dag_id: str,
    run_id: str,
    task_id: str,
    map_index: int | None = -1,
    location: str | None = None,
    try_number: Any = None,
) -> Ledger:
    """Open the ledger of one task instance by its identity."""
    location = location or default_location()
    _warn_if_not_shared(location)
    path = _instance_path(dag_id, run_id, task_id, map_index)
    return Ledger(open_store(location, f"{path}/ledger"), try_number)


def _warn_if_not_shared(location: str) -> None:
    executors = str(conf.get("core", "executor", fallback="") or "")
    # "LocalExecutor,CeleryExecutor", "my.module.MyExecutor", "alias:path.Executor": any executor
    # that runs tasks elsewhere makes a local folder a different folder on each worker.
    names = [
        part.strip().rsplit(":", 1)[-1].rsplit(".", 1)[-1] for part in executors.split(",") if part.strip()
    ]
    remote = [name for name in names if name not in ("LocalExecutor", "SequentialExecutor", "DebugExecutor")]
    if remote and is_local(location):
        log.warning(
            "The Autocalls ledger is in %s, a folder only this worker sees, but the executor is %s: a "
            "retry on another worker cannot see what this one sent. Set [autocalls] ledger_location (or "
            "ledger_location=) to an object-storage URI or a shared folder every worker can reach.",
            location,
            executors,
        )


def instance_path(ti: Any) -> str:
    """
    A relative folder naming one task instance (its ledger and report are inside); distinct task
    instances never share one.
    """
    return _instance_path(ti.dag_id, ti.run_id, ti.task_id, getattr(ti, "map_index", -1))


def _instance_path(dag_id: str, run_id: str, task_id: str, map_index: int | None) -> str:
    # Every character but [a-z0-9_-] is escaped (upper case too, for case-insensitive disks), and each
    # part ends with "=", which the escaping never produces: the mapping is injective. The text is then
    # cut into folder names short enough for any filesystem.
    index = -1 if map_index is None else int(map_index)
    text = "".join(_escaped(str(part)) + "=" for part in (dag_id, run_id, task_id, index))
    return "/".join(text[i : i + 120] for i in range(0, len(text), 120))


def _escaped(part: str) -> str:
    return "".join(
        c if ("a" <= c <= "z" or "0" <= c <= "9" or c in "_-") else "".join(f"%{b:02X}" for b in c.encode())
        for c in part
    )


def open_location(location: str, relative: str) -> Any:
    """A path (local ``Path`` or ``ObjectStoragePath``) next to the ledgers, e.g. for a report."""
    if is_local(location):
        path = Path(location.removeprefix("file://")).expanduser() / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        return path
    from airflow.providers.common.compat.sdk import ObjectStoragePath

    return ObjectStoragePath(location) / relative
