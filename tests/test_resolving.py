"""Resolving outcomes: resend_failed, and releasing messages in doubt by hand (Python and CLI)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException

from airflow_provider_autocalls.cli import main as ledger_cli
from airflow_provider_autocalls.ledger.release import ledger_entries, release_unknown
from airflow_provider_autocalls.operators.autocalls import BulkSendTemplateOperator, SendTemplateOperator
from airflow_provider_autocalls.testing import AutocallsSimulator, Fault

MISMATCH = '{"success": false, "error": "bad", "error_code": "TEMPLATE_MISMATCH"}'
PHONES = [f"+1415555{i:04d}" for i in range(4)]


def context(task_id: str = "bulk", try_number: int = 1) -> Any:
    return {
        "ti": SimpleNamespace(dag_id="d", run_id="r1", task_id=task_id, map_index=-1, try_number=try_number)
    }


@pytest.fixture(autouse=True)
def _connection(make_conn: Callable[..., str]) -> None:
    make_conn(max_retries=0)


def bulk(tmp_path: Path, **kwargs: Any) -> BulkSendTemplateOperator:
    return BulkSendTemplateOperator(
        task_id="bulk",
        sender_id=12,
        template_id=46,
        recipients=[{"recipient_phone": p} for p in PHONES],
        ledger_location=str(tmp_path),
        max_in_flight=1,  # the injected faults meet the rows they are meant for
        **kwargs,
    )


def report(summary: dict[str, Any]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(summary["report"]).read_text().splitlines()]


def test_resend_failed_sends_again_to_definite_refusals_only(tmp_path: Path, sim: AutocallsSimulator) -> None:
    sim.inject(Fault(endpoint="send_template", status=422, body=MISMATCH))  # row 1: failed
    sim.inject(Fault(endpoint="send_template", process=True, drop=True))  # row 2: unknown
    first = bulk(tmp_path).execute(context())
    assert (first["sent"], first["failed"], first["unknown"]) == (2, 1, 1)
    again = bulk(tmp_path).execute(context(try_number=2))
    assert again["this_try"]["sent"] == 0  # by default a failed row stays failed
    resent = bulk(tmp_path, resend_failed=True).execute(context(try_number=3))
    assert resent["this_try"] == {
        "sent": 1,
        "failed": 0,
        "unknown": 0,
        "skipped": 0,
        "claimed_by_another_try": 0,
    }
    assert (resent["sent"], resent["failed"], resent["unknown"]) == (3, 0, 1)
    delivered = [m["recipient_phone"] for m in sim.delivered]
    assert sorted(delivered) == sorted(PHONES)  # the unknown one went out once, and was not resent
    rows = {r["recipient_phone"]: r for r in report(resent)}
    assert rows[PHONES[0]]["try_number"] == 3  # the report says which try did what
    assert rows[PHONES[1]]["status"] == "unknown"
    assert rows[PHONES[2]]["try_number"] == 1


def test_a_released_unknown_recipient_is_sent_by_the_next_try(
    tmp_path: Path, sim: AutocallsSimulator
) -> None:
    sim.inject(Fault(endpoint="send_template", drop=True))  # dropped before the API acted: not delivered
    first = bulk(tmp_path).execute(context())
    assert first["unknown"] == 1
    assert len(sim.delivered) == 3
    # A person checks the dashboard: the message to PHONES[0] never arrived.
    released = release_unknown(
        "d", "r1", "bulk", ledger_location=str(tmp_path), by="ops", reason="not in the dashboard"
    )
    assert released == [PHONES[0]]
    assert release_unknown("d", "r1", "bulk", ledger_location=str(tmp_path)) == []  # nothing left in doubt
    second = bulk(tmp_path).execute(context(try_number=2))
    assert second["this_try"]["sent"] == 1
    assert (second["sent"], second["unknown"]) == (4, 0)
    assert sorted(m["recipient_phone"] for m in sim.delivered) == sorted(PHONES)


def test_a_single_send_in_doubt_can_be_released(tmp_path: Path, sim: AutocallsSimulator) -> None:
    def op() -> SendTemplateOperator:
        return SendTemplateOperator(
            task_id="one",
            sender_id=12,
            template_id=46,
            recipient_phone=PHONES[0],
            ledger_location=str(tmp_path),
        )

    sim.inject(Fault(endpoint="send_template", drop=True))
    with pytest.raises(AirflowFailException):
        op().execute(context("one"))
    with pytest.raises(AirflowFailException, match="release-unknown"):
        op().execute(context("one", 2))
    assert release_unknown("d", "r1", "one", recipients=[PHONES[0]], ledger_location=str(tmp_path)) == [
        PHONES[0]
    ]
    op().execute(context("one", 3))
    assert len(sim.delivered) == 1


def test_a_sent_message_is_never_released(tmp_path: Path, sim: AutocallsSimulator) -> None:
    bulk(tmp_path).execute(context())
    assert release_unknown("d", "r1", "bulk", ledger_location=str(tmp_path)) == []
    bulk(tmp_path).execute(context(try_number=2))
    assert len(sim.delivered) == 4


def test_the_command_line_shows_and_releases(
    tmp_path: Path, sim: AutocallsSimulator, capsys: pytest.CaptureFixture[str]
) -> None:
    sim.inject(Fault(endpoint="send_template", drop=True))
    bulk(tmp_path).execute(context())
    where = ["--dag-id", "d", "--run-id", "r1", "--task-id", "bulk", "--ledger-location", str(tmp_path)]
    ledger_cli(["show-ledger", *where])
    listed = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert sorted((r["recipient"], r["state"]) for r in listed) == sorted(
        [(PHONES[0], "unknown")] + [(p, "sent") for p in PHONES[1:]]
    )
    ledger_cli(["release-unknown", *where, "--recipient", PHONES[0]])
    assert f"Released 1 message(s): {PHONES[0]}" in capsys.readouterr().out
    assert [e.state.value for e in ledger_entries("d", "r1", "bulk", -1, str(tmp_path))].count(
        "released"
    ) == 1


def test_airflow_cli_has_the_commands_on_airflow_3(tmp_path: Path, sim: AutocallsSimulator) -> None:
    from airflow.providers.common.compat.version_compat import AIRFLOW_V_3_0_PLUS

    if not AIRFLOW_V_3_0_PLUS:
        pytest.skip("Airflow 2 lets providers add no CLI command: autocalls-ledger serves there")
    sim.inject(Fault(endpoint="send_template", drop=True))
    bulk(tmp_path).execute(context())
    airflow = os.path.join(os.path.dirname(sys.executable), "airflow")
    where = ["--dag-id", "d", "--run-id", "r1", "--task-id", "bulk", "--ledger-location", str(tmp_path)]
    done = subprocess.run(
        [airflow, "autocalls", "release-unknown", *where],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert f"Released 1 message(s): {PHONES[0]}" in done.stdout
