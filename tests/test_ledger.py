"""The ledger, and the single-message operators reading it so no try of a task sends twice."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from unittest import mock

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException
from pytest_mock import MockerFixture

from airflow_provider_autocalls.exceptions import SenderOfflineError
from airflow_provider_autocalls.ledger import (
    LedgerCorruptError,
    LedgerStoreError,
    State,
    default_location,
    instance_path,
    ledger_for,
    phone_key,
)
from airflow_provider_autocalls.operators.autocalls import SendFreeformOperator, SendTemplateOperator
from airflow_provider_autocalls.testing import AutocallsSimulator, Fault

PHONE = "+14155550123"


def context(
    task_id: str = "send", map_index: int = -1, run_id: str = "manual__2026-05-01T10:00:00+00:00"
) -> Any:
    ti = SimpleNamespace(dag_id="d", run_id=run_id, task_id=task_id, map_index=map_index, try_number=1)
    return {"ti": ti}


KEY = phone_key(PHONE)


def records(tmp_path: Path, ctx: Any = None) -> list[str]:
    """The record names of the ledger of ``ctx``, sorted."""
    ledger = ledger_for(ctx or context(), str(tmp_path))
    assert ledger is not None
    return sorted(ledger.store.names())


def claim_without_outcome(location: str, ctx: Any = None) -> None:
    """What a worker killed during the request leaves behind: its claim, made by a process now gone."""
    import subprocess

    ledger = ledger_for(ctx or context(), location)
    assert ledger is not None
    gone = subprocess.Popen(["true"])
    gone.wait()
    with mock.patch("os.getpid", return_value=gone.pid):
        ledger.new_claim(KEY, PHONE).take()


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
        check_template=False,  # these tests count the send's own requests
        **kwargs,
    )


def test_a_later_try_returns_the_first_answer_without_sending(
    tmp_path: Path, sim: AutocallsSimulator
) -> None:
    first = op(tmp_path).execute(context())
    again = op(tmp_path).execute(context())
    assert again == first
    assert len(sim.delivered) == 1
    assert records(tmp_path) == [f"{KEY}.0.claim", f"{KEY}.0.outcome"]


def test_another_task_instance_has_its_own_ledger(tmp_path: Path, sim: AutocallsSimulator) -> None:
    op(tmp_path).execute(context(map_index=0))
    op(tmp_path).execute(context(map_index=1))
    assert len(sim.delivered) == 2


def test_a_send_cut_off_mid_request_is_never_repeated(tmp_path: Path, sim: AutocallsSimulator) -> None:
    claim_without_outcome(str(tmp_path))
    with pytest.raises(AirflowFailException, match="may have been delivered.*release-unknown"):
        op(tmp_path).execute(context())
    assert sim.requests == []
    with pytest.raises(AirflowFailException):
        op(tmp_path).execute(context())
    assert sim.requests == []


def test_a_send_in_doubt_is_recorded_and_not_repeated(tmp_path: Path, sim: AutocallsSimulator) -> None:
    sim.inject(Fault(endpoint="send_template", process=True, drop=True))
    with pytest.raises(AirflowFailException):
        op(tmp_path).execute(context())
    with pytest.raises(AirflowFailException, match="Try 1 of this task started sending"):
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


def test_a_damaged_claim_stays_in_doubt(tmp_path: Path, sim: AutocallsSimulator) -> None:
    folder = tmp_path / instance_path(context()["ti"]) / "ledger"
    folder.mkdir(parents=True)
    (folder / f"{KEY}.0.claim.json").write_text('{"key": "p1415')
    with pytest.raises(AirflowFailException, match="may have been delivered"):
        op(tmp_path).execute(context())
    assert sim.requests == []


def test_a_record_is_never_seen_half_written(tmp_path: Path) -> None:
    """A claim appears whole or not at all: a reader racing its writer never sees it empty."""
    import threading

    ledger = ledger_for(context(), str(tmp_path))
    assert ledger is not None
    seen: list[Any] = []
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            for name in ledger.store.names():
                seen.append(ledger.store.read(name))

    reader = threading.Thread(target=read)
    reader.start()
    for i in range(300):
        ledger.new_claim(f"p{i}", f"+{i}").take()
    done.set()
    reader.join()
    assert seen
    assert all(record and record.get("key") for record in seen)
    assert not [name for name in ledger.store.names() if "draft" in name]


def test_a_torn_outcome_stays_in_doubt(tmp_path: Path, sim: AutocallsSimulator) -> None:
    claim_without_outcome(str(tmp_path))
    folder = tmp_path / instance_path(context()["ti"]) / "ledger"
    (folder / f"{KEY}.0.outcome.json").write_text('{"state": "se')
    with pytest.raises(AirflowFailException, match="may have been delivered"):
        op(tmp_path).execute(context())
    assert sim.requests == []


def test_a_corrupt_record_fails_at_once_with_a_clear_error(tmp_path: Path, sim: AutocallsSimulator) -> None:
    claim_without_outcome(str(tmp_path))
    folder = tmp_path / instance_path(context()["ti"]) / "ledger"
    (folder / f"{KEY}.0.outcome.json").write_text('{"state": "delivered-maybe"}')
    with pytest.raises(AirflowFailException, match="no valid state") as failure:
        op(tmp_path).execute(context())
    assert isinstance(failure.value.__cause__, LedgerCorruptError)
    assert sim.requests == []


def test_a_relative_ledger_location_is_refused_before_anything_is_sent(sim: AutocallsSimulator) -> None:
    with pytest.raises(AirflowFailException, match="relative path") as failure:
        op(Path("ledgers")).execute(context())
    assert isinstance(failure.value.__cause__, LedgerStoreError)
    assert sim.requests == []


def test_distinct_task_instances_never_share_a_ledger(tmp_path: Path) -> None:
    # Once, a mapped "send"[3] and a task "send.3", or runs "promo:may" and "promo_may", shared one.
    paths = {
        instance_path(context("send", 3)["ti"]),
        instance_path(context("send.3")["ti"]),
        instance_path(context("send", run_id="promo:may")["ti"]),
        instance_path(context("send", run_id="promo_may")["ti"]),
        instance_path(context("Send", run_id="promo_may")["ti"]),
        instance_path(context("send", run_id="promo_may=send=-1=")["ti"]),
    }
    assert len(paths) == 6
    long = instance_path(context("t" * 250, run_id="r" * 250)["ti"])
    assert all(0 < len(part) <= 120 for part in long.split("/"))


def test_the_second_of_two_distinct_task_instances_still_sends(
    tmp_path: Path, sim: AutocallsSimulator
) -> None:
    op(tmp_path).execute(context("send", 3))
    op(tmp_path).execute(context("send.3"))
    op(tmp_path).execute(context("send", run_id="promo:may"))
    op(tmp_path).execute(context("send", run_id="promo_may"))
    assert len(sim.delivered) == 4


def test_an_object_store_gets_one_exclusive_object_per_record(
    sim: AutocallsSimulator, memory_location: str
) -> None:
    location = memory_location
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
    assert sorted(ledger.store.names()) == [f"{KEY}.0.claim", f"{KEY}.0.outcome"]
    assert not ledger.store.create(f"{KEY}.0.claim", {"key": KEY})  # exclusive


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


def test_a_local_ledger_with_a_distributed_executor_is_warned_about(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    for executors, warned in [
        ("CeleryExecutor", True),
        ("LocalExecutor,CeleryExecutor", True),
        ("LocalExecutor,my_company.executors.KubernetesLikeExecutor", True),
        ("LocalExecutor", False),
        ("airflow.executors.local_executor.LocalExecutor", False),
    ]:
        caplog.clear()
        monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", executors)
        with caplog.at_level("WARNING"):
            ledger_for(context(), str(tmp_path))
        assert ("a folder only this worker sees" in caplog.text) is warned, executors


def test_a_missing_connection_leaves_no_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_AUTOCALLS_DEFAULT")
    with pytest.raises(Exception, match="autocalls_default"):
        op(tmp_path).execute(context())
    assert records(tmp_path) == []


# -- interrupted by something else than the API: a signal, a log pipe whose reader died -----------


def test_a_failure_after_the_api_said_sent_still_records_the_send(
    tmp_path: Path, sim: AutocallsSimulator, mocker: MockerFixture
) -> None:
    # A worker whose supervisor died fails at its next log line, right after the API's answer.
    mocker.patch.object(SendTemplateOperator, "_report_sent", side_effect=BrokenPipeError)
    with pytest.raises(BrokenPipeError):
        op(tmp_path).execute(context())
    mocker.stopall()
    assert _state(tmp_path) == State.SENT
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
    assert _state(tmp_path) == State.RELEASED
    op(tmp_path).execute(context())
    assert len(sim.delivered) == 1


def test_an_interruption_while_the_request_is_out_stays_in_doubt(
    tmp_path: Path, sim: AutocallsSimulator, mocker: MockerFixture
) -> None:
    # Interrupted while reading the answer: the API has already delivered the message.
    mocker.patch("airflow_provider_autocalls.hooks._transport._read_capped", side_effect=KeyboardInterrupt)
    with pytest.raises(KeyboardInterrupt):
        op(tmp_path).execute(context())
    mocker.stopall()
    assert len(sim.delivered) == 1
    with pytest.raises(AirflowFailException, match="may have been delivered"):
        op(tmp_path).execute(context())
    assert len(sim.delivered) == 1


def _state(tmp_path: Path) -> State:
    ledger = ledger_for(context(), str(tmp_path))
    assert ledger is not None
    entry = ledger.entry(KEY)
    assert entry is not None
    return entry.state


def test_no_wall_clock_orders_or_decides_anything(
    sim: AutocallsSimulator,
    monkeypatch: pytest.MonkeyPatch,
    memory_location: str,
    make_conn: Callable[..., str],
    mocker: MockerFixture,
) -> None:
    """Tries on workers whose clocks differ by 10 minutes still agree on what was sent."""
    import datetime

    from airflow.providers.common.compat.sdk import timezone

    def send() -> dict[str, Any]:
        return SendTemplateOperator(
            task_id="send",
            sender_id=12,
            template_id=46,
            recipient_phone=PHONE,
            ledger_location=memory_location,
        ).execute(context())

    make_conn(max_retries=2)
    # Try 1 is interrupted between two attempts (after a 429): nothing was sent, the message is released.
    sim.inject(Fault(endpoint="send_template", status=429, headers={"Retry-After": "0"}))
    mocker.patch("airflow_provider_autocalls.hooks._retry.log.warning", side_effect=BrokenPipeError)
    with pytest.raises(BrokenPipeError):
        send()
    mocker.stopall()
    # Try 2 runs on a worker whose clock is 10 minutes behind, and sends.
    real_utcnow = timezone.utcnow
    monkeypatch.setattr(timezone, "utcnow", lambda: real_utcnow() - datetime.timedelta(minutes=10))
    first = send()
    monkeypatch.setattr(timezone, "utcnow", real_utcnow)
    # Try 3 (a clear and re-run) on a worker with the right time must see try 2's send.
    assert send()["message_sid"] == first["message_sid"]
    assert len(sim.delivered) == 1
