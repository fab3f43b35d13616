"""
Where a ledger's records live: one small object per record, each created exclusively.

A record is never overwritten or appended to. Its name says what it is about, so its meaning and
order never depend on when, or on which worker's clock, it was written. Creating a name that
already exists fails: that failure is the store's own atomic primitive, and it is what makes a
claim exclusive between two tries of one task instance that run at the same moment.

- :class:`FolderStore`: a local (or shared, POSIX) folder. The record is written and fsync'ed under
  a name of its own, then hard-linked to its real name: ``link`` fails when that name exists, and a
  reader never sees a record half written (as it could between ``open(O_EXCL)`` and ``write``).
- :class:`ObjectStore`: an object-storage prefix through Airflow's ``ObjectStoragePath`` (fsspec),
  opened in exclusive mode ``"xb"``. s3fs turns that into a conditional ``PutObject``
  (``If-None-Match: *``), gcsfs into ``ifGenerationMatch=0``. A filesystem that cannot create
  exclusively is refused when the ledger is opened.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

from airflow_provider_autocalls.exceptions import AutocallsValidationError

SUFFIX = ".json"


class LedgerStoreError(AutocallsValidationError):
    """The ledger's location cannot hold exclusive records (refused before anything is sent)."""

    def __init__(self, message: str) -> None:
        super().__init__("ledger_location", message)


class Store(Protocol):
    """The few operations a ledger needs from where it is kept."""

    location: str

    def create(self, name: str, record: Mapping[str, Any]) -> bool:
        """Create ``name`` holding ``record`` unless it exists; return whether this call created it."""

    def names(self) -> Iterator[str]:
        """The names of every record (in no particular order)."""

    def read(self, name: str) -> dict[str, Any] | None:
        """One record; ``None`` when it is missing, ``{}`` when it is unreadable (torn by a crash)."""


def _encoded(record: Mapping[str, Any]) -> bytes:
    return json.dumps(record, separators=(",", ":"), sort_keys=True).encode()


def _decoded(data: bytes) -> dict[str, Any]:
    try:
        record = json.loads(data)
    except ValueError:
        return {}
    return record if isinstance(record, dict) else {}


class FolderStore:
    """Records as files in one folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.location = str(folder)
        self._ready = False

    def _prepare(self) -> None:
        if not self._ready:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._ready = True

    def create(self, name: str, record: Mapping[str, Any]) -> bool:
        self._prepare()
        draft = self.folder / f".{name}.{uuid.uuid4().hex}.draft"
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, _encoded(record))
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(draft, self.folder / (name + SUFFIX))
        except FileExistsError:
            return False
        finally:
            draft.unlink()
        # The name itself must survive a crash too, or a claim could vanish with the power.
        folder_fd = os.open(self.folder, os.O_RDONLY)
        try:
            os.fsync(folder_fd)
        finally:
            os.close(folder_fd)
        return True

    def names(self) -> Iterator[str]:
        try:
            entries = os.scandir(self.folder)
        except FileNotFoundError:
            return
        with entries:
            for entry in entries:
                if entry.name.endswith(SUFFIX):
                    yield entry.name[: -len(SUFFIX)]

    def read(self, name: str) -> dict[str, Any] | None:
        try:
            return _decoded((self.folder / (name + SUFFIX)).read_bytes())
        except FileNotFoundError:
            return None


class ObjectStore:
    """Records as objects under one prefix of an object store."""

    def __init__(self, prefix: Any) -> None:
        self.prefix = prefix
        self.location = str(prefix)

    def create(self, name: str, record: Mapping[str, Any]) -> bool:
        try:
            with (self.prefix / (name + SUFFIX)).open("xb") as out:
                out.write(_encoded(record))
        except FileExistsError:
            return False
        except (NotImplementedError, ValueError) as exc:
            raise LedgerStoreError(
                f"{self.location!r} cannot create objects exclusively ({type(exc).__name__}: {exc}), so two "
                "tries of one task could both send. Use a local or shared folder, or a store whose filesystem "
                "supports exclusive writes (s3fs, gcsfs, adlfs in recent versions)."
            ) from exc
        return True

    def names(self) -> Iterator[str]:
        if not self.prefix.exists():
            return
        for child in self.prefix.iterdir():
            if child.name.endswith(SUFFIX):
                yield child.name[: -len(SUFFIX)]

    def read(self, name: str) -> dict[str, Any] | None:
        try:
            return _decoded((self.prefix / (name + SUFFIX)).read_bytes())
        except FileNotFoundError:
            return None


def is_local(location: str) -> bool:
    return "://" not in location or location.startswith("file://")


def open_store(location: str, relative: str) -> Store:
    """The store of one task instance below ``location`` (a folder or an object-storage URI)."""
    if is_local(location):
        base = Path(location.removeprefix("file://")).expanduser()
        if not base.is_absolute():
            raise LedgerStoreError(
                f"{location!r} is a relative path, which would point somewhere else on every worker. Give an "
                "absolute folder or an object-storage URI."
            )
        return FolderStore(base / relative)
    from airflow.providers.common.compat.sdk import ObjectStoragePath

    return ObjectStore(ObjectStoragePath(location) / relative)
