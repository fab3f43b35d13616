"""
Recipients of a bulk send: read from a list or a file as a stream, the file diagnosed before any
row is used (encoding, delimiter, header), and each row checked.
"""

from __future__ import annotations

import ast
import codecs
import contextlib
import csv
import itertools
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from airflow_provider_autocalls.exceptions import AutocallsValidationError
from airflow_provider_autocalls.validation import check_phone, check_recipient_name, check_variables

if TYPE_CHECKING:
    from airflow_provider_autocalls.templates import TemplateSpec

#: The delimiters a CSV header is searched for, in the order that wins a tie.
CSV_DELIMITERS = (",", ";", "\t")
#: What a recipient row may hold: ``variables.<name>`` columns stand for one template variable each.
ACCEPTED_COLUMNS = ("recipient_phone", "recipient_name", "variables", "variables.<name>")
_VARIABLE_PREFIX = "variables."
_ACCEPTED_TEXT = (
    "recipient_phone (required), recipient_name, and the template variables as a variables column "
    "holding a JSON object or one variables.<name> column per variable (e.g. variables.name, variables.1)"
)
#: A JSON array is read in pieces of about this many characters; one object may not exceed the cap.
_JSON_CHUNK = 1 << 16
_JSON_OBJECT_CAP = 1 << 20


@dataclass(frozen=True, slots=True)
class Row:
    """One checked recipient."""

    line: int
    phone: str
    name: str | None
    variables: dict[str, str] | None


class EmptySegmentError(AutocallsValidationError):
    """The segment has no recipient: an empty list, an empty file, or a CSV file with only its header."""


class RecipientSource:
    """
    Recipients from a list of mappings or from a file (a path or an object-storage URI), read as a stream.

    Files are UTF-8 (with or without a BOM); a byte that is not fails with the file's name and line.

    - ``.csv``: a header, then one recipient per line. The header is checked before any row: it
      must have ``recipient_phone``, and any column other than :data:`ACCEPTED_COLUMNS` is refused
      (all of them named in one error). The delimiter is ``csv_delimiter``, or the one of comma,
      semicolon and tab that the header line holds most of.
    - ``.json``: one JSON array of objects, read object by object (memory holds one piece of about
      64 KiB of the file and one object, whatever the file's size).
    - ``.jsonl`` / ``.ndjson``: JSON Lines, one object per line.

    A row (a list item or an object) has the same keys as the CSV columns.

    :param recipients: a list of mappings (or its JSON / Python literal text, as a template renders it).
    :param recipients_file: a ``.csv``, ``.json``, ``.jsonl`` or ``.ndjson`` file.
    :param csv_delimiter: the CSV delimiter; ``None`` (default) detects it from the header line.
    :param allow_empty: when ``False`` (default), a full pass over a source with no row at all
        raises :class:`EmptySegmentError` at its end.
    """

    def __init__(
        self,
        recipients: Any = None,
        recipients_file: Any = None,
        csv_delimiter: str | None = None,
        allow_empty: bool = False,
    ) -> None:
        if (recipients is None) == (not recipients_file):
            raise AutocallsValidationError(
                "recipients", "give exactly one of recipients and recipients_file."
            )
        if csv_delimiter is not None and (not isinstance(csv_delimiter, str) or len(csv_delimiter) != 1):
            raise AutocallsValidationError(
                "csv_delimiter", f"{csv_delimiter!r} is not one character, e.g. ';' or '\\t'."
            )
        if recipients_file is not None and not isinstance(recipients_file, str):
            recipients_file = str(recipients_file)  # an ObjectStoragePath or a pathlib.Path
        self.recipients = _as_list(recipients) if recipients is not None else None
        self.recipients_file = recipients_file
        self.csv_delimiter = csv_delimiter
        self.allow_empty = allow_empty
        #: Rows the last complete pass yielded (``None`` before one completed): 0 is an empty segment.
        self.rows_read: int | None = None

    def __iter__(self) -> Iterator[tuple[int, Any]]:
        """Each raw row with its line number (1-based; a CSV's header is line 1)."""
        count = 0
        for count, row in enumerate(self._rows(), start=1):  # noqa: B007 - the count is read after the loop
            yield row
        self.rows_read = count
        if not count and not self.allow_empty:
            raise self.empty_error()

    def empty_error(self) -> EmptySegmentError:
        """The error for a source without a single row."""
        if self.recipients is not None:
            return EmptySegmentError("recipients", "is an empty list: there is nobody to send to.")
        return EmptySegmentError(
            "recipients_file",
            f"{self.recipients_file!r} has no recipient rows (it is empty, or a CSV file with only its header).",
        )

    def _rows(self) -> Iterator[tuple[int, Any]]:
        if self.recipients is not None:
            yield from enumerate(self.recipients, start=1)
            return
        assert self.recipients_file is not None
        location = self.recipients_file
        name = location.lower()
        if not name.endswith((".csv", ".json", ".jsonl", ".ndjson")):
            raise AutocallsValidationError(
                "recipients_file",
                f"{location!r}: use a .csv, .json (one array of objects) or .jsonl (JSON Lines) file.",
            )
        with _open_lines(location) as lines:
            if name.endswith(".csv"):
                yield from _csv_rows(lines, location, self.csv_delimiter)
            elif name.endswith(".json"):
                yield from _JsonArray(lines, location).rows()
            else:
                for number, line in enumerate(lines, start=1):
                    if line.strip():
                        yield number, _json_line(line)


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


