"""
The fault matrix (cells in tests/reliability/matrix.py): every endpoint by every fault, asserted
cell by cell, then a handful of the send faults again through the operators, in DAG runs with
``retries=3``.

The hook cells run together, once per module and in parallel (each against a simulator of its
own); each test then asserts its own cell. Every test records what it saw under
:data:`~tests.reliability.matrix.RECORD`, which ``scripts/reliability_table.py`` (``make
reliability``) turns into docs/reliability.md.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import pytest

from airflow_provider_autocalls.testing import AutocallsSimulator, Fault
from airflow_provider_autocalls.testing.simulator_models import ENDPOINTS as SIMULATOR_ENDPOINTS
from tests.conftest import DAG_HEADER
from tests.reliability.matrix import (
    CASES,
    CELLS,
    CONNECTION,
    DAG_CELLS,
    DAG_MAX_RETRIES,
    ENDPOINTS,
    KNOWN_ISSUES,
    MESSAGE,
    PHONE,
    RECORD,
    SENDER_ID,
    TEMPLATE_ID,
    TIMEOUT,
    UNKNOWN,
    Cell,
    DagCell,
    DagOutcome,
    Observed,
    refused_url,
    run_matrix,
)

RecordProperty = Callable[[str, object], None]

#: The faults the issue asks for, each of which must stay in the matrix.
REQUIRED_CASES = {
    "refused",
    "connect-timeout",
    "read-timeout",
    "dropped",
    "slow",
    "500",
    "502",
    "503",
    "504",
    "429-retry-after",
    "429-no-retry-after",
    "502-html",
    "200-html",
    "200-empty",
    "200-truncated",
    "200-wrong-shape-object",
    "200-success-false",
}


def test_the_matrix_covers_every_endpoint_and_every_fault() -> None:
    assert set(ENDPOINTS) == set(SIMULATOR_ENDPOINTS)
    ids = [case.id for case in CASES]
    assert len(ids) == len(set(ids))
    assert set(ids) >= REQUIRED_CASES
    assert {cell.id for cell in CELLS} == {f"{e}-{i}" for e in ENDPOINTS for i in ids}
    assert set(KNOWN_ISSUES) <= {(cell.endpoint, cell.case.id) for cell in CELLS}
    # At most once, in every cell's promise: a send never delivers twice, a read never delivers.
    for cell in CELLS:
        assert cell.expected.delivered <= (1 if cell.is_send else 0), cell.id


@pytest.fixture(scope="module")
def observed(request: pytest.FixtureRequest) -> dict[str, Observed]:
    """Run the cells this session selected, together, once."""
    module = sys.modules[__name__]
    cells: list[Cell] = []
    for item in request.session.items:
        if (
            isinstance(item, pytest.Function)
            and item.module is module
            and item.originalname == test_fault_matrix_cell.__name__
        ):
            cell = item.callspec.params["cell"]
            assert isinstance(cell, Cell)
            cells.append(cell)
    return run_matrix(cells)


@pytest.mark.parametrize("cell", CELLS, ids=[cell.id for cell in CELLS])
def test_fault_matrix_cell(
    cell: Cell, observed: dict[str, Observed], record_property: RecordProperty
) -> None:
    seen = observed[cell.id]
    record_property(RECORD, json.dumps({"id": cell.id, **asdict(seen)}))
    want = cell.asserted
    assert (seen.outcome, seen.detail) == (want.outcome, want.detail), seen.message
    assert (seen.requests, seen.attempts) == (want.requests, want.hook_attempts), seen.message
    assert seen.delivered == want.delivered
    assert seen.delivered <= 1
    assert not seen.key_leaked
    if seen.outcome == UNKNOWN:  # the error names the message in doubt and what to do
        assert PHONE in seen.message
        assert "dashboard" in seen.message
    if seen.outcome == CONNECTION:
        assert "nothing was sent" in seen.message


# -- through the operators, in DAG runs ---------------------------------------------------------------------


def dag_source(cell: DagCell) -> str:
    # The template check's read is left out: the cells count the send's own requests.
    what = (
        f"template_id={TEMPLATE_ID}, check_template=False"
        if cell.endpoint == "send_template"
        else f"message={MESSAGE!r}"
    )
    return DAG_HEADER + (
        'with DAG(DAG_ID, schedule=None, start_date=START, default_args={"retries": 3, "retry_delay": 0}):\n'
        f'    {cell.operator}(task_id="send", sender_id={SENDER_ID}, recipient_phone="{PHONE}", {what})\n'
    )


@pytest.mark.parametrize("cell", DAG_CELLS, ids=[cell.id for cell in DAG_CELLS])
def test_dag_run_cell(
    cell: DagCell,
    run_dag: Callable[..., Any],
    sim: AutocallsSimulator,
    make_conn: Callable[..., str],
    monkeypatch: pytest.MonkeyPatch,
    record_property: RecordProperty,
) -> None:
    extra = {"timeout": TIMEOUT, "max_retries": DAG_MAX_RETRIES}
    make_conn(**extra)
    if cell.network == "refused":
        conn = {"conn_type": "autocalls", "host": refused_url(), "password": sim.api_key, "extra": extra}
        monkeypatch.setenv("AIRFLOW_CONN_AUTOCALLS_DEFAULT", json.dumps(conn))
    if cell.endpoint == "send_freeform":
        sim.customer_message(SENDER_ID, PHONE)
    if cell.fault is not None:
        sim.inject(Fault(endpoint=cell.endpoint, **cell.fault))

    result = run_dag(dag_source(cell))
    seen = DagOutcome(result.state, tuple(result.tries["send"]), len(sim.requests), len(sim.delivered))
    record_property(RECORD, json.dumps({"id": cell.id, **asdict(seen)}))
    assert seen == cell.asserted
    assert seen.delivered <= 1
    assert all(r["endpoint"] == cell.endpoint for r in sim.requests)
