"""BulkSendTemplateOperator: checks before sending, pacing, at-most-once and resumable, report."""

from __future__ import annotations

import contextlib
import csv
import json
import logging
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException
from pytest_mock import MockerFixture

from airflow_provider_autocalls.exceptions import SenderOfflineError
from airflow_provider_autocalls.ledger import ledger_for, phone_key
from airflow_provider_autocalls.operators.autocalls import BulkSendTemplateOperator
from airflow_provider_autocalls.testing import AutocallsSimulator, Fault

MISMATCH = '{"success": false, "error": "bad", "error_code": "TEMPLATE_MISMATCH"}'


def context() -> Any:
    return {"ti": SimpleNamespace(dag_id="d", run_id="r1", task_id="bulk", map_index=-1, try_number=1)}


def phones(n: int, start: int = 0) -> list[str]:
    return [f"+1415555{i:04d}" for i in range(start, start + n)]


@pytest.fixture(autouse=True)
def _connection(make_conn: Callable[..., str]) -> None:
    make_conn(max_retries=0)


def bulk(tmp_path: Path, **kwargs: Any) -> BulkSendTemplateOperator:
    defaults: dict[str, Any] = {
        "task_id": "bulk",
        "sender_id": 12,
        "template_id": 46,
        "ledger_location": str(tmp_path),
        # One at a time, so that the faults these tests inject meet the rows they are meant for.
        "max_in_flight": 1,
    }
    return BulkSendTemplateOperator(**{**defaults, **kwargs})


def sends(sim: AutocallsSimulator) -> list[dict[str, Any]]:
    """The send requests the simulator saw (the template check before them is a read)."""
    return [r for r in sim.requests if r["endpoint"].startswith("send")]


def report_rows(summary: dict[str, Any]) -> list[dict[str, Any]]:
    text = Path(summary["report"]).read_text()
    if summary["report"].endswith(".csv"):
        return list(csv.DictReader(text.splitlines()))
    return [json.loads(line) for line in text.splitlines()]


def test_sends_once_to_each_recipient_and_reports_everyone(tmp_path: Path, sim: AutocallsSimulator) -> None:
    recipients = [{"recipient_phone": p} for p in [*phones(4), phones(1)[0]]]  # the last is a duplicate
    summary = bulk(tmp_path, recipients=recipients).execute(context())
    assert sorted(m["recipient_phone"] for m in sim.delivered) == phones(4)
    assert (summary["total"], summary["sent"], summary["skipped"], summary["duplicates"]) == (5, 4, 1, 1)
    rows = report_rows(summary)
    assert sorted(r["status"] for r in rows) == ["sent"] * 4 + ["skipped"]
    assert {r["message_sid"] for r in rows if r["status"] == "sent"} == {
        m["message_sid"] for m in sim.delivered
    }
    assert next(r for r in rows if r["status"] == "skipped")["reason"] == "duplicate of line 1"


def test_variables_per_row_win_over_shared_ones(tmp_path: Path, sim: AutocallsSimulator) -> None:
    recipients = [
        {"recipient_phone": phones(1)[0], "recipient_name": "Ada", "variables": {"1": "Ada"}},
        {"recipient_phone": phones(1, 1)[0], "variables": {"1": "Bob", "3": "11:00"}},
    ]
    bulk(tmp_path, template_id=45, recipients=recipients, variables={"2": "Monday", "3": "9:00"}).execute(
        context()
    )
    assert [m["text"] for m in sim.delivered] == [
        "Hi Ada, your appointment is on Monday at 9:00.",
        "Hi Bob, your appointment is on Monday at 11:00.",
    ]


def test_a_csv_file_with_variable_columns(tmp_path: Path, sim: AutocallsSimulator) -> None:
    path = tmp_path / "segment.csv"
    path.write_text(
        "recipient_phone,recipient_name,variables.name,variables.date,variables.time\n"
        "+14155550001,Ada,Ada,Monday,9:00\n"
        "+14155550002,Bob,Bob,Tuesday,10:00\n"
    )
    summary = bulk(tmp_path, template_id=45, recipients_file=str(path), report_format="csv").execute(
        context()
    )
    assert summary["sent"] == 2
    assert sim.delivered[1]["text"] == "Hi Bob, your appointment is on Tuesday at 10:00."
    assert [r["line"] for r in report_rows(summary)] == ["2", "3"]