#: A row of a CSV line with more cells than its header holds the extra cells under this key.
_EXTRA_CELLS = None


@contextlib.contextmanager
def _open_lines(location: str) -> Iterator[Iterator[str]]:
    """The file's lines as text, each decoded on its own so that a bad byte is reported with its line."""
    if "://" in location and not location.startswith("file://"):
        from airflow.providers.common.compat.sdk import ObjectStoragePath

        with ObjectStoragePath(location).open("rb") as raw:
            yield _decoded(raw, location)
        return
    path = Path(location.removeprefix("file://")).expanduser()
    if not path.is_file():
        raise AutocallsValidationError("recipients_file", f"{location!r} does not exist or is not a file.")
    with path.open("rb") as raw:
        yield _decoded(raw, location)


def _decoded(raw: IO[bytes], location: str) -> Iterator[str]:
    # Splitting on b"\n" never cuts a UTF-8 character: no byte of a multi-byte one is 0x0A.
    for number, data in enumerate(raw, start=1):
        if number == 1 and data.startswith(codecs.BOM_UTF8):
            data = data[len(codecs.BOM_UTF8) :]
        try:
            yield data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise AutocallsValidationError(
                "recipients_file",
                f"{location!r}, line {number}: not UTF-8 text (byte {data[exc.start]:#04x} at byte "
                f"{exc.start + 1} of the line). Save the file as UTF-8, with or without BOM "
                "(in Excel: 'CSV UTF-8').",
            ) from None


def _csv_rows(lines: Iterator[str], location: str, delimiter: str | None) -> Iterator[tuple[int, Any]]:
    first = next(lines, None)
    if first is None:
        return
    delimiter = delimiter or detect_delimiter(first)
    reader = csv.reader(itertools.chain([first], lines), delimiter=delimiter)
    header = next(reader, [])
    check_header(header, location, delimiter)
    width = len(header)
    for cells in reader:
        if not any(cells):
            continue  # a blank line
        row: dict[Any, Any] = dict(zip(header, cells, strict=False))
        if len(cells) < width:
            row.update(dict.fromkeys(header[len(cells) :]))
        elif len(cells) > width:
            row[_EXTRA_CELLS] = cells[width:]
        yield reader.line_num, row


def detect_delimiter(header_line: str) -> str:
    """The one of comma, semicolon and tab that ``header_line`` holds most of (comma when none)."""
    counts = [header_line.count(candidate) for candidate in CSV_DELIMITERS]
    best = max(counts)
    return CSV_DELIMITERS[counts.index(best)] if best else ","


def check_header(columns: Sequence[str], location: str, delimiter: str) -> None:
    """
    Refuse, in one error, a header without ``recipient_phone`` and every column that is not accepted.

    :raises AutocallsValidationError: (field ``recipients_file``) naming every problem, the
        accepted columns, and the delimiter the header was split with.
    """
    problems = []
    if "recipient_phone" not in columns:
        problems.append("has no recipient_phone column")
    unknown = [c for c in columns if not _accepted(c)]
    if unknown:
        problems.append(f"has unknown columns {', '.join(repr(c) for c in unknown)}")
    repeated = sorted({c for c in columns if columns.count(c) > 1})
    if repeated:
        problems.append(f"repeats {', '.join(repr(c) for c in repeated)}")
    if not problems:
        return
    hint = ""
    if unknown:
        hint = f" For a template variable write it as variables.<name>, e.g. 'variables.{unknown[0]}'."
    raise AutocallsValidationError(
        "recipients_file",
        f"{location!r}: the header {' and '.join(problems)}; nothing was sent. Accepted columns: "
        f"{_ACCEPTED_TEXT}.{hint} The header was split at {delimiter!r} (set csv_delimiter to choose).",
    )


def _accepted(column: Any) -> bool:
    if column in ("recipient_phone", "recipient_name", "variables"):
        return True
    return (
        isinstance(column, str)
        and column.startswith(_VARIABLE_PREFIX)
        and len(column) > len(_VARIABLE_PREFIX)
    )


