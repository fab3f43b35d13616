"""BulkSendTemplateOperator with the recipient files of issue 13: diagnosed before anything is sent."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException

from airflow_provider_autocalls.bulk import EmptySegmentError
from airflow_provider_autocalls.operators.autocalls import BulkSendTemplateOperator
from airflow_provider_autocalls.testing import AutocallsSimulator


@pytest.fixture(autouse=True)
def _connection(make_conn: Callable[..., str]) -> None:
    make_conn(max_retries=0)


def run(tmp_path: Path, name: str, content: str, **kwargs: Any) -> dict[str, Any]:
    path = tmp_path / name
    path.write_text(content)
    op = BulkSendTemplateOperator(
        task_id="bulk",
        sender_id=12,
        template_id=45,
        recipients_file=str(path),
        ledger_location=str(tmp_path),
        **kwargs,
    )
    context: Any = {"ti": SimpleNamespace(dag_id="d", run_id="r1", task_id="bulk", map_index=-1)}
    return op.execute(context)


def test_a_semicolon_csv_is_sent(tmp_path: Path, sim: AutocallsSimulator) -> None:
    content = "recipient_phone;variables.name;variables.date;variables.time\n+14155550100;Ada;Monday;10:00\n"
    assert run(tmp_path, "s.csv", content)["sent"] == 1
    assert sim.delivered[0]["text"] == "Hi Ada, your appointment is on Monday at 10:00."


def test_a_header_without_the_variables_prefix_fails_before_any_request(
    tmp_path: Path, sim: AutocallsSimulator
) -> None:
    with pytest.raises(
        AirflowFailException, match="has no recipient_phone column and has unknown columns 'name', 'date'"
    ):
        run(tmp_path, "seg.csv", "name,date\nAda,Monday\n")
    assert sim.requests == []


def test_a_json_array_file_is_sent(tmp_path: Path, sim: AutocallsSimulator) -> None:
    people = [
        {"recipient_phone": f"+1415555010{i}", "variables": {"name": f"n{i}", "date": "Mon", "time": "9"}}
        for i in range(3)
    ]
    assert run(tmp_path, "seg.json", json.dumps(people, indent=2))["sent"] == 3


@pytest.mark.parametrize(
    ("name", "content"), [("e.csv", ""), ("h.csv", "recipient_phone\n"), ("e.json", "[]")]
)
def test_an_empty_segment_fails_before_any_request(
    tmp_path: Path, sim: AutocallsSimulator, name: str, content: str
) -> None:
    with pytest.raises(AirflowFailException, match="has no recipient rows") as failure:
        run(tmp_path, name, content)
    assert isinstance(failure.value.__cause__, EmptySegmentError)
    assert sim.requests == []
