"""
A mapped ``SendTemplateOperator`` run the way a LocalExecutor runs it, for the benchmarks.

``SendTemplateOperator.partial(...).expand(recipient_phone=phones)`` makes one task instance per
recipient. A LocalExecutor runs each task instance in a process of its own, forked from a parent
that has already imported Airflow, and runs at most ``[core] max_active_tasks_per_dag`` (16 by
default) task instances of one DAG at a time.

The model: a pool of 16 processes forked from a server process that imported the operator and
httpx and nothing else (multiprocessing's "forkserver"), one fresh process for every task instance
(``maxtasksperchild=1``). Each runs the real operator's ``execute()`` for its recipient: the
checks, the template check (one read of the sender's templates, as ``check_template`` does by
default), the claim in the task instance's ledger (in a temporary folder), the send. Each process
has its own pacer, as each task instance has unless the shared limit
(``[autocalls] rate_limit_backend``) is configured. A task whose send fails (e.g. still 429 after
the hook's retries) counts as not sent, as with Airflow's default of no task retries.

What it leaves out: Airflow's own work around each task instance (the scheduler creating and
queueing it, the task runner starting, the DAG being loaded, state and XCom being reported),
a few seconds per task instance. In a deployment that makes every task instance longer, so fewer
of them send per second: the achieved rate here is an upper bound on a mapped send's. The tasks
here also start as fast as a process can fork, more crowded than the scheduler would start them.
"""

from __future__ import annotations

import multiprocessing
import os
from collections import Counter
from types import SimpleNamespace
from typing import Any

from _sim_control import connection

from airflow_provider_autocalls.operators.autocalls import SendTemplateOperator

#: Airflow's default ``[core] max_active_tasks_per_dag``: task instances of one DAG run at once.
MAX_ACTIVE_TASKS = 16


def _task_instance(job: tuple[str, str, int, str, str]) -> str:
    """One mapped task instance, in its own process: the operator's ``execute()``; its outcome."""
    conn, phone, map_index, run_id, ledger = job
    os.environ["AIRFLOW_CONN_AUTOCALLS_DEFAULT"] = conn
    operator = SendTemplateOperator(
        task_id="send", sender_id=12, template_id=46, recipient_phone=phone, ledger_location=ledger
    )
    ti = SimpleNamespace(dag_id="bench", run_id=run_id, task_id="send", map_index=map_index, try_number=1)
    context: Any = {"ti": ti}
    try:
        operator.execute(context)
    except Exception as error:
        return f"failed: {type(error).__name__}"
    return "sent"


def run_mapped(
    url: str, key: str, rate: float, phones: list[str], ledger: str, run_id: str
) -> dict[str, int]:
    """Send to each of ``phones`` as a mapped task instance of its own; count the outcomes."""
    processes = multiprocessing.get_context("forkserver")
    # What a LocalExecutor's task process has loaded when it forks: Airflow, the DAG's operators and
    # httpx (Airflow 3's task runner talks to the API server with it). Installed modules only: the
    # server does not get this folder on its path. Takes effect when the server starts (first run).
    processes.set_forkserver_preload([SendTemplateOperator.__module__, "httpx"])
    conn = connection(url, key, rate)
    jobs = [(conn, phone, index, run_id, ledger) for index, phone in enumerate(phones)]
    with processes.Pool(MAX_ACTIVE_TASKS, maxtasksperchild=1) as pool:
        outcomes = pool.map(_task_instance, jobs, chunksize=1)
    return dict(Counter(outcomes))
