"""Recipient input: files diagnosed before any row is used, rows checked, empty segments signalled, reports."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_autocalls.bulk import (
    REPORT_FIELDS,
    EmptySegmentError,
    RecipientSource,
    SkippedRows,
    check_row,
    write_report,
)
from airflow_provider_autocalls.exceptions import AutocallsValidationError
from airflow_provider_autocalls.templates import template_spec


def rows(source: RecipientSource) -> list[tuple[int, Any]]:
    return list(source)


def write(tmp_path: Path, name: str, content: str | bytes) -> str:
    path = tmp_path / name
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    else:
        path.write_bytes(content)
    return str(path)


# -- CSV: delimiter and header -----------------------------------------------------------------------------


@pytest.mark.parametrize("delimiter", [",", ";", "\t"])
def test_the_delimiter_is_detected_from_the_header(tmp_path: Path, delimiter: str) -> None:
    text = delimiter.join(["recipient_phone", "recipient_name", "variables.name"]) + "\n"
    text += (
        delimiter.join(["+14155550100", "Ada, the first", "Ada"]).replace(
            "Ada, the first", '"Ada, the first"'
        )
        + "\n"
    )
    [(line, row)] = rows(RecipientSource(recipients_file=write(tmp_path, "a.csv", text)))
    assert line == 2
    assert check_row(line, row, None).variables == {"name": "Ada"}
    assert row["recipient_name"] == "Ada, the first"


def test_a_given_delimiter_wins(tmp_path: Path) -> None:
    text = "recipient_phone|variables.note\n+14155550100|a;b;c\n"
    [(_, row)] = rows(RecipientSource(recipients_file=write(tmp_path, "a.csv", text), csv_delimiter="|"))
    assert row == {"recipient_phone": "+14155550100", "variables.note": "a;b;c"}


def test_a_semicolon_file_is_no_longer_one_column(tmp_path: Path) -> None:
    text = "recipient_phone;variables.1\n+14155550100;Ada\n+14155550101;Bob\n"
    checked = [
        check_row(n, r, None) for n, r in RecipientSource(recipients_file=write(tmp_path, "s.csv", text))
    ]
    assert [(r.phone, r.variables) for r in checked] == [
        ("+14155550100", {"1": "Ada"}),
        ("+14155550101", {"1": "Bob"}),
    ]


def test_a_header_with_bare_variable_names_is_refused_naming_every_problem(tmp_path: Path) -> None:
    location = write(tmp_path, "seg.csv", "name,date\nAda,Monday\n")
    with pytest.raises(AutocallsValidationError) as error:
        rows(RecipientSource(recipients_file=location))
    text = str(error.value)
    assert error.value.field == "recipients_file"
    assert "has no recipient_phone column and has unknown columns 'name', 'date'" in text
    assert "Accepted columns: recipient_phone (required), recipient_name" in text
    assert "'variables.name'" in text
    assert "split at ','" in text


def test_unknown_columns_are_refused_even_with_a_phone_column(tmp_path: Path) -> None:
    location = write(
        tmp_path,
        "seg.csv",
        "recipient_phone,email,recipient_name,variables.1,notes\n+14155550100,a@b,Ada,x,\n",
    )
    with pytest.raises(AutocallsValidationError, match="has unknown columns 'email', 'notes'"):
        rows(RecipientSource(recipients_file=location))


def test_a_repeated_column_is_refused(tmp_path: Path) -> None:
    location = write(tmp_path, "seg.csv", "recipient_phone,variables.1,variables.1\n+14155550100,a,b\n")
    with pytest.raises(AutocallsValidationError, match="repeats 'variables.1'"):
        rows(RecipientSource(recipients_file=location))


def test_a_line_with_more_cells_than_the_header_is_a_bad_row(tmp_path: Path) -> None:
    location = write(tmp_path, "seg.csv", "recipient_phone\n+14155550100,extra\n\n+14155550101\n")
    [(line, first), (line2, second)] = rows(RecipientSource(recipients_file=location))
    with pytest.raises(AutocallsValidationError, match="1 more cells than the header"):
        check_row(line, first, None)
    assert (line2, check_row(line2, second, None).phone) == (4, "+14155550101")  # the blank line 3 is skipped


# -- JSON --------------------------------------------------------------------------------------------------


def test_a_json_file_holding_an_array_is_read_as_one(tmp_path: Path) -> None:
    people = [{"recipient_phone": f"+1415555{i:04d}", "variables": {"1": f"n{i}"}} for i in range(3)]
    location = write(tmp_path, "seg.json", json.dumps(people, indent=2))
    read = rows(RecipientSource(recipients_file=location))
    assert [row for _, row in read] == people
    assert [line for line, _ in read] == [2, 8, 14]  # the line each object starts on


def test_a_large_json_array_is_read_in_pieces_with_exact_lines(tmp_path: Path) -> None:
    people = [{"recipient_phone": f"+1415{i:07d}", "recipient_name": "x" * (i % 50)} for i in range(20_000)]
    location = write(tmp_path, "big.json", "[\n" + ",\n".join(json.dumps(p) for p in people) + "\n]\n")
    read = rows(RecipientSource(recipients_file=location))
    assert [row for _, row in read] == people
    assert read[-1][0] == 20_001


def test_objects_that_span_pieces_are_read_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import airflow_provider_autocalls.recipients as recipients

    monkeypatch.setattr(recipients, "_JSON_CHUNK", 1)  # every line is its own piece
    location = write(tmp_path, "odd.json", '[1234\n,\n{"recipient_phone":\n"+14155550100"}]')
    read = rows(RecipientSource(recipients_file=location))
    assert read == [(1, 1234), (3, {"recipient_phone": "+14155550100"})]


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ('{"recipient_phone": "+14155550100"}\n', "line 1: a .json file must hold one JSON array"),
        (
            '[{"recipient_phone": "+1"},\n {"recipient_phone": }]',
            "line 2: the array's element is not valid JSON",
        ),
        ('[{"recipient_phone": "+1"}\n {"a": 1}]', "line 2: expected ',' or ']'"),
        ('[{"recipient_phone": "+1"},\n', "the file ends inside the array"),
        ("[]\n[]", "line 2: there is more after the array's closing ']'"),
    ],
)
def test_a_json_file_that_is_not_one_array_is_diagnosed(tmp_path: Path, content: str, match: str) -> None:
    with pytest.raises(AutocallsValidationError, match=match):
        rows(RecipientSource(recipients_file=write(tmp_path, "bad.json", content)))


def test_json_lines_stays_json_lines(tmp_path: Path) -> None:
    location = write(
        tmp_path, "seg.ndjson", '{"recipient_phone": "+14155550100"}\n\n{"recipient_phone": "+14155550101"}\n'
    )
    assert [line for line, _ in rows(RecipientSource(recipients_file=location))] == [1, 3]


def test_unknown_keys_of_a_json_row_are_refused() -> None:
    with pytest.raises(
        AutocallsValidationError, match="row: has unknown keys 'name'. Accepted keys: recipient_phone"
    ):
        check_row(1, {"recipient_phone": "+14155550100", "name": "Ada"}, None)
    with pytest.raises(
        AutocallsValidationError,
        match="recipient_phone: is missing from the row \\(it has unknown keys 'phone'\\)",
    ):
        check_row(1, {"phone": "+14155550100"}, None)


# -- encoding ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bom", [b"", b"\xef\xbb\xbf"])
def test_utf8_with_or_without_bom_is_read(tmp_path: Path, bom: bytes) -> None:
    location = write(tmp_path, "seg.csv", bom + "recipient_phone,recipient_name\n+14155550100,Zoë\n".encode())
    [(_, row)] = rows(RecipientSource(recipients_file=location))
    assert row == {"recipient_phone": "+14155550100", "recipient_name": "Zoë"}


@pytest.mark.parametrize("name", ["seg.csv", "seg.jsonl", "seg.json"])
def test_a_file_that_is_not_utf8_fails_with_its_name_and_line(tmp_path: Path, name: str) -> None:
    lines = {
        "seg.csv": ["recipient_phone,recipient_name", "+14155550100,Ada", "+14155550101,Zoë"],
        "seg.jsonl": [
            '{"recipient_phone": "+14155550100"}',
            '{"recipient_phone": "+14155550101", "recipient_name": "Zoë"}',
        ],
        "seg.json": [
            "[",
            '{"recipient_phone": "+14155550100"},',
            '{"recipient_phone": "+14155550101", "recipient_name": "Zoë"}',
            "]",
        ],
    }[name]
    location = write(tmp_path, name, "\n".join(lines).encode("latin-1"))
    line = next(i for i, text in enumerate(lines, start=1) if "ë" in text)
    with pytest.raises(AutocallsValidationError) as error:
        rows(RecipientSource(recipients_file=location))
    assert error.value.field == "recipients_file"
    assert f"{location!r}, line {line}: not UTF-8 text (byte 0xeb" in str(error.value)
    assert not isinstance(error.value.__cause__, UnicodeDecodeError)


# -- empty segments ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("e.csv", ""),
        ("h.csv", "recipient_phone,variables.1\n"),
        ("h2.csv", "recipient_phone\n\n\n"),
        ("e.json", ""),
        ("a.json", "[ ]"),
        ("e.jsonl", "\n"),
    ],
)
def test_an_empty_file_is_an_empty_segment(tmp_path: Path, name: str, content: str) -> None:
    source = RecipientSource(recipients_file=write(tmp_path, name, content))
    with pytest.raises(EmptySegmentError, match="has no recipient rows"):
        rows(source)
    assert source.rows_read == 0
    allowed = RecipientSource(recipients_file=write(tmp_path, name, content), allow_empty=True)
    assert rows(allowed) == []
    assert allowed.rows_read == 0


@pytest.mark.parametrize("recipients", [[], "[]"])
def test_an_empty_list_is_an_empty_segment(recipients: Any) -> None:
    with pytest.raises(EmptySegmentError, match="recipients: is an empty list"):
        rows(RecipientSource(recipients=recipients))
    assert isinstance(EmptySegmentError("recipients", "x"), AutocallsValidationError)


def test_rows_read_counts_a_full_pass() -> None:
    source = RecipientSource(recipients=[{"recipient_phone": "+14155550100"}] * 3)
    assert source.rows_read is None
    rows(source)
    assert source.rows_read == 3


# -- the template check per row ------------------------------------------------------------------------------


def test_check_row_checks_the_merged_variables_against_the_template() -> None:
    template = template_spec(
        [
            {
                "id": 45,
                "name": "r",
                "status": "approved",
                "body_text": "{{1}} {{2}}",
                "variables": ["name", "time"],
            }
        ],
        45,
    )
    row = check_row(
        3, {"recipient_phone": "+14155550100", "variables": {"name": "Ada"}}, {"time": "10:00"}, template
    )
    assert row.variables == {"time": "10:00", "name": "Ada"}
    with pytest.raises(AutocallsValidationError, match="unknown variable 'tme'"):
        check_row(3, {"recipient_phone": "+14155550100"}, {"name": "Ada", "tme": "10:00"}, template)


# -- the report ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_report_rows_carry_the_recipient_name_and_the_try_number(tmp_path: Path, fmt: str) -> None:
    assert {"recipient_name", "try_number"} <= set(REPORT_FIELDS)
    records = [
        {"recipient": "+14155550100", "state": "sent", "line": 2, "recipient_name": "Ada", "try_number": 1},
        {"recipient": "+14155550101", "state": "failed", "line": 3, "recipient_name": None},
    ]
    skipped = SkippedRows()
    skipped.add(4, "+14155550102", "duplicate of line 2", name="Bob")
    destination = tmp_path / f"report.{fmt}"
    try:
        counts = write_report(destination, iter(records), skipped, fmt, try_number=2)
    finally:
        skipped.close()
    text = destination.read_text()
    read: list[dict[str, Any]] = (
        list(csv.DictReader(text.splitlines()))
        if fmt == "csv"
        else [json.loads(line) for line in text.splitlines()]
    )
    got = [(r["recipient_name"], str(r["try_number"]), r["status"]) for r in read]
    expected_none = "" if fmt == "csv" else None
    assert got == [("Ada", "1", "sent"), (expected_none, "2", "failed"), ("Bob", "2", "skipped")]
    assert counts == {"sent": 1, "failed": 1, "skipped": 1}
