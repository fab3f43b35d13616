"""
Example 2: send a template, wait (deferred) for the customer's reply, then follow up in free text.

A template opens the 24-hour window by itself, so the sensor waits for a message from the
customer *after* the template went out. ``reply_to`` is the template task's XCom: the send read the
customer's last message time from the API just before sending (``reply_baseline``), and the sensor
waits for a later one. Both times are the API's, so the worker's clock never matters.
The texts use params, not ``ds``: an Airflow 3 run triggered without a logical date has no ``ds``.
"""

from __future__ import annotations

import pendulum
from airflow.providers.common.compat.sdk import DAG

from airflow_provider_autocalls.operators.autocalls import SendFreeformOperator, SendTemplateOperator
from airflow_provider_autocalls.sensors.autocalls import SessionOpenSensor

# [START howto_autocalls_reply_followup]
with DAG(
    dag_id="example_autocalls_reply_followup",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    params={"phone": "+14155550123", "name": "Ada", "date": "Monday"},
    tags=["example", "autocalls"],
):
    # [START howto_operator_send_template]
    remind = SendTemplateOperator(
        task_id="send_reminder",
        sender_id=12,
        template_id=45,
        recipient_phone="{{ params.phone }}",
        recipient_name="{{ params.name }}",
        variables={"name": "{{ params.name }}", "date": "{{ params.date }}", "time": "10:00"},
        track_reply=True,  # its XCom then carries reply_baseline, which wait_for_reply compares with
    )
    # [END howto_operator_send_template]
    # [START howto_sensor_session_open]
    wait_for_reply = SessionOpenSensor(
        task_id="wait_for_reply",
        sender_id=12,
        recipient_phone="{{ params.phone }}",
        reply_to=remind.output,
        deferrable=True,
        poke_interval=30,
        timeout=24 * 3600,
    )
    # [END howto_sensor_session_open]
    # [START howto_operator_send_freeform]
    follow_up = SendFreeformOperator(
        task_id="follow_up",
        sender_id=12,
        recipient_phone="{{ params.phone }}",
        message="Thanks {{ params.name }}! See you on {{ params.date }}.",
    )
    # [END howto_operator_send_freeform]
    remind >> wait_for_reply >> follow_up
# [END howto_autocalls_reply_followup]
