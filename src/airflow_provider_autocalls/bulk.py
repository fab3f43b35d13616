"""
The pieces of a bulk send that are not the send itself: reading recipients as a stream, checking
each row, progress, and the per-recipient report. ``BulkSendTemplateOperator`` puts them together.

Memory stays flat in the number of recipients: rows are read twice as streams (once to check
them all before the first send, once to send), skipped rows go to a temporary file, and the only
per-recipient state kept in memory is one small integer per phone number.
"""

from __future__ import annotations

import ast
import contextlib
import csv
import io
import json
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from airflow_provider_autocalls.exceptions import AutocallsValidationError
from airflow_provider_autocalls.validation import check_phone, check_recipient_name, check_variables

REPORT_FIELDS = (
    "line",
    "recipient_phone",
    "recipient_name",
    "status",
    "message_sid",
    "error_code",
    "reason",
    "try_number",
)


@dataclass(frozen=True, slots=True)
class Row:
    """One checked recipient."""

    line: int
    phone: str
    name: str | None
    variables: dict[str, str] | None


def phone_key(phone: str) -> int:
    """A checked E.164 number as a small int: a fifth of the memory of the string in a dict."""
    return int(phone[1:])


class RecipientSource:
    """
    Recipients from a list of mappings or from a CSV / JSON Lines file (a path or an object-storage URI).

    CSV columns: ``recipient_phone``, optional ``recipient_name``, and the template variables either
    as a ``variables`` column holding a JSON object or as one ``variables.<key>`` column per variable.

    :param recipients: a list of mappings (or its JSON / Python literal text, as a template renders it).
    :param recipients_file: a ``.csv``, ``.jsonl`` or ``.ndjson`` file.
    """

    def __init__(self, recipients: Any = None, recipients_file: Any = None) -> None:
        if (recipients is None) == (not recipients_file):
            raise AutocallsValidationError(
                "recipients", "give exactly one of recipients and recipients_file."
            )
        if recipients_file is not None and not isinstance(recipients_file, str):
            recipients_file = str(recipients_file)  # an ObjectStoragePath or a pathlib.Path
        self.recipients = _as_list(recipients) if recipients is not None else None
        self.recipients_file = recipients_file

    def __iter__(self) -> Iterator[tuple[int, Any]]:
        """Each raw row with its line number (1-based; a CSV's header is line 1)."""
        if self.recipients is not None:
            yield from enumerate(self.recipients, start=1)
            return
        assert self.recipients_file is not None
        name = self.recipients_file.lower()
        with _open_text(self.recipients_file) as text:
            if name.endswith(".csv"):
                reader = csv.DictReader(text)
                for row in reader:
                    yield reader.line_num, row
            elif name.endswith((".jsonl", ".ndjson", ".json")):
                for number, line in enumerate(text, start=1):
                    if line.strip():
                        yield number, _json_line(line)
            else:
                raise AutocallsValidationError(
                    "recipients_file", f"{self.recipients_file!r}: use a .csv or .jsonl (JSON Lines) file."
                )


def _as_list(value: Any) -> list[Any]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            try:
                value = ast.literal_eval(value)
            except (ValueError, SyntaxError) as exc:
                raise AutocallsValidationError(
                    "recipients", "is text that is not a list of mappings."
                ) from exc
    if not isinstance(value, list | tuple):
        raise AutocallsValidationError(
            "recipients", f"must be a list of mappings, got {type(value).__name__}."
        )
    return list(value)


def _json_line(line: str) -> Any:
    try:
        return json.loads(line)
    except ValueError:
        return _Unreadable(line)


class _Unreadable:
    def __init__(self, line: str) -> None:
        self.line = line


@contextlib.contextmanager
def _open_text(location: str) -> Iterator[IO[str]]:
    if "://" in location and not location.startswith("file://"):
        from airflow.providers.common.compat.sdk import ObjectStoragePath

        with ObjectStoragePath(location).open("rb") as raw:
            yield io.TextIOWrapper(raw, encoding="utf-8-sig", newline="")
        return
    path = Path(location.removeprefix("file://")).expanduser()
    if not path.is_file():
        raise AutocallsValidationError("recipients_file", f"{location!r} does not exist or is not a file.")
    with path.open(encoding="utf-8-sig", newline="") as text:
        yield text


