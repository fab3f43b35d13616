"""
The pieces of a bulk send that are not the send itself: the recipients (read and checked in
:mod:`airflow_provider_autocalls.recipients`), progress, and the per-recipient report.
``BulkSendTemplateOperator`` puts them together.

Memory stays flat in the number of recipients: rows are read twice as streams (once to check
them all before the first send, once to send), skipped rows go to a temporary file, and the only
per-recipient state kept in memory is one small integer per phone number.
"""

from __future__ import annotations

import csv
import json
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from airflow_provider_autocalls.recipients import (
    ACCEPTED_COLUMNS,
    CSV_DELIMITERS,
    EmptySegmentError,
    RecipientSource,
    Row,
    check_header,
    check_row,
    detect_delimiter,
)

__all__ = [
    "ACCEPTED_COLUMNS",
    "CSV_DELIMITERS",
    "REPORT_FIELDS",
    "EmptySegmentError",
    "Progress",
    "RecipientSource",
    "Row",
    "SkippedRows",
    "check_header",
    "check_row",
    "detect_delimiter",
    "phone_key",
    "write_report",
]

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


def phone_key(phone: str) -> int:
    """A checked E.164 number as a small int: a fifth of the memory of the string in a dict."""
    return int(phone[1:])


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

    def add(self, line: int, phone: Any, reason: str, name: Any = None) -> None:
        row = {"line": line, "recipient_phone": phone, "recipient_name": name, "reason": reason}
        self._file.write(json.dumps(row, default=str) + "\n")
        self.count += 1

    def __iter__(self) -> Iterator[dict[str, Any]]:
        self._file.seek(0)
        for line in self._file:
            yield json.loads(line)

    def close(self) -> None:
        self._file.close()


def write_report(
    destination: Any,
    final_records: Iterator[Mapping[str, Any]],
    skipped: SkippedRows,
    fmt: str,
    try_number: int | None = None,
) -> Counter[str]:
    """
    Write one row per recipient: every final ledger record, then every skipped row.

    ``recipient_name`` and ``try_number`` come from each record (the try that recorded the
    outcome); a record without a try number, and every skipped row, get ``try_number``.

    :param destination: a local ``Path`` or an ``ObjectStoragePath``.
    :param try_number: the try writing the report.
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
            emit(
                {
                    **record,
                    "recipient_phone": record["recipient"],
                    "status": record["state"],
                    "try_number": record.get("try_number", try_number),
                }
            )
        for row in skipped:
            emit({**row, "status": "skipped", "try_number": try_number})
        local.seek(0)
        with destination.open("w", encoding="utf-8", newline="") as out:
            for chunk in iter(lambda: local.read(1 << 16), ""):
                out.write(chunk)
    return counts
