"""SessionOpenSensor: poke, reschedule and deferrable; replied_after; timeouts."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import (
    AirflowFailException,
    AirflowSensorTimeout,
    AirflowSkipException,
    TaskDeferred,
)

from airflow_provider_autocalls.exceptions import AutocallsAPIError, AutocallsServerError
from airflow_provider_autocalls.sensors.autocalls import SessionOpenSensor
from airflow_provider_autocalls.testing import AutocallsSimulator, Fault
from airflow_provider_autocalls.triggers.autocalls import SessionOpenTrigger
from tests.conftest import DAG_HEADER

PHONE = "+14155550123"


@pytest.fixture(autouse=True)
def _connection(make_conn: Callable[..., str]) -> None:
    make_conn(max_retries=0)


def sensor(**kwargs: Any) -> SessionOpenSensor:
    return SessionOpenSensor(**{"task_id": "wait", "sender_id": 12, "recipient_phone": PHONE, **kwargs})


def test_template_fields() -> None:
    assert set(SessionOpenSensor.template_fields) == {
        "sender_id",
        "recipient_phone",
        "reply_to",
        "replied_after",
        "autocalls_conn_id",
    }


def test_poke_waits_for_the_window_and_returns_the_status(sim: AutocallsSimulator) -> None:
    waiting = sensor().poke({})
    assert waiting.is_done is False
    sim.customer_message(12, PHONE, "hi")
    done = sensor().poke({})
    assert done.is_done is True
    status = done.xcom_value
    assert status is not None
    assert status["session_status"]["is_open"] is True
    assert status["last_customer_message_at"]


@pytest.mark.parametrize("as_text", [True, False])
def test_replied_after_needs_a_customer_message_after_that_moment(
    sim: AutocallsSimulator, as_text: bool
) -> None:
    sim.customer_message(12, PHONE, "an old message")
    sim.advance(60)
    moment = sim.now()
    wait = sensor(replied_after=moment.isoformat() if as_text else moment)
    assert wait.poke({}).is_done is False  # window open, but the last message is older
    sim.advance(5)
    sim.customer_message(12, PHONE, "the answer")
    assert wait.poke({}).is_done is True


def test_a_template_opens_the_window_but_is_not_a_reply(sim: AutocallsSimulator) -> None:
    from airflow_provider_autocalls.hooks.autocalls import AutocallsHook

    sent = AutocallsHook().send_template(12, 46, PHONE)
    assert sent["success"]
    sent_at = sim.now() - timedelta(seconds=1)
    assert sensor().poke({}).is_done is True  # window open
    assert sensor(replied_after=sent_at).poke({}).is_done is False  # but no reply yet


def test_naive_replied_after_is_utc(sim: AutocallsSimulator) -> None:
    sim.customer_message(12, PHONE)
    naive_past = (sim.now() - timedelta(minutes=1)).replace(tzinfo=None)
    assert sensor(replied_after=naive_past).poke({}).is_done is True
    assert sensor(replied_after=naive_past + timedelta(minutes=2)).poke({}).is_done is False


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"replied_after": "yesterday-ish"}, "replied_after"),
        ({"replied_after": 12345}, "replied_after"),
        ({"recipient_phone": "555-0123"}, "recipient_phone"),
        ({"sender_id": "twelve"}, "sender_id"),
    ],
)
def test_bad_input_fails_without_retry_and_without_a_request(
    sim: AutocallsSimulator, kwargs: dict[str, Any], match: str
) -> None:
    with pytest.raises(AirflowFailException, match=match):
        sensor(**kwargs).poke({})
    assert [r for r in sim.requests if r["endpoint"] == "session_status"] == [] or "replied_after" in kwargs


def test_a_transient_error_is_left_to_airflow_retries(sim: AutocallsSimulator) -> None:
    sim.inject(Fault(endpoint="session_status", status=502))
    with pytest.raises(AutocallsServerError):
        sensor().poke({})


# -- deferrable ----------------------------------------------------------------------------------------------


def test_deferrable_checks_once_and_returns_without_deferring_when_ready(sim: AutocallsSimulator) -> None:
    sim.customer_message(12, PHONE)
    assert sensor(deferrable=True).execute({})["session_status"]["is_open"] is True
    assert len(sim.requests) == 1


def test_deferrable_defers_with_everything_the_triggerer_needs(make_conn: Callable[..., str]) -> None:
    make_conn("other_conn")
    moment = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    wait = sensor(
        deferrable=True,
        sender_id="12",
        replied_after=moment,
        autocalls_conn_id="other_conn",
        poke_interval=7,
        timeout=90,
    )
    with pytest.raises(TaskDeferred) as deferred:
        wait.execute({})
    trigger = deferred.value.trigger
    assert isinstance(trigger, SessionOpenTrigger)
    assert deferred.value.method_name == "execute_complete"
    assert deferred.value.timeout == timedelta(seconds=90)
    classpath, kwargs = trigger.serialize()
    end_by = datetime.fromisoformat(kwargs.pop("end_by"))
    assert timedelta(seconds=80) < end_by - datetime.now(UTC) <= timedelta(seconds=90)
    assert (classpath, kwargs) == (
        "airflow_provider_autocalls.triggers.autocalls.SessionOpenTrigger",
        {
            "sender_id": 12,
            "recipient_phone": PHONE,
            "replied_after": "2026-05-01T12:00:00+00:00",
            "autocalls_conn_id": "other_conn",
            "poke_interval": 7.0,
            "hook_kwargs": {},
        },
    )


def test_default_deferrable_comes_from_config(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    import airflow_provider_autocalls.sensors.autocalls as module

    monkeypatch.setenv("AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE", "True")
    try:
        assert (
            importlib.reload(module)
            .SessionOpenSensor(task_id="w", sender_id=1, recipient_phone=PHONE)
            .deferrable
        )
    finally:
        monkeypatch.delenv("AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE")
        importlib.reload(module)


def test_execute_complete_returns_the_status_or_raises_the_reported_error() -> None:
    status = {"session_status": {"is_open": True}}
    assert sensor().execute_complete({}, {"status": "success", "session_status": status}) == status
    auth = {"status": "error", "error_type": "AuthenticationError", "message": "bad key", "status_code": 401}
    with pytest.raises(AirflowFailException, match="AuthenticationError: .*bad key"):
        sensor().execute_complete({}, auth)
    server = {"status": "error", "error_type": "AutocallsServerError", "message": "down", "status_code": 503}
    with pytest.raises(AutocallsServerError) as err:
        sensor().execute_complete({}, server)
    assert err.value.status_code == 503


# -- in DAG runs: every mode, timeouts, nothing sent downstream after a timeout ----------------------------------


def customer_replies_after_first_check(sim: AutocallsSimulator, seconds: float) -> None:
    """The customer answers ``seconds`` after the sensor first found the window closed."""

    def reply() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(
            r["endpoint"] == "session_status" for r in sim.requests
        ):
            time.sleep(0.05)
        time.sleep(seconds)
        sim.customer_message(12, PHONE, "yes")

    threading.Thread(target=reply, daemon=True).start()


@pytest.mark.parametrize("mode", ["poke", "reschedule", "deferrable"])
def test_every_mode_waits_for_the_reply_then_follows_up(
    run_dag: Callable[..., Any], sim: AutocallsSimulator, mode: str
) -> None:
    args = "deferrable=True" if mode == "deferrable" else f"mode={mode!r}"
    dag = DAG_HEADER + (
        "with DAG(DAG_ID, schedule=None, start_date=START):\n"
        '    w = SessionOpenSensor(task_id="wait", sender_id=12, recipient_phone="+14155550123",\n'
        f"                          poke_interval=0.5, timeout=60, {args})\n"
        '    f = SendFreeformOperator(task_id="follow_up", sender_id=12, recipient_phone="+14155550123", message="hi")\n'
        '    w >> f >> task(collect)({"status": "{{ ti.xcom_pull(task_ids=\'wait\') | tojson }}"})\n'
    )
    customer_replies_after_first_check(sim, 1.0)
    result = run_dag(dag)
    assert result.state == "success"
    assert [m["kind"] for m in sim.delivered] == ["freeform"]
    assert '"is_open": true' in result.pulled["status"]  # the same XCom whatever the mode
    assert len([r for r in sim.requests if r["endpoint"] == "session_status"]) >= 2


@pytest.mark.parametrize(("soft_fail", "expected"), [(False, "failed"), (True, "skipped")])
@pytest.mark.parametrize("mode", ["poke", "reschedule"])
def test_timeout_ends_the_wait_and_nothing_is_sent(
    run_dag: Callable[..., Any], sim: AutocallsSimulator, mode: str, soft_fail: bool, expected: str
) -> None:
    args = f"mode={mode!r}"
    dag = DAG_HEADER + (
        "with DAG(DAG_ID, schedule=None, start_date=START):\n"
        '    w = SessionOpenSensor(task_id="wait", sender_id=12, recipient_phone="+14155550123",\n'
        f"                          poke_interval=0.3, timeout=1.5, soft_fail={soft_fail}, {args})\n"
        '    w >> SendFreeformOperator(task_id="follow_up", sender_id=12, recipient_phone="+14155550123", message="x")\n'
    )
    result = run_dag(dag)
    assert result.task_state("wait") == expected
    assert result.task_state("follow_up") in {"upstream_failed", "skipped"}
    assert sim.delivered == []


@pytest.mark.parametrize("soft_fail", [False, True])
def test_a_deferral_timeout_is_the_usual_sensor_failure(soft_fail: bool) -> None:
    """dag.test() runs triggers inline without their timeout; the triggerer's timeout arrives like this."""
    try:
        from airflow.sdk.bases.operator import TriggerFailureReason

        error: object = TriggerFailureReason.TRIGGER_TIMEOUT
        expected: type[BaseException] = AirflowSensorTimeout
    except ImportError:  # Airflow 2 reports every trigger failure alike
        from airflow.exceptions import TaskDeferralError

        error, expected = "Trigger/execution timeout", TaskDeferralError
    wait = sensor(deferrable=True, soft_fail=soft_fail)
    with pytest.raises(AirflowSkipException if soft_fail else expected):
        wait.resume_execution("__fail__", {"error": error}, {})