def test_a_json_lines_file_given_as_a_file_uri(tmp_path: Path, sim: AutocallsSimulator) -> None:
    path = tmp_path / "segment.jsonl"
    path.write_text("\n".join(json.dumps({"recipient_phone": p}) for p in phones(3)) + "\n")
    assert bulk(tmp_path, recipients_file=f"file://{path}").execute(context())["sent"] == 3


def test_recipients_rendered_as_text_are_parsed(tmp_path: Path, sim: AutocallsSimulator) -> None:
    as_json = json.dumps([{"recipient_phone": phones(1)[0]}])
    as_python = str([{"recipient_phone": phones(1, 1)[0]}])
    bulk(tmp_path, recipients=as_json).execute(context())
    bulk(tmp_path / "b", recipients=as_python).execute(context())
    assert len(sim.delivered) == 2


BAD_ROWS = [
    {"recipient_phone": "+14155550001"},
    {"recipient_phone": "415-555-0002"},
    "not a mapping",
    {"recipient_phone": "+14155550003", "variables": ["x"]},
    {"recipient_phone": "+14155550004", "recipient_name": "n" * 300},
]


def test_bad_rows_fail_the_task_before_any_send(tmp_path: Path, sim: AutocallsSimulator) -> None:
    with pytest.raises(AirflowFailException) as err:
        bulk(tmp_path, recipients=BAD_ROWS).execute(context())
    text = str(err.value)
    assert "4 invalid recipient rows; nothing was sent" in text
    assert "line 2: recipient_phone" in text
    assert "line 3: row" in text
    assert "line 4: variables" in text
    assert "line 5: recipient_name" in text
    assert sim.requests == []


def test_bad_rows_can_be_skipped(tmp_path: Path, sim: AutocallsSimulator) -> None:
    summary = bulk(tmp_path, recipients=BAD_ROWS, on_invalid_row="skip").execute(context())
    assert (summary["sent"], summary["skipped"], summary["invalid"], summary["total"]) == (1, 4, 4, 5)


def test_a_retry_sends_only_to_recipients_without_a_record(tmp_path: Path, sim: AutocallsSimulator) -> None:
    recipients = [{"recipient_phone": p} for p in phones(6)]
    offline = '{"success": false, "error": "off", "error_code": "SENDER_OFFLINE"}'
    sim.inject(Fault(endpoint="send_template", process=True, drop=True))  # row 1: in doubt
    for _ in range(2):
        sim.inject(Fault(endpoint="send_template", status=None, delay=0))  # rows 2, 3: sent
    sim.inject(Fault(endpoint="send_template", status=422, body=offline))  # row 4: offline, stop
    with pytest.raises(SenderOfflineError):
        bulk(tmp_path, recipients=recipients).execute(context())
    assert len(sim.delivered) == 3
    summary = bulk(tmp_path, recipients=recipients).execute(context())
    delivered = [m["recipient_phone"] for m in sim.delivered]
    assert len(delivered) == len(set(delivered)) == 6
    assert (summary["sent"], summary["unknown"], summary["from_earlier_tries"]) == (5, 1, 3)
    assert summary["total"] == 6


def test_a_send_cut_off_by_a_crash_is_unknown_and_never_repeated(
    tmp_path: Path, sim: AutocallsSimulator
) -> None:
    ledger = ledger_for(context(), str(tmp_path))
    assert ledger is not None
    ledger.new_claim(
        phone_key(phones(1)[0]), phones(1)[0]
    ).take()  # what a SIGKILL during that request leaves
    summary = bulk(tmp_path, recipients=[{"recipient_phone": p} for p in phones(3)]).execute(context())
    assert sorted(m["recipient_phone"] for m in sim.delivered) == phones(2, 1)
    assert (summary["sent"], summary["unknown"]) == (2, 1)


