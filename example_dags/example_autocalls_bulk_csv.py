"""
Example 4: one template to a whole segment from a CSV an upstream task exported, in one task.

The bulk operator checks every row first, sends at the connection's rate limit, keeps a ledger so
a retry never messages anyone twice, and writes a per-recipient report next to the ledger.
"""

from __future__ import annotations

import csv
import tempfile
from pathlib import Path

import pendulum
from airflow.providers.common.compat.sdk import DAG, task

from airflow_provider_autocalls.operators.autocalls import BulkSendTemplateOperator

# [START howto_autocalls_bulk_csv]
with DAG(
    dag_id="example_autocalls_bulk_csv",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    params={"segment_size": 25, "date": "Monday"},
    tags=["example", "autocalls"],
):

    @task
    def export_segment(params: dict | None = None, run_id: str | None = None) -> str:
        """Stands in for a warehouse export (in production: an s3:// or gs:// URI)."""
        size = int((params or {}).get("segment_size", 25))
        path = Path(tempfile.gettempdir()) / f"autocalls-segment-{run_id}.csv".replace(":", "_")
        with path.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["recipient_phone", "recipient_name", "variables.name"])
            for i in range(size):
                writer.writerow([f"+1415556{i:04d}", f"Customer {i}", f"Customer {i}"])
        return str(path)

    # [START howto_operator_bulk_send_template]
    BulkSendTemplateOperator(
        task_id="send_reminders",
        sender_id=12,
        template_id=45,
        recipients_file=export_segment(),
        variables={"date": "{{ params.date }}", "time": "10:00"},
        on_invalid_row="skip",
        max_failures=0.05,
    )
    # [END howto_operator_bulk_send_template]
# [END howto_autocalls_bulk_csv]