def test_deferrable_first_check_honours_soft_fail(sim: AutocallsSimulator) -> None:
    with pytest.raises(AirflowSkipException):
        sensor(deferrable=True, soft_fail=True, sender_id=999).execute({})
    with pytest.raises(AirflowFailException):
        sensor(deferrable=True, sender_id=999).execute({})


# -- replies on the API's clock ---------------------------------------------------------------------------------


def send_template_with_baseline(sim: AutocallsSimulator) -> dict[str, Any]:
    """What a send operator's XCom holds: the baseline read just before the send, then the send's answer."""
    from airflow_provider_autocalls.hooks.autocalls import AutocallsHook
    from airflow_provider_autocalls.sessions import REPLY_BASELINE_KEY, take_reply_baseline

    hook = AutocallsHook()
    baseline = take_reply_baseline(hook, 12, PHONE)
    answer = hook.send_template(12, 46, PHONE)
    return {**answer, "sent_at": datetime.now(UTC).isoformat(), REPLY_BASELINE_KEY: baseline}


@pytest.mark.parametrize("skew", [-300, 300], ids=["api_behind_by_5_min", "api_ahead_by_5_min"])
def test_with_five_minutes_of_skew_an_earlier_message_never_counts_and_a_reply_is_seen(
    sim: AutocallsSimulator, skew: int
) -> None:
    sim.skew(skew)
    sim.customer_message(12, PHONE, "an earlier message")
    sim.advance(2)  # the earlier message is in an earlier second than the send
    sent = send_template_with_baseline(sim)
    wait = sensor(reply_to=sent)
    assert wait.poke({}).is_done is False  # the window is open, but nobody answered yet
    sim.customer_message(12, PHONE, "the reply")
    assert wait.poke({}).is_done is True
    # What the worker's clock says is no help here: sent_at is minutes off the API's clock.
    worker_says = sensor(replied_after=sent["sent_at"]).poke({}).is_done
    assert worker_says is (skew > 0)  # ahead: the earlier message would count; behind: the reply is missed


