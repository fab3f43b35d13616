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
  created with ``pipe_file(mode="create")``: s3fs sends a conditional ``PutObject``
  (``If-None-Match: *``), gcsfs an upload with ``ifGenerationMatch=0``. A filesystem not known to
  create exclusively is refused when the ledger is opened.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

from packaging.version import Version

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

    def _path(self, name: str) -> str:
        # A plain string: pathlib interns every name it parses, and a bulk send's ledger names
        # several files per recipient, so an interned table would grow with the segment.
        return os.path.join(self.location, name)

    def create(self, name: str, record: Mapping[str, Any]) -> bool:
        self._prepare()
        draft = self._path(f".{name}.{uuid.uuid4().hex}.draft")
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, _encoded(record))
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(draft, self._path(name + SUFFIX))
        except FileExistsError:
            return False
        finally:
            os.unlink(draft)
        # The name itself must survive a crash too, or a claim could vanish with the power.
        folder_fd = os.open(self.location, os.O_RDONLY)
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
            with open(self._path(name + SUFFIX), "rb") as record:
                return _decoded(record.read())
        except FileNotFoundError:
            return None


class ObjectStore:
    """
    Records as objects under one prefix of an object store, written through its fsspec filesystem.

    A record is created with ``pipe_file(..., mode="create")``, which the filesystems below turn into
    the store's own conditional write; any other filesystem is refused when the ledger is opened,
    because one that ignored the mode would overwrite silently and let two tries both send. Reads and
    listings go to the store each time: a listing cached by this process would hide records that
    another try wrote since.

    :param prefix: an ``ObjectStoragePath`` (its ``fs`` and ``path`` are used).
    """

    def __init__(self, prefix: Any) -> None:
        self.prefix = prefix
        self.location = str(prefix)
        try:
            self._fs = prefix.fs
        except (ImportError, ValueError) as exc:  # no filesystem for the scheme, or its package is missing
            raise LedgerStoreError(
                f"{self.location!r} cannot be opened ({exc}). Give a folder or an object-storage URI whose "
                "filesystem is installed (for s3:// install apache-airflow-providers-amazon[s3fs])."
            ) from exc
        self._path = str(prefix.path).rstrip("/")
        # fsspec's memory filesystem checks, then writes: in this one process a lock makes that one step.
        self._lock = (
            _IN_PROCESS if _exclusive_create_of(self._fs, self.location) else contextlib.nullcontext()
        )
        # s3fs asks for an object's size (a HEAD, and a listing when it is missing) before reading it
        # in parallel parts; a record is one small GET.
        self._read_options = {"max_concurrency": 1} if type(self._fs).__module__.startswith("s3fs") else {}

    def create(self, name: str, record: Mapping[str, Any]) -> bool:
        path = f"{self._path}/{name}{SUFFIX}"
        data = _encoded(record)
        attempt = 0
        while True:
            try:
                with self._lock:
                    self._fs.pipe_file(path, data, mode="create")
            except FileExistsError:
                return self._ours(path, data)
            except OSError as exc:
                code = _error_code(exc)
                if code == "PreconditionFailed":  # our only precondition is "does not exist yet"
                    return self._ours(path, data)
                # S3 answers 409 to one of two conditional writes of one name that overlap, and asks
                # for a retry; the retry then finds the winner's object (412) or creates it.
                if code != "ConditionalRequestConflict" or attempt == _CONFLICT_RETRIES:
                    raise
                time.sleep(0.05 * 2**attempt)
                attempt += 1
            else:
                return True

    def _ours(self, path: str, data: bytes) -> bool:
        """
        Whether the existing object is this call's own write: the client retries a PUT whose answer
        was lost, and the retry meets the first attempt's object. Every record names its try's
        attempt, so no other try's record has the same bytes.
        """
        self._fs.invalidate_cache(path)
        try:
            return bool(self._fs.cat_file(path, **self._read_options) == data)
        except FileNotFoundError:
            return False

    def names(self) -> Iterator[str]:
        self._fs.invalidate_cache(self._path)
        try:
            listed = self._fs.ls(self._path, detail=False)
        except FileNotFoundError:
            return
        for child in listed:
            base = str(child).rstrip("/").rsplit("/", 1)[-1]
            if base.endswith(SUFFIX):
                yield base[: -len(SUFFIX)]

    def read(self, name: str) -> dict[str, Any] | None:
        path = f"{self._path}/{name}{SUFFIX}"
        self._fs.invalidate_cache(path)  # s3fs answers "missing" from a cached listing of the prefix
        try:
            return _decoded(self._fs.cat_file(path, **self._read_options))
        except FileNotFoundError:
            return None


#: fsspec filesystems (by package) whose ``pipe_file(mode="create")`` is the store's conditional
#: write, and the first version where it is: s3fs sends ``If-None-Match: *`` on its PutObject (a
#: 412 means the name exists); gcsfs uploads with ``ifGenerationMatch=0``.
_CONDITIONAL_CREATE = {"s3fs": "2024.12.0", "gcsfs": "2024.12.0"}
#: Retries of a write that S3 refused with 409 ConditionalRequestConflict.
_CONFLICT_RETRIES = 5
#: The lock of fsspec's memory filesystem, which lives in this process only (tests).
_IN_PROCESS = threading.Lock()


def _exclusive_create_of(fs: Any, location: str) -> bool:
    """Refuse a filesystem without a conditional create; return whether it is in this process only."""
    from fsspec.implementations.memory import MemoryFileSystem

    if isinstance(fs, MemoryFileSystem):
        return True
    package = type(fs).__module__.partition(".")[0]
    supported = ", ".join(f"{name}>={version}" for name, version in _CONDITIONAL_CREATE.items())
    minimum = _CONDITIONAL_CREATE.get(package)
    if minimum is None:
        raise LedgerStoreError(
            f"{location!r} is kept by {type(fs).__module__}.{type(fs).__name__}, which is not known to create "
            "objects exclusively, so two tries of one task could both send. Use a local or shared folder, or "
            f"an object store whose filesystem writes conditionally ({supported}; for s3:// install "
            "apache-airflow-providers-amazon[s3fs])."
        )
    installed = importlib.metadata.version(package)
    if Version(installed) < Version(minimum):
        raise LedgerStoreError(
            f"{location!r} needs {package}>={minimum} to create objects exclusively (installed: {installed}); "
            f"older versions overwrite, so two tries of one task could both send. Upgrade {package}."
        )
    return False


def _error_code(error: BaseException) -> str | None:
    """The object store's error code behind a filesystem's ``OSError`` (botocore keeps it as the cause)."""
    response = getattr(error.__cause__, "response", None)
    if isinstance(response, Mapping):
        code = (response.get("Error") or {}).get("Code")
        return str(code) if code is not None else None
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