def test_an_interruption_between_attempts_releases_the_row(
    tmp_path: Path, sim: AutocallsSimulator, make_conn: Callable[..., str], mocker: MockerFixture
) -> None:
    make_conn(max_retries=2)
    recipients = [{"recipient_phone": p} for p in phones(3)]
    sim.inject(Fault(endpoint="send_template", status=429, headers={"Retry-After": "0"}))
    mocker.patch("airflow_provider_autocalls.hooks._retry.log.warning", side_effect=BrokenPipeError)
    with pytest.raises(BrokenPipeError):  # the worker's log pipe broke while nothing was out
        bulk(tmp_path, recipients=recipients).execute(context())
    mocker.stopall()
    assert sim.delivered == []
    summary = bulk(tmp_path, recipients=recipients).execute(context())
    assert sorted(m["recipient_phone"] for m in sim.delivered) == phones(3)
    assert (summary["sent"], summary["unknown"]) == (3, 0)


def test_an_interruption_while_the_request_is_out_leaves_the_row_unknown(
    tmp_path: Path, sim: AutocallsSimulator, mocker: MockerFixture
) -> None:
    recipients = [{"recipient_phone": p} for p in phones(2)]
    mocker.patch("airflow_provider_autocalls.hooks._transport._read_capped", side_effect=KeyboardInterrupt)
    with pytest.raises(KeyboardInterrupt):
        bulk(tmp_path, recipients=recipients, check_template=False).execute(context())
    mocker.stopall()
    summary = bulk(tmp_path, recipients=recipients).execute(context())
    assert [m["recipient_phone"] for m in sim.delivered] == phones(2)  # the first went out once
    assert (summary["sent"], summary["unknown"]) == (1, 1)


def test_failed_rows_do_not_fail_the_task_below_the_threshold(
    tmp_path: Path, sim: AutocallsSimulator
) -> None:
    mismatch = '{"success": false, "error": "bad", "error_code": "TEMPLATE_MISMATCH"}'
    sim.inject(Fault(endpoint="send_template", status=422, body=mismatch, count=2))
    summary = bulk(
        tmp_path, recipients=[{"recipient_phone": p} for p in phones(10)], max_failures=0.2
    ).execute(context())
    assert (summary["sent"], summary["failed"]) == (8, 2)
    assert {r["error_code"] for r in report_rows(summary) if r["status"] == "failed"} == {"TEMPLATE_MISMATCH"}


def test_passing_the_threshold_stops_and_fails_with_a_full_report(
    tmp_path: Path, sim: AutocallsSimulator
) -> None:
    mismatch = '{"success": false, "error": "bad", "error_code": "TEMPLATE_MISMATCH"}'
    sim.inject(Fault(endpoint="send_template", status=422, body=mismatch, count=3))
    with pytest.raises(AirflowFailException, match="3 recipients failed, more than max_failures=2"):
        bulk(tmp_path, recipients=[{"recipient_phone": p} for p in phones(10)], max_failures=2).execute(
            context()
        )
    report = next(tmp_path.rglob("report.jsonl"))
    statuses = [json.loads(line)["status"] for line in report.read_text().splitlines()]
    assert sorted(statuses) == ["failed"] * 3 + ["skipped"] * 7


def test_a_template_that_cannot_be_sent_is_refused_before_any_send(
    tmp_path: Path, sim: AutocallsSimulator
) -> None:
    with pytest.raises(AirflowFailException, match="template 47 'promo_pending' .* is not approved"):
        bulk(tmp_path, template_id=47, recipients=[{"recipient_phone": p} for p in phones(5)]).execute(
            context()
        )
    assert [r["endpoint"] for r in sim.requests] == ["templates"]


def test_unchecked_a_template_that_cannot_be_sent_stops_at_the_first_row(
    tmp_path: Path, sim: AutocallsSimulator
) -> None:
    with pytest.raises(AirflowFailException, match="TemplateNotApprovedError"):
        bulk(
            tmp_path,
            template_id=47,
            check_template=False,
            recipients=[{"recipient_phone": p} for p in phones(5)],
        ).execute(context())
    assert len(sim.requests) == 1