def test_a_reply_in_the_same_second_as_the_send_is_seen(sim: AutocallsSimulator) -> None:
    for _ in range(5):
        sim.reset()
        sim.customer_message(12, PHONE, "an earlier message")
        sim.advance(1)
        while sim.now().microsecond > 200_000:  # start early in a second, so the reply stays in it
            time.sleep(0.01)
        sent = send_template_with_baseline(sim)
        sim.customer_message(12, PHONE, "the reply")
        [delivered] = sim.delivered
        if sim.now().isoformat()[:19] == delivered["at"][:19]:
            break
    else:
        pytest.fail("could not keep the send and the reply in one second")
    assert sensor(reply_to=sent).poke({}).is_done is True


def test_a_customer_who_never_wrote_before_the_send_replies(sim: AutocallsSimulator) -> None:
    sent = send_template_with_baseline(sim)
    assert sent["reply_baseline"] is None
    assert sensor(reply_to=sent).poke({}).is_done is False
    sim.customer_message(12, PHONE)
    assert sensor(reply_to=sent).poke({}).is_done is True


def test_reply_to_as_a_template_renders_it(sim: AutocallsSimulator) -> None:
    sent = send_template_with_baseline(sim)
    sim.customer_message(12, PHONE)
    assert sensor(reply_to=str(sent)).poke({}).is_done is True  # a dict rendered by Jinja


