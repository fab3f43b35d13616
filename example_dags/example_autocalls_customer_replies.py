"""
Example 6 (Airflow 3): start a DAG when a customer writes in, and follow up with that customer.

The DAG is scheduled on an asset watched by :class:`CustomerReplyTrigger`: the triggerer polls the
watched customers' conversations and records one asset event per new customer message, whose
``extra["payload"]`` names the customer. No run waits per customer. The scheduler may put several
events into one run (customers who wrote close together), so the task follows up with each of
them. Inside a running task the hook keeps the task instance's ledger, so a retry of the task
messages nobody twice.

Airflow 2 has no event-driven scheduling: there the file defines no DAG (and imports cleanly).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import pendulum

from airflow_provider_autocalls.hooks.autocalls import AutocallsHook

#: The customers whose messages start the follow-up (the demo's simulator plays them).
WATCHED = ["+14155550161", "+14155550162", "+14155550163"]
SENDER_ID = 12


def follow_up(hook: AutocallsHook, replies: Iterable[Mapping[str, Any]]) -> list[str]:
    """Send one free-text follow-up to each customer who wrote; return the message ids."""
    sids = []
    for reply in replies:
        name = reply.get("customer_name") or "there"
        answer = hook.send_freeform(
            sender_id=reply["sender_id"],
            recipient_phone=reply["recipient_phone"],
            message=f"Hi {name}, thanks for your message! An agent will answer within the hour.",
        )
        sids.append(answer["message_sid"])
    return sids


try:
    from airflow.sdk import Asset, AssetWatcher, dag, task

    HAS_ASSET_WATCHERS = True
except ImportError:  # Airflow 2: no asset watchers, so no DAG here
    HAS_ASSET_WATCHERS = False

if HAS_ASSET_WATCHERS:
    from airflow_provider_autocalls.triggers.autocalls import CustomerReplyTrigger

    # [START howto_trigger_customer_reply]
    customer_replies = Asset(
        "autocalls_customer_replies",
        watchers=[
            AssetWatcher(
                name="autocalls_customer_replies_watcher",
                trigger=CustomerReplyTrigger(
                    sender_id=SENDER_ID,
                    recipient_phones=WATCHED,
                    poll_interval=60,
                ),
            )
        ],
    )

    @dag(
        dag_id="example_autocalls_customer_replies",
        schedule=[customer_replies],
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        catchup=False,
        tags=["example", "autocalls"],
    )
    def example_autocalls_customer_replies() -> None:
        @task
        def follow_up_with_who_wrote(triggering_asset_events: Any = None) -> list[str]:
            events = triggering_asset_events[customer_replies] if triggering_asset_events else []
            return follow_up(AutocallsHook(), [event.extra["payload"] for event in events])

        follow_up_with_who_wrote()

    customer_replies_dag = example_autocalls_customer_replies()
    # [END howto_trigger_customer_reply]