def check_row(line: int, raw: Any, shared_variables: Mapping[str, str] | None) -> Row:
    """Check one raw row; the row's own variables win over the shared ones."""
    if isinstance(raw, _Unreadable):
        raise AutocallsValidationError("row", "is not valid JSON.")
    if not isinstance(raw, Mapping):
        raise AutocallsValidationError(
            "row", f"must be a mapping with recipient_phone, got {type(raw).__name__}."
        )
    phone = check_phone(raw.get("recipient_phone"))
    name = check_recipient_name(raw.get("recipient_name") or None)
    variables = _row_variables(raw)
    merged = {**(shared_variables or {}), **(variables or {})}
    return Row(line, phone, name, merged or None)


def _row_variables(raw: Mapping[str, Any]) -> dict[str, str] | None:
    variables = raw.get("variables")
    if isinstance(variables, str):  # a CSV cell holding JSON
        if not variables.strip():
            variables = None
        else:
            try:
                variables = json.loads(variables)
            except ValueError as exc:
                raise AutocallsValidationError("variables", "is not a JSON object.") from exc
    columns = {
        key[len("variables.") :]: value for key, value in raw.items() if str(key).startswith("variables.")
    }
    if columns:
        variables = {**(variables or {}), **{k: v for k, v in columns.items() if v not in (None, "")}}
    return check_variables(variables)


class Progress:
    """Logs done/total, rate, ETA and counts at least every ``interval`` seconds or 5 % of the rows."""

    def __init__(self, total: int, log: Callable[..., None], interval: float = 10.0) -> None:
        self.total = total
        self.log = log
        self.interval = interval
        self.counts: Counter[str] = Counter()
        self.started = self._last_time = time.monotonic()
        self._last_done = 0
        self._step = max(1, total // 20)

    @property
    def done(self) -> int:
        return sum(self.counts.values())

    def finish(self) -> None:
        """The last line, unless the last count already logged it."""
        if self._last_done != self.done or not self.done:
            self.report()

    def count(self, status: str) -> None:
        self.counts[status] += 1
        now = time.monotonic()
        if (
            self.done - self._last_done >= self._step
            or now - self._last_time >= self.interval
            or self.done == self.total
        ):
            self.report(now)

    def report(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        elapsed = now - self.started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else float("nan")
        counts = ", ".join(f"{k} {v}" for k, v in sorted(self.counts.items())) or "none yet"
        # Formatted here so every log backend (stdlib or structlog) shows the same line.
        self.log(
            f"Bulk send: {self.done}/{self.total} ({100 * self.done / self.total if self.total else 100:.0f}%), "
            f"{rate:.2f} msg/s, ETA {eta:.0f} s; {counts}"
        )
        self._last_time, self._last_done = now, self.done


class SkippedRows:
    """Rows that will not be sent (invalid, duplicate, not attempted), kept in a temporary file."""

    def __init__(self) -> None:
        self._file = tempfile.TemporaryFile("w+", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self.count = 0

    def add(self, line: int, phone: Any, reason: str) -> None:
        self._file.write(json.dumps({"line": line, "recipient_phone": phone, "reason": reason}) + "\n")
        self.count += 1

    def __iter__(self) -> Iterator[dict[str, Any]]:
        self._file.seek(0)
        for line in self._file:
            yield json.loads(line)

    def close(self) -> None:
        self._file.close()


def write_report(
    destination: Any, final_records: Iterator[Mapping[str, Any]], skipped: SkippedRows, fmt: str
) -> Counter[str]:
    """
    Write one row per recipient: every final ledger record, then every skipped row.

    :param destination: a local ``Path`` or an ``ObjectStoragePath``.
    :return: the count of each status written.
    """
    counts: Counter[str] = Counter()
    with tempfile.TemporaryFile("w+", encoding="utf-8", newline="") as local:
        writer = csv.DictWriter(local, REPORT_FIELDS, extrasaction="ignore") if fmt == "csv" else None
        if writer:
            writer.writeheader()

        def emit(row: dict[str, Any]) -> None:
            counts[row["status"]] += 1
            if writer:
                writer.writerow(row)
            else:
                local.write(json.dumps({k: row.get(k) for k in REPORT_FIELDS}) + "\n")

        for record in final_records:
            emit({**record, "recipient_phone": record["recipient"], "status": record["state"]})
        for row in skipped:
            emit({**row, "status": "skipped"})
        local.seek(0)
        with destination.open("w", encoding="utf-8", newline="") as out:
            for chunk in iter(lambda: local.read(1 << 16), ""):
                out.write(chunk)
    return counts
