"""
Example 5: TaskFlow. A ``@task`` that calls the hook directly, with Airflow retries.

Inside a running task the hook keeps the task instance's ledger itself: a later try of the task
(after the failure below, or a clear) gets the first try's answers back without messaging anyone
again, and a send whose outcome is unknown fails the task without retries. Sending the same
content to the same recipient twice within one try still sends twice.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.providers.common.compat.sdk import dag, get_current_context, task

from airflow_provider_autocalls.hooks.autocalls import AutocallsHook


# [START howto_hook_taskflow_autocalls]
@dag(
    dag_id="example_autocalls_taskflow",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["example", "autocalls"],
)
def example_autocalls_taskflow() -> None:
    @task(retries=2, retry_delay=timedelta(seconds=1))
    def remind() -> list[str]:
        customers = [
            {"phone": "+14155550140", "name": "Ada", "time": "10:00"},
            {"phone": "+14155550141", "name": "Grace", "time": "11:30"},
        ]
        hook = AutocallsHook()
        sids = []
        for customer in customers:
            answer = hook.send_template(
                sender_id=12,
                template_id=45,
                recipient_phone=customer["phone"],
                recipient_name=customer["name"],
                variables={"name": customer["name"], "date": "Monday", "time": customer["time"]},
            )
            sids.append(answer["message_sid"])
        if get_current_context()["ti"].try_number == 1:
            # Say the task fails after its sends (a bug further down, a lost worker): the retry
            # replays both sends from the ledger and messages nobody a second time.
            raise RuntimeError("failing the first try on purpose, after the sends")
        return sids

    remind()


example_autocalls_taskflow()
# [END howto_hook_taskflow_autocalls]
