"""SendMessageOperator: free text while the window is open, else the fallback template, once."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException, AirflowSkipException

from airflow_provider_autocalls.operators.autocalls import SendMessageOperator
from airflow_provider_autocalls.testing import AutocallsSimulator, Fault

PHONE = "+14155550123"
EXPIRED = '{"success": false, "error": "window closed", "error_code": "SESSION_EXPIRED"}'


@pytest.fixture(autouse=True)
def _connection(make_conn: Callable[..., str]) -> None:
    make_conn(max_retries=0)


def context(try_number: int = 1) -> Any:
    return {"ti": SimpleNamespace(dag_id="d", run_id="r", task_id="msg", map_index=-1, try_number=try_number)}


def op(tmp_path: Path, **kwargs: Any) -> SendMessageOperator:
    defaults: dict[str, Any] = {
        "task_id": "msg",
        "sender_id": 12,
        "recipient_phone": PHONE,
        "message": "Your order shipped.",
        "fallback_template_id": 45,
        "fallback_variables": {"name": "Ada", "date": "Monday", "time": "10:00"},
        "ledger_location": str(tmp_path),
    }
    return SendMessageOperator(**{**defaults, **kwargs})


def test_an_open_window_gets_free_text(tmp_path: Path, sim: AutocallsSimulator) -> None:
    sim.customer_message(12, PHONE, "hi")
    xcom = op(tmp_path).execute(context())
    assert [m["kind"] for m in sim.delivered] == ["freeform"]
    assert xcom["kind"] == "freeform"
    assert "template_id" not in xcom
    assert xcom["reply_baseline"] is not None
    assert xcom["message_sid"] == sim.delivered[0]["message_sid"]


def test_a_closed_window_gets_the_fallback_template(tmp_path: Path, sim: AutocallsSimulator) -> None:
    xcom = op(tmp_path).execute(context())
    assert [(m["kind"], m["template_id"]) for m in sim.delivered] == [("template", 45)]
    assert (xcom["kind"], xcom["template_id"]) == ("template", 45)
    assert xcom["reply_baseline"] is None  # the customer never wrote


def test_a_window_closing_before_the_send_falls_back_in_the_same_try(
    tmp_path: Path, sim: AutocallsSimulator
) -> None:
    sim.customer_message(12, PHONE, "hi")
    sim.inject(Fault(endpoint="send_freeform", status=403, body=EXPIRED))  # closed after the check
    xcom = op(tmp_path).execute(context())
    assert [m["kind"] for m in sim.delivered] == ["template"]
    assert (xcom["kind"], xcom["template_id"]) == ("template", 45)
    # A later try returns the same XCom and sends nothing.
    assert op(tmp_path).execute(context(2)) == xcom
    assert len(sim.delivered) == 1


@pytest.mark.parametrize(
    ("if_closed", "error"), [("skip", AirflowSkipException), ("fail", AirflowFailException)]
)
def test_a_closed_window_without_a_fallback_sends_nothing(
    tmp_path: Path, sim: AutocallsSimulator, if_closed: str, error: type[BaseException]
) -> None:
    with pytest.raises(error, match="window .* is closed"):
        op(tmp_path, fallback_template_id=None, if_session_closed=if_closed).execute(context())
    assert sim.delivered == []
    assert [r["endpoint"] for r in sim.requests] == ["session_status"]


def test_a_fallback_that_does_not_fit_its_template_is_refused_before_anything_is_sent(
    tmp_path: Path, sim: AutocallsSimulator
) -> None:
    with pytest.raises(AirflowFailException, match="fallback_variables"):
        op(tmp_path, fallback_variables={"name": "Ada"}).execute(context())  # date and time missing
    assert [r["endpoint"] for r in sim.requests] == ["templates"]


def test_bad_input_costs_no_request(tmp_path: Path, sim: AutocallsSimulator) -> None:
    with pytest.raises(AirflowFailException, match="message"):
        op(tmp_path, message="   ").execute(context())
    assert sim.requests == []
