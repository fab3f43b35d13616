"""
Example 1: an ETL job that tells the on-call phone how it went.

The notifier runs as the task's callback: free text when the on-call person's 24-hour window is
open, else an approved template: 46 ("Your data is ready.") on success, 49 ("Pipeline {{1}} failed.
Please check Airflow.") on failure.
"""

from __future__ import annotations

import pendulum
from airflow.providers.common.compat.sdk import DAG, task

from airflow_provider_autocalls.notifications.autocalls import send_autocalls_notification

ON_CALL_PHONE = "+14155550100"

# [START howto_notifier_autocalls]
with DAG(
    dag_id="example_autocalls_etl_notify",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["example", "autocalls"],
):

    @task(
        on_success_callback=send_autocalls_notification(
            sender_id=12,
            recipient_phone=ON_CALL_PHONE,
            message="{{ dag.dag_id }}: {{ ti.task_id }} loaded {{ ti.xcom_pull(task_ids=ti.task_id) }} rows.",
            template_id=46,
        ),
        on_failure_callback=send_autocalls_notification(
            sender_id=12,
            recipient_phone=ON_CALL_PHONE,
            message="{{ dag.dag_id }}: {{ ti.task_id }} failed. Logs: {{ ti.log_url }}",
            template_id=49,
            variables={"pipeline": "{{ dag.dag_id }}"},
        ),
    )
    def load_orders() -> int:
        return 1042

    load_orders()
# [END howto_notifier_autocalls]
