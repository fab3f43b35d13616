"""The distributed run's DAG: two bulk sends and a mapped send over 50 recipients at once, one key."""

from __future__ import annotations

import pendulum
from airflow.providers.common.compat.sdk import DAG, task

from airflow_provider_autocalls.operators.autocalls import BulkSendTemplateOperator, SendTemplateOperator

with DAG(
    dag_id="e2e_autocalls_distributed",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    # prefix: digits that make this run's phone numbers its own; conn_id: the connection (and so the
    # limit: shared through Redis, or each process its own) every task of the run sends with.
    params={"prefix": "4100", "bulk_size": 100, "mapped_size": 50, "conn_id": "autocalls_shared"},
    max_active_tasks=16,
):

    @task
    def segment(group: str, size_param: str, params: dict | None = None) -> list[dict]:
        """One mapping per customer of ``group``; numbers are unique to the run and the group."""
        params = params or {}
        return [
            {
                "recipient_phone": f"+1{params['prefix']}{group}{i:05d}",
                "recipient_name": f"Customer {group}{i}",
                "variables": {"name": f"Customer {group}{i}", "date": "Monday", "time": "9:00"},
            }
            for i in range(int(params[size_param]))
        ]

    for group in ("1", "2"):
        BulkSendTemplateOperator(
            task_id=f"bulk_{group}",
            sender_id=12,
            template_id=45,
            recipients=segment.override(task_id=f"segment_{group}")(group, "bulk_size"),
            autocalls_conn_id="{{ params.conn_id }}",
        )

    SendTemplateOperator.partial(
        task_id="send_each",
        sender_id=12,
        template_id=45,
        autocalls_conn_id="{{ params.conn_id }}",
    ).expand_kwargs(segment.override(task_id="segment_3")("3", "mapped_size"))
