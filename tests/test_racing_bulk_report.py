"""
Two tries of one bulk send racing (test_racing_tries.py): the report and the summary must account
for each recipient once. Today a recipient that the other try claimed first gets a second row,
``skipped``, next to its ``sent`` row, and ``total`` counts it twice.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from airflow_provider_autocalls.testing import AutocallsSimulator
from tests.test_racing_tries import PHONES, prepare_race, race


def test_the_report_of_a_raced_bulk_send_has_each_recipient_once(
    tmp_path: Path, make_conn: Callable[..., str], sim: AutocallsSimulator
) -> None:
    prepare_race(make_conn, sim)
    for trial in range(3):
        outcomes = race("bulk", trial, str(tmp_path))
        assert [status for status, _ in outcomes] == ["ok", "ok"], outcomes
        summaries = [summary for _, summary in outcomes]
        rows = [json.loads(line) for line in Path(summaries[0]["report"]).read_text().splitlines()]
        assert Counter(r["recipient_phone"] for r in rows) == Counter(PHONES), (trial, rows)
        assert [s["total"] for s in summaries] == [len(PHONES)] * 2, (trial, summaries)
