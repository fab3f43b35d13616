"""Example 3: one template to each customer of a segment, with dynamic task mapping."""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.providers.common.compat.sdk import DAG, task

from airflow_provider_autocalls.operators.autocalls import SendTemplateOperator

# [START howto_autocalls_segment]
with DAG(
    dag_id="example_autocalls_segment",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    params={"segment_size": 3},
    tags=["example", "autocalls"],
):

    @task
    def customers_in_segment(params: dict | None = None) -> list[dict]:
        """Stands in for a warehouse query: one mapping per customer."""
        size = int((params or {}).get("segment_size", 3))
        return [
            {
                "recipient_phone": f"+1415555{i:04d}",
                "recipient_name": f"Customer {i}",
                "variables": {"name": f"Customer {i}", "date": "Monday", "time": f"{9 + i % 8}:00"},
            }
            for i in range(size)
        ]

    SendTemplateOperator.partial(
        task_id="send_offer",
        sender_id=12,
        template_id=45,
        # Mapped tasks on many workers each pace on their own unless [autocalls] rate_limit_backend
        # shares one limit: a read still refused with 429 after the hook's retries is retried by
        # Airflow. A retry never sends twice: the ledger holds each task instance's message.
        retries=2,
        retry_delay=timedelta(seconds=5),
        # Values given here are shared; each mapping adds its own phone, name and variables.
    ).expand_kwargs(customers_in_segment())
# [END howto_autocalls_segment]