@pytest.mark.parametrize(
    ("reply_to", "match"),
    [
        ("", "reply_to: rendered as ''"),
        ("None", "reply_to: rendered as 'None'"),
        ({"sent_at": "2026-05-01T12:00:00+00:00"}, "reply_to: has no 'reply_baseline'"),
        ({"reply_baseline": "soon"}, r"reply_to\['reply_baseline'\]: 'soon' is not an ISO 8601"),
    ],
)
def test_a_reply_to_without_a_baseline_fails_before_any_request(
    sim: AutocallsSimulator, reply_to: Any, match: str
) -> None:
    with pytest.raises(AirflowFailException, match=match):
        sensor(reply_to=reply_to).poke({})
    assert sim.requests == []


def test_reply_to_and_replied_after_are_exclusive() -> None:
    with pytest.raises(ValueError, match="not both"):
        sensor(reply_to={}, replied_after="2026-05-01T12:00:00+00:00")


@pytest.mark.parametrize("rendered", ["", "  "])
def test_replied_after_that_renders_empty_is_an_error_not_no_reply_check(
    sim: AutocallsSimulator, rendered: str
) -> None:
    sim.customer_message(12, PHONE)  # the window is open: "no reply check" would succeed
    with pytest.raises(AirflowFailException, match="replied_after: rendered empty"):
        sensor(replied_after=rendered).poke({})
    assert sim.requests == []


@pytest.mark.parametrize("as_text", [True, False])
def test_a_naive_replied_after_is_read_in_the_default_timezone(
    sim: AutocallsSimulator, monkeypatch: pytest.MonkeyPatch, as_text: bool
) -> None:
    monkeypatch.setenv("AIRFLOW__CORE__DEFAULT_TIMEZONE", "Asia/Kolkata")  # UTC+05:30, no DST
    sim.customer_message(12, PHONE)
    local = (sim.now() + timedelta(hours=5, minutes=30)).replace(tzinfo=None)
    before, after = local - timedelta(minutes=1), local + timedelta(minutes=1)
    assert sensor(replied_after=before.isoformat() if as_text else before).poke({}).is_done is True
    # Read as UTC, "after" would be 5.5 hours earlier than the message, and count it as a reply.
    assert sensor(replied_after=after.isoformat() if as_text else after).poke({}).is_done is False


