"""
The ledger: "was this message already sent?", answered the same way by every operator.

Before each send a write-ahead record (``started``) is made durable; after it, the outcome
(``sent``, ``failed``, ``unknown``, or ``released`` when nothing was sent and the recipient may be
sent to again). A later try of the same task instance reads the ledger first, so a retry, a clear
and re-run, or a restart after the worker was killed never messages anyone twice: a recipient
whose last record is ``started`` had a request in flight when the process died, is reported as
``unknown`` and is never sent to again automatically.

One ledger per task instance (DAG, run, task, map index), as JSON Lines in a location every
worker can see: a local folder (the default, ``[autocalls] ledger_location`` or
``$AIRFLOW_HOME/autocalls/ledger``) or an object-storage URI (``s3://…``, ``gs://…``, through
Airflow's ``ObjectStoragePath``). Local files are appended to and fsync'ed; stores without append
get one small object per record under the ledger's prefix.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterator, Mapping
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from airflow.providers.common.compat.sdk import conf, timezone

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context


log = logging.getLogger(__name__)


class State(StrEnum):
    """A recipient's state in the ledger."""

    STARTED = "started"
    SENT = "sent"
    FAILED = "failed"
    UNKNOWN = "unknown"
    RELEASED = "released"

    @property
    def final(self) -> bool:
        return self in (State.SENT, State.FAILED, State.UNKNOWN)


class _Log(Protocol):
    location: str

    def append(self, record: Mapping[str, Any]) -> None: ...

    def read(self) -> Iterator[dict[str, Any]]: ...


class _AppendLog:
    """JSON Lines in one local file; each record is flushed and fsync'ed before the call returns."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.location = str(path)
        self._file: Any = None

    def append(self, record: Mapping[str, Any]) -> None:
        if self._file is None:
            self._file = self.path.open("a", encoding="utf-8")
            if _ends_torn(self.path):
                # End a line torn by a crash, or the next record would be glued to it and lost.
                self._file.write("\n")
        self._file.write(json.dumps(record, separators=(",", ":")) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def read(self) -> Iterator[dict[str, Any]]:
        if not self.path.exists():
            return
        with self.path.open(encoding="utf-8") as lines:
            yield from _decoded(lines)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class _ObjectLog:
    """One object per record under a prefix, for object stores that cannot append."""

    def __init__(self, prefix: Any) -> None:
        self.prefix = prefix
        self.location = str(prefix)
        self._sequence = 0

    def append(self, record: Mapping[str, Any]) -> None:
        self._sequence += 1
        # Nanoseconds first: names sort in write order across tries of the task.
        name = f"{timezone.utcnow().strftime('%Y%m%dT%H%M%S%f')}-{os.getpid()}-{self._sequence:09d}.json"
        (self.prefix / name).write_text(json.dumps(record))

    def read(self) -> Iterator[dict[str, Any]]:
        if not self.prefix.exists():
            return
        for child in sorted(self.prefix.iterdir(), key=lambda p: p.name):
            yield from _decoded([child.read_text()])

    def close(self) -> None:
        pass


def _ends_torn(path: Path) -> bool:
    with path.open("rb") as f:
        if f.seek(0, os.SEEK_END) == 0:
            return False
        f.seek(-1, os.SEEK_END)
        return f.read(1) != b"\n"


def _decoded(lines: Any) -> Iterator[dict[str, Any]]:
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            # A torn last line: the process died while writing a write-ahead record, before the
            # request it announces was made. Nothing was sent for it.
            continue
        if isinstance(record, dict) and "recipient" in record and "state" in record:
            yield record


class Ledger:
    """
    The ledger of one task instance.

    :param log: where records are kept.
    """

    def __init__(self, log: _AppendLog | _ObjectLog) -> None:
        self._log = log

    @property
    def location(self) -> str:
        return self._log.location

    def begin(self, recipient: str) -> None:
        """Make the write-ahead record durable; call right before the request."""
        self._record(recipient, State.STARTED)

    def finish(self, recipient: str, state: State, **details: Any) -> None:
        """Record the outcome of a send (``details``: message_sid, error_code, xcom, ...)."""
        self._record(recipient, state, **details)

    def _record(self, recipient: str, state: State, **details: Any) -> None:
        self._log.append(
            {"recipient": recipient, "state": state.value, "at": timezone.utcnow().isoformat(), **details}
        )

    def records(self) -> Iterator[dict[str, Any]]:
        """Every record, oldest first."""
        return self._log.read()

    def last(self, recipient: str) -> dict[str, Any] | None:
        """The last record of one recipient (for a single send: the ledger holds one recipient)."""
        last = None
        for record in self.records():
            if record["recipient"] == recipient:
                last = record
        return last

    def close(self) -> None:
        self._log.close()


def default_location() -> str:
    """``[autocalls] ledger_location``, else a folder in the Airflow home."""
    configured = conf.get("autocalls", "ledger_location", fallback=None)
    if configured:
        return configured
    home = conf.get("core", "airflow_home", fallback=None) or os.environ.get("AIRFLOW_HOME") or "~/airflow"
    return str(Path(home).expanduser() / "autocalls" / "ledger")


def ledger_for(context: Context, location: str | None = None, suffix: str = "ledger.jsonl") -> Ledger | None:
    """
    Open the ledger of the task instance running in ``context``.

    Returns ``None`` without a task instance in the context (an ``execute`` called by hand), where
    there is no later try to protect.
    """
    ti = context.get("ti") if context else None
    if ti is None:
        return None
    location = location or default_location()
    _warn_if_not_shared(location)
    return Ledger(_open_log(location, instance_path(ti), suffix))


def _warn_if_not_shared(location: str) -> None:
    executor = str(conf.get("core", "executor", fallback="") or "")
    local_executor = not executor or any(name in executor for name in ("Local", "Sequential", "Debug"))
    if not local_executor and ("://" not in location or location.startswith("file://")):
        log.warning(
            "The Autocalls ledger is in %s, a folder only this worker sees, but the executor is %s: a "
            "retry on another worker cannot see what this one sent. Set [autocalls] ledger_location (or "
            "ledger_location=) to an object-storage URI every worker can reach.",
            location,
            executor,
        )


def instance_path(ti: Any) -> str:
    """A relative path naming one task instance, safe on every store."""
    parts = [ti.dag_id, ti.run_id, ti.task_id]
    map_index = getattr(ti, "map_index", -1)
    if map_index is not None and map_index >= 0:
        parts[-1] += f".{map_index}"
    return "/".join(_safe(part) for part in parts)


def _safe(part: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", str(part))


def _open_log(location: str, relative: str, suffix: str) -> _AppendLog | _ObjectLog:
    if "://" not in location or location.startswith("file://"):
        base = Path(location.removeprefix("file://")).expanduser()
        return _AppendLog(base / f"{relative}.{suffix}")
    from airflow.providers.common.compat.sdk import ObjectStoragePath

    return _ObjectLog(ObjectStoragePath(location) / f"{relative}.{suffix.replace('.jsonl', '')}")


def open_location(location: str, relative: str) -> Any:
    """A path (local ``Path`` or ``ObjectStoragePath``) next to the ledgers, e.g. for a report."""
    if "://" not in location or location.startswith("file://"):
        path = Path(location.removeprefix("file://")).expanduser() / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        return path
    from airflow.providers.common.compat.sdk import ObjectStoragePath

    return ObjectStoragePath(location) / relative
