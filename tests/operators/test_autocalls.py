"""Send operators: templating, XCom, at-most-once error handling, mapping; unit and in DAG runs."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException, AirflowSkipException

from airflow_provider_autocalls.exceptions import (
    AutocallsConnectionError,
    InsufficientBalanceError,
    RateLimitError,
    SenderOfflineError,
)
from airflow_provider_autocalls.operators.autocalls import (
    BulkSendTemplateOperator,
    SendFreeformOperator,
    SendTemplateOperator,
)
from airflow_provider_autocalls.testing import AutocallsSimulator, Fault
from tests.conftest import DAG_HEADER

PHONE = "+14155550123"


@pytest.fixture(autouse=True)
def _connection(make_conn: Callable[..., str]) -> None:
    make_conn(max_retries=0)


def template_op(**kwargs: Any) -> SendTemplateOperator:
    return SendTemplateOperator(
        **{"task_id": "send", "sender_id": 12, "template_id": 46, "recipient_phone": PHONE, **kwargs}
    )


def freeform_op(**kwargs: Any) -> SendFreeformOperator:
    return SendFreeformOperator(
        **{"task_id": "send", "sender_id": 12, "recipient_phone": PHONE, "message": "hello", **kwargs}
    )


def offline(status: int) -> Fault:
    return Fault(
        status=status, body=json.dumps({"success": False, "error": "Offline", "error_code": "SENDER_OFFLINE"})
    )


# -- declaration -----------------------------------------------------------------------------------------


def test_every_user_argument_is_templated_and_nothing_is_read_from_files() -> None:
    assert set(SendTemplateOperator.template_fields) == {
        "sender_id",
        "template_id",
        "recipient_phone",
        "recipient_name",
        "variables",
        "autocalls_conn_id",
        "ledger_location",
    }
    assert set(SendFreeformOperator.template_fields) == {
        "sender_id",
        "recipient_phone",
        "message",
        "autocalls_conn_id",
        "ledger_location",
    }
    assert "ledger_location" in BulkSendTemplateOperator.template_fields
    assert not SendTemplateOperator.template_ext
    assert not SendFreeformOperator.template_ext


def test_construction_accepts_unrendered_jinja_and_checks_nothing_yet(sim: AutocallsSimulator) -> None:
    op = template_op(sender_id="{{ params.sender }}", recipient_phone="{{ params.phone }}")
    assert op.sender_id == "{{ params.sender }}"
    assert "hook" not in op.__dict__
    assert sim.requests == []


def test_if_session_closed_must_be_fail_or_skip() -> None:
    with pytest.raises(ValueError, match="'fail' or 'skip'"):
        freeform_op(if_session_closed="ignore")


# -- execute ------------------------------------------------------------------------------------------------


def test_send_template_returns_the_answer_with_sent_at_and_the_request(sim: AutocallsSimulator) -> None:
    result = template_op(sender_id="12", template_id="46").execute({})
    [delivered] = sim.delivered
    assert result["message_sid"] == delivered["message_sid"]
    assert (result["sender_id"], result["template_id"], result["recipient_phone"]) == ("12", "46", PHONE)
    assert result["sent_at"] <= delivered["at"]
    assert result["sent_at"].endswith("+00:00")
    json.dumps(result)  # XCom-safe


def test_send_freeform_in_an_open_window(sim: AutocallsSimulator) -> None:
    sim.customer_message(12, PHONE)
    result = freeform_op(message="report.txt").execute({})
    assert result["session_status"]["is_open"] is True
    assert [m["text"] for m in sim.delivered] == ["report.txt"]


def test_closed_window_fails_with_advice_and_sends_nothing(sim: AutocallsSimulator) -> None:
    with pytest.raises(AirflowFailException, match=rf"window with \{PHONE} is closed.*Send a template first"):
        freeform_op().execute({})
    assert sim.delivered == []


def test_closed_window_can_skip_instead(sim: AutocallsSimulator) -> None:
    with pytest.raises(AirflowSkipException, match="nothing was sent"):
        freeform_op(if_session_closed="skip").execute({})
    assert sim.delivered == []


@pytest.mark.parametrize(
    ("op", "fault", "match"),
    [
        (template_op(sender_id="abc"), None, "sender_id"),
        (template_op(recipient_phone="+1 415 555 0123"), None, "E.164"),
        # Refused by the template check, before any send ...
        (template_op(template_id=47), None, "47 'promo_pending' .* is not approved"),
        (template_op(template_id=999), None, "sender 12 has no template 999"),
        (template_op(variables={"1": "x"}), None, "variables"),
        # ... and by the API, unchecked.
        (template_op(template_id=47, check_template=False), None, "TemplateNotApprovedError"),
        (template_op(template_id=999, check_template=False), None, "NotFoundError"),
        (template_op(), Fault(status=401, body='{"message": "Unauthenticated."}'), "AuthenticationError"),
        (
            template_op(),
            Fault(
                endpoint="send_template",
                status=422,
                body='{"success": false, "error": "bad", "error_code": "INVALID_PHONE"}',
            ),
            "InvalidPhoneError",
        ),
        (template_op(), Fault(endpoint="send_template", process=True, drop=True), "may have been delivered"),
        (template_op(), Fault(endpoint="send_template", status=502), "SendOutcomeUnknownError"),
    ],
    ids=[
        "validation",
        "phone",
        "not-approved",
        "not-found",
        "mismatch",
        "not-approved-unchecked",
        "not-found-unchecked",
        "auth",
        "invalid-phone",
        "dropped",
        "5xx",
    ],
)
def test_errors_no_retry_can_fix_fail_the_task_at_once(
    sim: AutocallsSimulator, op: SendTemplateOperator, fault: Fault | None, match: str
) -> None:
    if fault:
        sim.inject(fault)
    with pytest.raises(AirflowFailException, match=match) as err:
        op.execute({})
    assert err.value.__cause__ is not None


@pytest.mark.parametrize(
    ("fault", "balance", "cls"),
    [
        (offline(422), None, SenderOfflineError),
        (None, 0, InsufficientBalanceError),
        (Fault(status=429, headers={"Retry-After": "0.1"}), None, RateLimitError),
    ],
    ids=["sender-offline", "balance", "rate-limit"],
)
def test_errors_that_may_pass_are_left_to_airflow_retries(
    sim: AutocallsSimulator, fault: Fault | None, balance: int | None, cls: type
) -> None:
    if fault:
        sim.inject(fault)
    sim.balance = balance
    with pytest.raises(cls):
        template_op().execute({})
    assert sim.delivered == []


def test_an_unreachable_api_is_left_to_airflow_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_AUTOCALLS_DEFAULT",
        json.dumps(
            {
                "conn_type": "autocalls",
                "host": "http://127.0.0.1:9/api",
                "password": "k",
                "extra": {"max_retries": 0},
            }
        ),
    )
    with pytest.raises(AutocallsConnectionError):
        template_op().execute({})


# -- in DAG runs ---------------------------------------------------------------------------------------------

TEMPLATED_DAG = (
    DAG_HEADER
    + """