UNREADABLE = [
    (
        '{"success": true, "has_conversation": true, "last_customer_message_at": "yesterday", '
        '"session_status": {"is_open": true}}',
        "last_customer_message_at",
    ),
    (
        '{"success": true, "has_conversation": true, "last_customer_message_at": 1767225600, '
        '"session_status": {"is_open": true}}',
        "last_customer_message_at",
    ),
    ('{"success": true, "has_conversation": false, "session_status": {"is_open": "false"}}', "is_open"),
    ('{"success": true, "has_conversation": false, "session_status": {}}', "is_open"),
]


@pytest.mark.parametrize(("body", "field"), UNREADABLE)
def test_an_unreadable_status_field_is_a_typed_api_error_when_poked(
    sim: AutocallsSimulator, body: str, field: str
) -> None:
    sim.inject(Fault(endpoint="session_status", status=200, body=body))
    with pytest.raises(AirflowFailException, match=field) as failure:
        sensor(replied_after="2026-01-01T00:00:00+00:00").poke({})
    assert type(failure.value.__cause__) is AutocallsAPIError


@pytest.mark.parametrize("mode", ["poke", "reschedule", "deferrable"])
def test_an_unreadable_status_fails_the_sensor_in_every_mode(
    run_dag: Callable[..., Any], sim: AutocallsSimulator, mode: str
) -> None:
    body, _ = UNREADABLE[0]
    args = "deferrable=True" if mode == "deferrable" else f"mode={mode!r}"
    dag = DAG_HEADER + (
        "with DAG(DAG_ID, schedule=None, start_date=START):\n"
        '    SessionOpenSensor(task_id="wait", sender_id=12, recipient_phone="+14155550123",\n'
        '                      replied_after="2026-01-01T00:00:00+00:00",\n'
        f"                      poke_interval=0.3, timeout=30, {args})\n"
    )

    def unreadable_after_first_check() -> None:  # in deferrable mode, the trigger's checks get it
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not sim.requests:
            time.sleep(0.02)
        sim.inject(Fault(endpoint="session_status", status=200, body=body, count=100))

    threading.Thread(target=unreadable_after_first_check, daemon=True).start()
    started = time.monotonic()
    result = run_dag(dag)
    assert result.task_state("wait") == "failed"
    assert time.monotonic() - started < 25  # ended by the error, not by the timeout


@pytest.mark.parametrize(("soft_fail", "expected"), [(False, "failed"), (True, "skipped")])
def test_a_deferred_wait_ends_at_the_timeout_under_dag_test(
    run_dag: Callable[..., Any], sim: AutocallsSimulator, soft_fail: bool, expected: str
) -> None:
    dag = DAG_HEADER + (
        "with DAG(DAG_ID, schedule=None, start_date=START):\n"
        '    w = SessionOpenSensor(task_id="wait", sender_id=12, recipient_phone="+14155550123",\n'
        f"                          poke_interval=0.3, timeout=1.5, soft_fail={soft_fail}, deferrable=True)\n"
        '    w >> SendFreeformOperator(task_id="follow_up", sender_id=12, recipient_phone="+14155550123", message="x")\n'
    )
    # A wait that does not end by itself would poll forever under dag.test(): after 20 s, a refused
    # key ends it (as a failure this test tells apart by the time it took).
    stopper = threading.Timer(
        20, lambda: sim.inject(Fault(endpoint="session_status", status=401, count=10**6))
    )
    stopper.start()
    try:
        started = time.monotonic()
        result = run_dag(dag)
    finally:
        stopper.cancel()
    assert result.task_state("wait") == expected
    assert result.task_state("follow_up") in {"upstream_failed", "skipped"}
    assert sim.delivered == []
    assert time.monotonic() - started < 15


def test_a_timeout_event_is_the_usual_sensor_timeout() -> None:
    event = {"status": "timeout", "message": "Still not ready."}
    with pytest.raises(AirflowSensorTimeout):
        sensor(deferrable=True).execute_complete({}, event)
    with pytest.raises(AirflowSkipException):
        sensor(deferrable=True, soft_fail=True).execute_complete({}, event)
