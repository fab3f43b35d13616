"""The ledger, and the single-message operators reading it so no try of a task sends twice."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException
from pytest_mock import MockerFixture

from airflow_provider_autocalls.exceptions import SenderOfflineError
from airflow_provider_autocalls.ledger import State, default_location, instance_path, ledger_for
from airflow_provider_autocalls.operators.autocalls import SendFreeformOperator, SendTemplateOperator
from airflow_provider_autocalls.testing import AutocallsSimulator, Fault

PHONE = "+14155550123"


def context(task_id: str = "send", map_index: int = -1) -> Any:
    ti = SimpleNamespace(
        dag_id="d", run_id="manual__2026-05-01T10:00:00+00:00", task_id=task_id, map_index=map_index
    )
    return {"ti": ti}


@pytest.fixture(autouse=True)
def _connection(make_conn: Callable[..., str]) -> None:
    make_conn(max_retries=0)


def op(tmp_path: Path, **kwargs: Any) -> SendTemplateOperator:
    return SendTemplateOperator(
        task_id="send",
        sender_id=12,
        template_id=46,
        recipient_phone=PHONE,
        ledger_location=str(tmp_path),
        **kwargs,
    )


def test_a_later_try_returns_the_first_answer_without_sending(
    tmp_path: Path, sim: AutocallsSimulator
) -> None:
    first = op(tmp_path).execute(context())
    again = op(tmp_path).execute(context())
    assert again == first
    assert len(sim.delivered) == 1
    ledger = ledger_for(context(), str(tmp_path))
    assert ledger is not None
    assert [r["state"] for r in ledger.records()] == ["started", "sent"]


def test_another_task_instance_has_its_own_ledger(tmp_path: Path, sim: AutocallsSimulator) -> None:
    op(tmp_path).execute(context(map_index=0))
    op(tmp_path).execute(context(map_index=1))
    assert len(sim.delivered) == 2


def test_a_send_cut_off_mid_request_is_never_repeated(tmp_path: Path, sim: AutocallsSimulator) -> None:
    ledger = ledger_for(context(), str(tmp_path))
    assert ledger is not None
    ledger.begin(PHONE)  # what a worker killed during the request leaves behind
    with pytest.raises(AirflowFailException, match="may have been delivered.*remove the ledger"):
        op(tmp_path).execute(context())
    assert sim.requests == []
    assert ledger.last(PHONE)["state"] == State.UNKNOWN  # type: ignore[index]
    with pytest.raises(AirflowFailException):
        op(tmp_path).execute(context())
    assert sim.requests == []


def test_a_send_in_doubt_is_recorded_and_not_repeated(tmp_path: Path, sim: AutocallsSimulator) -> None:
    sim.inject(Fault(endpoint="send_template", process=True, drop=True))
    with pytest.raises(AirflowFailException):
        op(tmp_path).execute(context())
    with pytest.raises(AirflowFailException, match="earlier try"):
        op(tmp_path).execute(context())
    assert len(sim.requests) == 1
    assert len(sim.delivered) == 1


def test_a_definite_failure_releases_the_recipient_for_the_next_try(
    tmp_path: Path, sim: AutocallsSimulator
) -> None:
    sim.inject(Fault(status=422, body='{"success": false, "error": "off", "error_code": "SENDER_OFFLINE"}'))
    with pytest.raises(SenderOfflineError):
        op(tmp_path).execute(context())
    op(tmp_path).execute(context())
    assert len(sim.delivered) == 1


def test_skipping_a_closed_window_releases_too(tmp_path: Path, sim: AutocallsSimulator) -> None:
    from airflow.providers.common.compat.sdk import AirflowSkipException

    freeform = SendFreeformOperator(
        task_id="f",
        sender_id=12,
        recipient_phone=PHONE,
        message="hi",
        if_session_closed="skip",
        ledger_location=str(tmp_path),
    )
    with pytest.raises(AirflowSkipException):
        freeform.execute(context("f"))
    sim.customer_message(12, PHONE)
    freeform.execute(context("f"))
    assert [m["kind"] for m in sim.delivered] == ["freeform"]


def test_a_torn_last_line_is_ignored(tmp_path: Path) -> None:
    ledger = ledger_for(context(), str(tmp_path))
    assert ledger is not None
    ledger.finish(PHONE, State.SENT, message_sid="SM1")
    ledger.close()
    path = tmp_path / f"{instance_path(context()['ti'])}.ledger.jsonl"
    with path.open("a") as f:
        f.write('{"recipient": "+1415555')
    assert [r["state"] for r in ledger.records()] == ["sent"]


def test_an_object_store_without_append_gets_one_object_per_record(sim: AutocallsSimulator) -> None:
    from airflow.providers.common.compat.sdk import ObjectStoragePath

    try:
        ObjectStoragePath("memory://probe").exists()
    except ValueError:
        pytest.skip("this Airflow's object storage has no memory:// filesystem to test with")
    location = "memory://ledgers/test-object-store"
    first = SendTemplateOperator(
        task_id="send", sender_id=12, template_id=46, recipient_phone=PHONE, ledger_location=location
    ).execute(context())
    again = SendTemplateOperator(
        task_id="send", sender_id=12, template_id=46, recipient_phone=PHONE, ledger_location=location
    ).execute(context())
    assert again == first
    assert len(sim.delivered) == 1
    ledger = ledger_for(context(), location)
    assert ledger is not None
    assert ledger.location.startswith("memory://")
    assert [r["state"] for r in ledger.records()] == ["started", "sent"]


def test_no_task_instance_means_no_ledger() -> None:
    assert ledger_for({}) is None


def test_default_location_follows_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AIRFLOW__AUTOCALLS__LEDGER_LOCATION", "s3://bucket/ledgers")
    assert default_location() == "s3://bucket/ledgers"
    monkeypatch.delenv("AIRFLOW__AUTOCALLS__LEDGER_LOCATION")
    assert default_location().endswith("autocalls/ledger")


def test_a_retry_in_a_dag_run_does_not_send_twice(
    run_dag: Callable[..., Any], sim: AutocallsSimulator
) -> None:
    """The first try sends, then the task fails after the send; the retry returns the first answer."""
    from tests.conftest import DAG_HEADER

    dag = DAG_HEADER + (
        "class FlakyAfterSend(SendTemplateOperator):\n"
        "    def execute(self, context):\n"
        "        result = super().execute(context)\n"
        "        if context['ti'].try_number == 1:\n"
        "            raise RuntimeError('worker lost after the send')\n"
        "        return result\n"
        "with DAG(DAG_ID, schedule=None, start_date=START, default_args={'retries': 2, 'retry_delay': 0}):\n"
        "    FlakyAfterSend(task_id='send', sender_id=12, template_id=46, recipient_phone='+14155550123')\n"
    )
    result = run_dag(dag)
    assert result.state == "success"
    assert result.tries["send"] == [("success", 2)]
    assert len(sim.delivered) == 1


def test_a_record_after_a_torn_line_is_not_lost(tmp_path: Path) -> None:
    ledger = ledger_for(context(), str(tmp_path))
    assert ledger is not None
    ledger.begin(PHONE)
    ledger.close()
    path = tmp_path / f"{instance_path(context()['ti'])}.ledger.jsonl"
    with path.open("a") as f:
        f.write('{"recipient": "+1415555')  # the crash tore this write
    again = ledger_for(context(), str(tmp_path))
    assert again is not None
    again.finish(PHONE, State.UNKNOWN)
    assert [r["state"] for r in again.records()] == ["started", "unknown"]


def test_a_local_ledger_with_a_distributed_executor_is_warned_about(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", "CeleryExecutor")
    with caplog.at_level("WARNING"):
        ledger_for(context(), str(tmp_path))
    assert "a folder only this worker sees" in caplog.text


def test_a_missing_connection_leaves_no_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_AUTOCALLS_DEFAULT")
    with pytest.raises(Exception, match="autocalls_default"):
        op(tmp_path).execute(context())
    ledger = ledger_for(context(), str(tmp_path))
    assert ledger is not None
    assert list(ledger.records()) == []


# -- interrupted by something else than the API: a signal, a log pipe whose reader died -----------


def test_a_failure_after_the_api_said_sent_still_records_the_send(
    tmp_path: Path, sim: AutocallsSimulator, mocker: MockerFixture
) -> None:
    # A worker whose supervisor died fails at its next log line, right after the API's answer.
    mocker.patch.object(SendTemplateOperator, "_report_sent", side_effect=BrokenPipeError)
    with pytest.raises(BrokenPipeError):
        op(tmp_path).execute(context())
    mocker.stopall()
    ledger = ledger_for(context(), str(tmp_path))
    assert ledger is not None
    assert ledger.last(PHONE)["state"] == State.SENT  # type: ignore[index]
    assert op(tmp_path).execute(context())["message_sid"] == sim.delivered[0]["message_sid"]
    assert len(sim.delivered) == 1


def test_an_interruption_between_attempts_releases_the_recipient(
    tmp_path: Path, sim: AutocallsSimulator, make_conn: Callable[..., str], mocker: MockerFixture
) -> None:
    make_conn(max_retries=2)
    sim.inject(Fault(endpoint="send_template", status=429, headers={"Retry-After": "0"}))
    # The "trying again" line after the 429 is where such a worker fails: nothing is out then.
    mocker.patch("airflow_provider_autocalls.hooks._retry.log.warning", side_effect=BrokenPipeError)
    with pytest.raises(BrokenPipeError):
        op(tmp_path).execute(context())
    mocker.stopall()
    assert sim.delivered == []
    ledger = ledger_for(context(), str(tmp_path))
    assert ledger is not None
    assert ledger.last(PHONE)["state"] == State.RELEASED  # type: ignore[index]
    op(tmp_path).execute(context())
    assert len(sim.delivered) == 1


def test_an_interruption_while_the_request_is_out_stays_in_doubt(
    tmp_path: Path, sim: AutocallsSimulator, mocker: MockerFixture
) -> None:
    # Interrupted while reading the answer: the API has already delivered the message.
    mocker.patch("airflow_provider_autocalls.hooks.autocalls._read_capped", side_effect=KeyboardInterrupt)
    with pytest.raises(KeyboardInterrupt):
        op(tmp_path).execute(context())
    mocker.stopall()
    assert len(sim.delivered) == 1
    with pytest.raises(AirflowFailException, match="may have been delivered"):
        op(tmp_path).execute(context())
    assert len(sim.delivered) == 1