class _JsonArray:
    """The objects of a file holding one JSON array, decoded one at a time with their line numbers."""

    def __init__(self, lines: Iterator[str], location: str) -> None:
        self._lines = lines
        self._location = location
        self._decoder = json.JSONDecoder()
        self._buffer = ""
        self._at = 0  # position in the buffer
        self._line = 1  # line of the file at that position
        self._ended = False

    def _error(self, line: int, message: str) -> AutocallsValidationError:
        return AutocallsValidationError("recipients_file", f"{self._location!r}, line {line}: {message}")

    def _more(self) -> bool:
        """Append about one chunk of the file to the buffer; ``False`` at the end of the file."""
        if self._ended:
            return False
        pieces: list[str] = []
        size = 0
        for piece in self._lines:
            pieces.append(piece)
            size += len(piece)
            if size >= _JSON_CHUNK:
                break
        else:
            self._ended = True
        self._buffer = self._buffer[self._at :] + "".join(pieces)
        self._at = 0
        return bool(pieces)

    def _peek(self) -> str:
        """The next character that is not whitespace ('' at the end), counting the lines passed."""
        while True:
            buffer = self._buffer
            while self._at < len(buffer) and buffer[self._at] in " \t\r\n":
                self._line += buffer[self._at] == "\n"
                self._at += 1
            if self._at < len(buffer):
                return buffer[self._at]
            if not self._more():
                return ""

    def _value(self) -> tuple[int, Any]:
        line = self._line
        while True:
            try:
                value, end = self._decoder.raw_decode(self._buffer, self._at)
            except json.JSONDecodeError as exc:
                if len(self._buffer) - self._at <= _JSON_OBJECT_CAP and self._more():
                    continue  # the object goes on in the next chunk
                raise self._error(line, f"the array's element is not valid JSON ({exc.msg}).") from None
            if end == len(self._buffer) and self._more():
                continue  # a value at the buffer's end may be cut short (a number): read on, decode again
            self._line += self._buffer.count("\n", self._at, end)
            self._at = end
            return line, value

    def rows(self) -> Iterator[tuple[int, Any]]:
        first = self._peek()
        if first == "":
            return  # an empty file: an empty segment
        if first != "[":
            raise self._error(
                self._line,
                "a .json file must hold one JSON array of objects ([{...}, {...}]). For one object "
                "per line, name the file .jsonl.",
            )
        self._at += 1
        if self._peek() == "]":
            self._at += 1
        else:
            while True:
                if self._peek() == "":
                    raise self._error(self._line, "the file ends inside the array (no closing ']').")
                yield self._value()
                after = self._peek()
                self._at += 1
                if after == "]":
                    break
                if after != ",":
                    raise self._error(self._line, f"expected ',' or ']' after an element, found {after!r}.")
        if self._peek() != "":
            raise self._error(self._line, "there is more after the array's closing ']'.")


def check_row(
    line: int, raw: Any, shared_variables: Mapping[str, str] | None, template: TemplateSpec | None = None
) -> Row:
    """
    Check one raw row; the row's own variables win over the shared ones.

    :param template: when given, the merged variables must also fit this template.
    """
    if isinstance(raw, _Unreadable):
        raise AutocallsValidationError("row", "is not valid JSON.")
    if not isinstance(raw, Mapping):
        raise AutocallsValidationError(
            "row", f"must be a mapping with recipient_phone, got {type(raw).__name__}."
        )
    if _EXTRA_CELLS in raw:
        raise AutocallsValidationError(
            "row", f"has {len(raw[_EXTRA_CELLS])} more cells than the header has columns."
        )
    if _VARIABLE_PREFIX in raw:
        raise AutocallsValidationError(
            "variables", f"{_VARIABLE_PREFIX!r} names no variable: write it as e.g. 'variables.name'."
        )
    unknown = [key for key in raw if not _accepted(key)]
    listed = f"unknown keys {', '.join(repr(k) for k in unknown)}" if unknown else ""
    if "recipient_phone" not in raw:
        has = f" (it has {listed})" if unknown else ""
        raise AutocallsValidationError(
            "recipient_phone", f"is missing from the row{has}. Accepted keys: {_ACCEPTED_TEXT}."
        )
    if unknown:
        raise AutocallsValidationError("row", f"has {listed}. Accepted keys: {_ACCEPTED_TEXT}.")
    phone = check_phone(raw["recipient_phone"])
    name = check_recipient_name(raw.get("recipient_name") or None)
    variables = _row_variables(raw)
    merged = {**(shared_variables or {}), **(variables or {})} or None
    if template is not None:
        merged = template.check(merged)
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
