"""
Resolving messages in doubt by hand: a person checked the dashboard and says what happened.

A message whose outcome is ``unknown`` is never sent again by a later try: it may have been
delivered. After checking the conversation in the Autocalls dashboard, a person can release it, and
the next try (a retry, or a clear of the task) sends it. Release only while no try of that task
instance is running: a try still waiting for its answer would otherwise record ``sent`` next to
the new try's send.
"""

from __future__ import annotations

import getpass
from collections.abc import Iterable
from typing import Any

from airflow_provider_autocalls.ledger import Entry, State, ledger_of, phone_key


def ledger_entries(
    dag_id: str, run_id: str, task_id: str, map_index: int = -1, ledger_location: str | None = None
) -> list[Entry]:
    """The newest generation of every message in one task instance's ledger."""
    ledger = ledger_of(dag_id, run_id, task_id, map_index, ledger_location)
    keys = sorted(ledger.states())
    return [entry for key in keys if (entry := ledger.entry(key)) is not None]


def release_unknown(
    dag_id: str,
    run_id: str,
    task_id: str,
    map_index: int = -1,
    *,
    recipients: Iterable[str] | None = None,
    ledger_location: str | None = None,
    reason: str = "checked in the Autocalls dashboard: not delivered",
    by: str | None = None,
) -> list[str]:
    """
    Release the ``unknown`` messages of one task instance so that its next try sends them.

    :param dag_id: the task instance's DAG.
    :param run_id: its run.
    :param task_id: its task.
    :param map_index: its map index (-1 when not mapped).
    :param recipients: only these recipients (E.164); default every ``unknown`` message.
    :param ledger_location: where the ledger is (default ``[autocalls] ledger_location``).
    :param reason: kept in the ledger and shown in the next report.
    :param by: who released them (default: this machine's user).
    :return: the recipients released.
    """
    ledger = ledger_of(dag_id, run_id, task_id, map_index, ledger_location)
    wanted = {phone_key(phone) for phone in recipients} if recipients is not None else None
    released = []
    for key in sorted(ledger.states()):
        if wanted is not None and key not in wanted:
            continue
        entry = ledger.entry(key)
        if entry is not None and ledger.release(entry, reason, by or getpass.getuser()):
            released.append(str((entry.claim or {}).get("recipient", key)))
    return released


def describe(entry: Entry) -> dict[str, Any]:
    """One line of a ledger listing."""
    details = entry.details
    return {
        "recipient": (entry.claim or {}).get("recipient"),
        "key": entry.key,
        "generation": entry.gen,
        "state": entry.state.value,
        "try_number": entry.try_number,
        "message_sid": details.get("message_sid") or (details.get("answer") or {}).get("message_sid"),
        "reason": details.get("reason"),
        "in_doubt": entry.state is State.UNKNOWN,
    }
