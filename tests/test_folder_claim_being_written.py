"""
A claim in a folder ledger is created with ``O_EXCL`` and then written: for a moment it exists and
is empty. A racing try that reads it then must not take it for a claim torn by a crash (which
means "nothing was sent") and send again: the try that created it is about to send.

Found as a duplicate delivery in the two-racing-tries proof (tests/test_racing_tries.py, bulk,
Airflow 2.11.2: one recipient messaged twice in 1 of 20 trials, under load); reproduced here
without timing by holding a claim at that moment.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from airflow_provider_autocalls.ledger import ledger_for, phone_key
from airflow_provider_autocalls.operators.autocalls import SendTemplateOperator
from airflow_provider_autocalls.testing import AutocallsSimulator

PHONE = "+14155550000"


def context() -> Any:
    return {"ti": SimpleNamespace(dag_id="race", run_id="torn", task_id="one", map_index=-1, try_number=1)}


def test_a_claim_being_written_is_not_taken_for_a_torn_one(
    tmp_path: Path, make_conn: Callable[..., str], sim: AutocallsSimulator
) -> None:
    make_conn(max_retries=0, timeout=1)  # a fix that waits for the racing try's outcome waits ~6 s
    ledger = ledger_for(context(), str(tmp_path))
    assert ledger is not None
    ledger.store._prepare()  # type: ignore[attr-defined]
    # The racing try's claim, between its O_EXCL create and its write.
    claim = Path(ledger.store.folder) / f"{phone_key(PHONE)}.0.claim.json"  # type: ignore[attr-defined]
    os.close(os.open(claim, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
    with pytest.raises(Exception):  # noqa: B017, PT011 - any refusal will do; sending is what must not happen
        SendTemplateOperator(
            task_id="one", sender_id=12, template_id=46, recipient_phone=PHONE, ledger_location=str(tmp_path)
        ).execute(context())
    assert sim.delivered == []
