"""The simulator playing a customer who answers, for tests that wait for a reply."""

from __future__ import annotations

import threading
import time
from datetime import datetime

from airflow_provider_autocalls.testing.simulator import AutocallsSimulator


def reply_after_delivery(
    simulator: AutocallsSimulator,
    sender_id: int,
    recipient_phone: str,
    text: str = "Yes!",
    *,
    delay: float = 1.0,
    timeout: float = 120.0,
) -> threading.Thread:
    """
    Answer the first message delivered to ``recipient_phone``, ``delay`` seconds after it arrives.

    The customer writes from a background thread, as a real one would while a DAG waits, so start
    it before running the DAG. Nothing is written if no message arrives within ``timeout`` seconds.
    The API gives times to the second, so the reply also waits for the next whole second of the
    simulator's clock: a reply stamped in the same second as the message would not count as later
    (``SessionOpenSensor(replied_after=...)`` would go on waiting).

    :param simulator: the running simulator.
    :param sender_id: the sender the customer writes to.
    :param recipient_phone: the customer's phone number.
    :param text: what the customer writes.
    :param delay: seconds between the delivery and the reply.
    :param timeout: seconds to wait for a message to answer.
    :return: the (daemon) thread, already started.
    """

    def delivered_at() -> datetime | None:
        for message in simulator.delivered:
            if message["recipient_phone"] == recipient_phone:
                return datetime.fromisoformat(message["at"])
        return None

    def customer() -> None:
        deadline = time.monotonic() + timeout
        while (at := delivered_at()) is None:
            if time.monotonic() > deadline:
                return
            time.sleep(0.05)
        time.sleep(delay)
        while simulator.now().replace(microsecond=0) <= at:
            time.sleep(0.05)
        simulator.customer_message(sender_id, recipient_phone, text)

    thread = threading.Thread(target=customer, name=f"customer {recipient_phone}", daemon=True)
    thread.start()
    return thread
