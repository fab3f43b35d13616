"""AutocallsNotifier: rendering with the callback context, free text or template, sync and async."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from airflow_provider_autocalls.exceptions import AutocallsValidationError, SessionExpiredError
from airflow_provider_autocalls.notifications.autocalls import AutocallsNotifier, send_autocalls_notification
from airflow_provider_autocalls.testing import AutocallsSimulator, Fault

PHONE = "+14155550100"


def context(**values: object) -> Any:
    """A callback context; Airflow 2's notifier wants the DAG in it."""
    from airflow.providers.common.compat.sdk import DAG

    return {"dag": DAG("notified", schedule=None), **values}


@pytest.fixture(autouse=True)
def _connection(make_conn: Callable[..., str]) -> None:
    make_conn()


def test_the_functional_alias() -> None:
    assert send_autocalls_notification is AutocallsNotifier


def test_needs_a_message_or_a_template() -> None:
    with pytest.raises(ValueError, match="message, a template_id, or both"):
        AutocallsNotifier(sender_id=12, recipient_phone=PHONE)


def test_free_text_rendered_with_the_context_when_the_window_is_open(sim: AutocallsSimulator) -> None:
    sim.customer_message(12, PHONE)
    notifier = AutocallsNotifier(
        sender_id="{{ params.sender }}",
        recipient_phone="{{ params.phone }}",
        message="{{ dag_id }} failed on {{ ds }}",
        template_id=46,
    )
    notifier(context(params={"sender": 12, "phone": PHONE}, dag_id="etl", ds="2026-05-01"))
    assert [(m["kind"], m["text"]) for m in sim.delivered] == [("freeform", "etl failed on 2026-05-01")]


def test_falls_back_to_the_template_when_the_window_is_closed(sim: AutocallsSimulator) -> None:
    AutocallsNotifier(sender_id=12, recipient_phone=PHONE, message="done", template_id=46)(context())
    assert [(m["kind"], m["template_id"]) for m in sim.delivered] == [("template", 46)]
    # The templates once (the check), the status (the window decision), then only the template.
    assert [r["endpoint"] for r in sim.requests] == ["templates", "session_status", "send_template"]


@pytest.mark.parametrize("run", ["sync", "async"])
def test_a_window_that_closes_between_the_check_and_the_send_gets_the_template(
    sim: AutocallsSimulator, run: str
) -> None:
    sim.customer_message(12, PHONE)
    expired = '{"success": false, "error": "closed", "error_code": "SESSION_EXPIRED", "session_status": {"is_open": false}}'
    sim.inject(Fault(endpoint="send_freeform", status=403, body=expired))
    notifier = AutocallsNotifier(sender_id=12, recipient_phone=PHONE, message="done", template_id=46)
    if run == "sync":
        notifier.notify(context())
    else:
        asyncio.run(notifier.async_notify({}))
    assert [(m["kind"], m["template_id"]) for m in sim.delivered] == [("template", 46)]
    assert [r["endpoint"] for r in sim.requests][-2:] == ["send_freeform", "send_template"]


@pytest.mark.parametrize("run", ["sync", "async"])
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (
            {"template_id": 99},
            r"template_id: sender 12 has no template 99; its templates: 45 'appointment_reminder'",
        ),
        (
            {"template_id": 47, "variables": {"name": "Ada"}},
            r"template_id: template 47 'promo_pending' \(pending\)",
        ),
        (
            {"template_id": 45, "variables": {"name": "Ada", "date": "Mon", "tme": "10:00"}},
            r"unknown variable 'tme'",
        ),
        ({"template_id": 45, "variables": {"1": "Ada", "2": "Mon", "4": "10:00"}}, r"unknown variable '4'"),
        ({"template_id": 45, "variables": {"name": "Ada", "date": "Mon"}}, r"no value for variable 3=time"),
    ],
)
def test_a_template_that_cannot_fit_fails_before_any_send(
    sim: AutocallsSimulator, kwargs: dict[str, Any], match: str, run: str
) -> None:
    notifier = AutocallsNotifier(sender_id=12, recipient_phone=PHONE, message="done", **kwargs)
    send = (
        (lambda: notifier.notify(context()))
        if run == "sync"
        else lambda: asyncio.run(notifier.async_notify({}))
    )
    with pytest.raises(AutocallsValidationError, match=match) as error:
        send()
    assert [r["endpoint"] for r in sim.requests] == ["templates"]  # one read, no send
    if kwargs["template_id"] == 45:
        assert "variables 1=name, 2=date, 3=time" in str(error.value)


def test_the_template_check_can_be_turned_off(sim: AutocallsSimulator) -> None:
    notifier = AutocallsNotifier(
        sender_id=12, recipient_phone=PHONE, template_id=46, variables=None, check_template=False
    )
    notifier.notify(context())
    assert [r["endpoint"] for r in sim.requests] == ["send_template"]


def test_a_template_only_notifier(sim: AutocallsSimulator) -> None:
    AutocallsNotifier(
        sender_id=12, recipient_phone=PHONE, template_id=45, variables={"1": "{{ ds }}", "2": "b", "3": "c"}
    )(context(ds="2026-05-01"))
    assert sim.delivered[0]["variables"]["1"] == "2026-05-01"


def test_free_text_only_fails_loudly_when_the_window_is_closed(sim: AutocallsSimulator) -> None:
    notifier = AutocallsNotifier(sender_id=12, recipient_phone=PHONE, message="done")
    with pytest.raises(SessionExpiredError):
        notifier.notify(context())
    assert sim.delivered == []


def test_async_notify(sim: AutocallsSimulator) -> None:
    notifier = AutocallsNotifier(sender_id=12, recipient_phone=PHONE, message="late", template_id=46)
    asyncio.run(notifier.async_notify({}))
    sim.customer_message(12, PHONE)
    asyncio.run(notifier.async_notify({}))
    assert [m["kind"] for m in sim.delivered] == ["template", "freeform"]


def test_in_a_dag_run_as_a_callback(run_dag: Callable[..., object], sim: AutocallsSimulator) -> None:
    from tests.conftest import DAG_HEADER

    dag = DAG_HEADER + (
        "from airflow_provider_autocalls.notifications.autocalls import send_autocalls_notification\n"
        "def boom():\n"
        "    raise ValueError('boom')\n"
        "with DAG(DAG_ID, schedule=None, start_date=START):\n"
        "    task(boom, task_id='load', on_failure_callback=send_autocalls_notification(\n"
        "        sender_id=12, recipient_phone='+14155550100', template_id=46,\n"
        "        message='{{ ti.task_id }} failed'))()\n"
    )
    result = run_dag(dag)
    assert result.state == "failed"  # type: ignore[attr-defined]
    assert [m["template_id"] for m in sim.delivered] == [46]