with DAG(DAG_ID, schedule=None, start_date=START, params={"sender": 12, "phone": "+14155550123", "name": "Ada"}):
    send = SendTemplateOperator(
        task_id="send",
        sender_id="{{ params.sender }}",
        template_id="{{ 40 + 5 }}",
        recipient_phone="{{ params.phone }}",
        recipient_name="{{ params.name }}",
        variables={"name": "{{ params.name }}", "2": "{{ ds }}", "time": "9:00"},
    )
    after = task(collect)({"sent": "{{ ti.xcom_pull(task_ids='send') | tojson }}",
                           "sent_at": "{{ ti.xcom_pull(task_ids='send')['sent_at'] }}"})
    send >> after
"""
)


def test_templated_send_in_a_dag_run(run_dag: Callable[..., Any], sim: AutocallsSimulator) -> None:
    result = run_dag(TEMPLATED_DAG)
    assert result.state == "success"
    [delivered] = sim.delivered
    assert delivered["text"].startswith("Hi Ada, your appointment is on 20")
    sent = json.loads(result.pulled["sent"])
    assert sent["message_sid"] == delivered["message_sid"]
    assert sent["template_id"] == "45"
    assert result.pulled["sent_at"] == sent["sent_at"]


def test_a_message_ending_in_txt_is_sent_as_text(
    run_dag: Callable[..., Any], sim: AutocallsSimulator
) -> None:
    sim.customer_message(12, PHONE)
    dag = DAG_HEADER + (
        "with DAG(DAG_ID, schedule=None, start_date=START):\n"
        '    SendFreeformOperator(task_id="send", sender_id=12, recipient_phone="+14155550123", message="report.txt")\n'
    )
    assert run_dag(dag).state == "success"
    assert [m["text"] for m in sim.delivered] == ["report.txt"]


def test_a_send_in_doubt_fails_without_airflow_retries(
    run_dag: Callable[..., Any], sim: AutocallsSimulator
) -> None:
    sim.inject(Fault(endpoint="send_template", process=True, drop=True))
    dag = DAG_HEADER + (
        'with DAG(DAG_ID, schedule=None, start_date=START, default_args={"retries": 3, "retry_delay": 0}):\n'
        '    SendTemplateOperator(task_id="send", sender_id=12, template_id=46, recipient_phone="+14155550123",\n'
        "        check_template=False)\n"
    )
    result = run_dag(dag)
    assert result.state == "failed"
    assert result.tries["send"] == [("failed", 1)]
    assert len(sim.requests) == 1
    assert len(sim.delivered) == 1


def test_a_passing_error_uses_airflow_retries(run_dag: Callable[..., Any], sim: AutocallsSimulator) -> None:
    sim.inject(offline(422))
    dag = DAG_HEADER + (
        'with DAG(DAG_ID, schedule=None, start_date=START, default_args={"retries": 3, "retry_delay": 0}):\n'
        '    SendTemplateOperator(task_id="send", sender_id=12, template_id=46, recipient_phone="+14155550123")\n'
    )
    result = run_dag(dag)
    assert result.state == "success"
    assert result.tries["send"] == [("success", 2)]
    assert len(sim.delivered) == 1


def test_skip_when_the_window_is_closed_skips_downstream(
    run_dag: Callable[..., Any], sim: AutocallsSimulator
) -> None:
    dag = DAG_HEADER + (
        "with DAG(DAG_ID, schedule=None, start_date=START):\n"
        '    s = SendFreeformOperator(task_id="send", sender_id=12, recipient_phone="+14155550123",\n'
        '                             message="hi", if_session_closed="skip")\n'
        '    s >> task(collect)({"after": "ran"})\n'
    )
    result = run_dag(dag)
    assert result.task_state("send") == "skipped"
    assert result.task_state("collect") == "skipped"
    assert sim.delivered == []


def test_mapping_over_phones_and_over_kwargs(run_dag: Callable[..., Any], sim: AutocallsSimulator) -> None:
    dag = DAG_HEADER + (
        "with DAG(DAG_ID, schedule=None, start_date=START):\n"
        '    SendTemplateOperator.partial(task_id="by_phone", sender_id=12, template_id=46).expand(\n'
        '        recipient_phone=["+14155550001", "+14155550002", "+14155550003"])\n'
        '    SendTemplateOperator.partial(task_id="by_kwargs", sender_id=12, template_id=45).expand_kwargs([\n'
        '        {"recipient_phone": "+14155550004", "variables": {"1": "A", "2": "B", "3": "C"}},\n'
        '        {"recipient_phone": "+14155550005", "recipient_name": "E", "variables": {"1": "D", "2": "E", "3": "F"}},\n'
        "    ])\n"
    )
    result = run_dag(dag)
    assert result.state == "success"
    assert len(result.tries["by_phone"]) == 3
    assert len(result.tries["by_kwargs"]) == 2
    phones = sorted(m["recipient_phone"] for m in sim.delivered)
    assert phones == [f"+1415555000{i}" for i in range(1, 6)]