def test_a_typo_in_the_shared_variables_costs_one_read_and_no_send(
    tmp_path: Path, sim: AutocallsSimulator
) -> None:
    recipients = [{"recipient_phone": p, "variables": {"name": "Ada", "date": "May 1"}} for p in phones(20)]
    with pytest.raises(AirflowFailException, match="20 invalid recipient rows; nothing was sent") as failure:
        bulk(tmp_path, template_id=45, recipients=recipients, variables={"tme": "10:00"}).execute(context())
    assert "tme" in str(failure.value)
    assert [r["endpoint"] for r in sim.requests] == ["templates"]


def test_sends_at_the_rate_limit_without_a_single_429(
    make_conn: Callable[..., str], tmp_path: Path, sim: AutocallsSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    sim.rate_limit = 20
    make_conn(rate_limit=20)
    structured: list[Any] = []
    with caplog.at_level(logging.INFO), contextlib.ExitStack() as stack:
        with contextlib.suppress(ImportError):
            from structlog.testing import capture_logs

            structured = stack.enter_context(capture_logs())
        summary = bulk(tmp_path, recipients=[{"recipient_phone": p} for p in phones(30)]).execute(context())
    assert summary["sent"] == 30
    assert sim.rate_limited_count == 0
    lines = [r.getMessage() for r in caplog.records] + [str(e.get("event")) for e in structured]
    progress = [line for line in lines if line.startswith("Bulk send: ")]
    assert len(progress) >= 10  # at least every 5 %
    assert "30/30 (100%)" in progress[-1]
    assert "msg/s, ETA" in progress[-1]


def test_exactly_one_source_is_required(tmp_path: Path) -> None:
    with pytest.raises(AirflowFailException, match="exactly one of recipients and recipients_file"):
        bulk(tmp_path).execute(context())


def test_in_a_dag_run_from_a_csv_an_upstream_task_wrote(
    run_dag: Callable[..., Any], sim: AutocallsSimulator
) -> None:
    from tests.conftest import DAG_HEADER

    dag = DAG_HEADER + (
        "from airflow_provider_autocalls.operators.autocalls import BulkSendTemplateOperator\n"
        "import tempfile\n"
        "@task\n"
        "def export():\n"
        "    path = tempfile.mkdtemp() + '/segment.csv'\n"
        "    with open(path, 'w') as f:\n"
        "        f.write('recipient_phone\\n+14155550001\\n+14155550002\\n')\n"
        "    return path\n"
        "with DAG(DAG_ID, schedule=None, start_date=START):\n"
        "    BulkSendTemplateOperator(task_id='bulk', sender_id=12, template_id=46, recipients_file=export())\n"
    )
    assert run_dag(dag).state == "success"
    assert len(sim.delivered) == 2


def test_a_broken_connection_stops_before_any_record(
    tmp_path: Path, sim: AutocallsSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_AUTOCALLS_DEFAULT", json.dumps({"conn_type": "autocalls", "host": sim.url})
    )
    recipients = [{"recipient_phone": p} for p in phones(3)]
    with pytest.raises(AirflowFailException, match="no API key"):
        bulk(tmp_path, recipients=recipients).execute(context())
    assert list(tmp_path.rglob("*.jsonl")) == []  # no ledger record: a fixed connection sends to all
    monkeypatch.setenv(
        "AIRFLOW_CONN_AUTOCALLS_DEFAULT",
        json.dumps({"conn_type": "autocalls", "host": sim.url, "password": sim.api_key}),
    )
    assert bulk(tmp_path, recipients=recipients).execute(context())["sent"] == 3


def test_an_error_about_every_row_stops_and_the_stopped_row_is_reported(
    tmp_path: Path, sim: AutocallsSimulator
) -> None:
    not_synced = '{"success": false, "error": "not synced", "error_code": "TEMPLATE_NOT_SYNCED"}'
    sim.inject(Fault(endpoint="send_template", status=422, body=not_synced))
    with pytest.raises(AirflowFailException, match="TEMPLATE_NOT_SYNCED"):
        bulk(tmp_path, recipients=[{"recipient_phone": p} for p in phones(5)]).execute(context())
    report = next(tmp_path.rglob("report.jsonl"))
    rows = [json.loads(line) for line in report.read_text().splitlines()]
    assert sorted(r["line"] for r in rows) == [1, 2, 3, 4, 5]  # every recipient accounted for
    assert {r["status"] for r in rows} == {"skipped"}
    assert (
        bulk(tmp_path, recipients=[{"recipient_phone": p} for p in phones(5)]).execute(context())["sent"] == 5
    )


def test_sends_in_doubt_in_a_row_stop_the_run(tmp_path: Path, sim: AutocallsSimulator) -> None:
    from airflow_provider_autocalls.exceptions import AutocallsServerError

    sim.inject(Fault(endpoint="send_template", status=502, count=3))
    with pytest.raises(AutocallsServerError, match="3 sends in a row"):
        bulk(tmp_path, recipients=[{"recipient_phone": p} for p in phones(10)]).execute(context())
    assert len(sends(sim)) == 3
    summary = bulk(tmp_path, recipients=[{"recipient_phone": p} for p in phones(10)]).execute(context())
    assert (summary["unknown"], summary["sent"], summary["total"]) == (3, 7, 10)


def test_max_failures_counts_the_failures_of_earlier_tries(tmp_path: Path, sim: AutocallsSimulator) -> None:
    mismatch = '{"success": false, "error": "bad", "error_code": "TEMPLATE_MISMATCH"}'
    offline = '{"success": false, "error": "off", "error_code": "SENDER_OFFLINE"}'
    sim.inject(Fault(endpoint="send_template", status=422, body=mismatch))
    sim.inject(Fault(endpoint="send_template", status=422, body=offline))
    recipients = [{"recipient_phone": p} for p in phones(5)]
    with pytest.raises(SenderOfflineError):
        bulk(tmp_path, recipients=recipients, max_failures=1).execute(context())
    sim.inject(Fault(endpoint="send_template", status=422, body=mismatch))
    with pytest.raises(AirflowFailException, match="2 recipients failed, more than max_failures=1"):
        bulk(tmp_path, recipients=recipients, max_failures=1).execute(context())


def test_many_sends_in_flight_keep_every_outcome_exact(tmp_path: Path, sim: AutocallsSimulator) -> None:
    # Slow answers and a mix of faults, eight sends at a time: nobody twice, everyone accounted for.
    sim.inject(Fault(endpoint="send_template", delay=0.05, count=1000, probability=0.5))
    sim.inject(Fault(endpoint="send_template", process=True, drop=True, count=3, probability=0.1))
    sim.inject(Fault(endpoint="send_template", status=422, body=MISMATCH, count=3, probability=0.1))
    recipients = [{"recipient_phone": p} for p in phones(60)]
    summary = bulk(tmp_path, recipients=recipients, max_in_flight=8).execute(context())
    delivered = [m["recipient_phone"] for m in sim.delivered]
    assert len(delivered) == len(set(delivered))
    rows = report_rows(summary)
    assert sorted(r["recipient_phone"] for r in rows) == phones(60)
    assert summary["sent"] + summary["failed"] + summary["unknown"] == 60
    assert {r["recipient_phone"] for r in rows if r["status"] == "sent"} <= set(delivered)
    assert summary["sent"] <= len(delivered) <= summary["sent"] + summary["unknown"]


def test_the_same_refusal_row_after_row_stops_the_run(tmp_path: Path, sim: AutocallsSimulator) -> None:
    sim.inject(Fault(endpoint="send_template", status=422, body=MISMATCH, count=1000))
    with pytest.raises(AirflowFailException, match="10 sends in a row were refused with TEMPLATE_MISMATCH"):
        bulk(tmp_path, recipients=[{"recipient_phone": p} for p in phones(30)]).execute(context())
    assert len(sends(sim)) == 10


def test_a_run_in_which_every_send_failed_is_a_failed_task(tmp_path: Path, sim: AutocallsSimulator) -> None:
    sim.inject(Fault(endpoint="send_template", status=422, body=MISMATCH, count=1000))
    with pytest.raises(AirflowFailException, match="Every one of the 4 sends of this try failed"):
        bulk(tmp_path, recipients=[{"recipient_phone": p} for p in phones(4)]).execute(context())
