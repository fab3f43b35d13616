"""
Example 6: deliver a message whatever the window.

``SendMessageOperator`` reads the session status: while the customer's 24-hour window is open the
text goes as free text; otherwise the approved fallback template goes. If the window closes between
that read and the send, the API refuses the free text (nothing is sent) and the template goes in the
same try.
"""

from __future__ import annotations

import pendulum
from airflow.providers.common.compat.sdk import DAG

from airflow_provider_autocalls.operators.autocalls import SendMessageOperator

# [START howto_operator_autocalls_send_message]
with DAG(
    dag_id="example_autocalls_window_aware",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    params={"phone": "+14155550160", "name": "Ada", "order": "A-1042"},
    tags=["example", "autocalls"],
):
    SendMessageOperator(
        task_id="tell_customer",
        sender_id=12,
        recipient_phone="{{ params.phone }}",
        message="Hi {{ params.name }}, your order {{ params.order }} has shipped.",
        fallback_template_id=45,
        fallback_variables={"name": "{{ params.name }}", "date": "today", "time": "17:00"},
    )
# [END howto_operator_autocalls_send_message]
