"""Run a DAG file with ``dag.test()`` from a test, the same way on Airflow 2.11 and 3.

Airflow 3 runs only DAGs that a bundle holds, so a DAG defined inside a test function cannot be
run: the file is copied into the dags folder for the run, parsed from there, and removed after.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class DagRunResult:
    """What a test needs from a finished DAG run, read the same way on Airflow 2 and 3."""

    #: the run's state: ``"success"``, ``"failed"``, ...
    state: str
    #: task_id -> ``[(state, try_number)]``, one pair per map index
    tries: dict[str, list[tuple[str, int]]] = field(default_factory=dict)

    def task_state(self, task_id: str) -> str:
        """The state of a task (of all its mapped instances, which must agree)."""
        states = {state for state, _ in self.tries[task_id]}
        if len(states) != 1:
            raise AssertionError(f"{task_id} ended in several states: {sorted(states)}")
        return states.pop()


def run_dag_file(
    dag_file: str | Path,
    dags_folder: str | Path,
    *,
    dag_id: str | None = None,
    tweak: Callable[[Any], None] | None = None,
    **test_kwargs: Any,
) -> DagRunResult:
    """
    Copy a DAG file into the dags folder, parse it, run its DAG with ``dag.test()``, remove the copy.

    :param dag_file: the DAG file (a ``.py`` file anywhere).
    :param dags_folder: Airflow's ``[core] dags_folder``.
    :param dag_id: which DAG of the file to run; needed only when it holds several.
    :param tweak: called with the parsed DAG before the run, e.g. to shorten a sensor's interval.
    :param test_kwargs: passed on to ``dag.test()`` (``run_conf``, ``logical_date``, ...).
    :return: the run's state and every task instance's state and try number.
    :raises AssertionError: if the file does not import or holds no such DAG.
    """
    source = Path(dag_file).resolve()
    target = Path(dags_folder).resolve() / source.name
    copied = source != target
    if copied:
        if target.exists():
            raise AssertionError(f"{target} already exists; name the DAG file differently.")
        shutil.copyfile(source, target)
    try:
        dag = _parse(target, dag_id)
        if tweak is not None:
            tweak(dag)
        dag_run = dag.test(**test_kwargs)
    finally:
        if copied:
            target.unlink()
    return DagRunResult(_value(dag_run.state), _tries(dag_run.dag_id, dag_run.run_id))


def _parse(path: Path, dag_id: str | None) -> Any:
    try:
        from airflow.dag_processing.dagbag import DagBag
    except ImportError:  # Airflow 2
        from airflow.models.dagbag import DagBag  # type: ignore[no-redef]

    bag = DagBag(str(path))
    if bag.import_errors:
        raise AssertionError(f"{path.name} does not import: {bag.import_errors}")
    if not bag.dag_ids:
        raise AssertionError(
            f"{path.name} holds no DAG (Airflow skips a file whose text mentions neither 'airflow' nor 'dag')."
        )
    if dag_id is None:
        if len(bag.dag_ids) != 1:
            raise AssertionError(f"{path.name} holds {sorted(bag.dag_ids)}: pass dag_id=")
        dag_id = bag.dag_ids[0]
    dag = bag.get_dag(dag_id)
    if dag is None:
        raise AssertionError(f"{path.name} holds no DAG {dag_id!r}, only {sorted(bag.dag_ids)}")
    return dag


def _value(state: Any) -> str:
    return str(getattr(state, "value", state))


def _tries(dag_id: str, run_id: str) -> dict[str, list[tuple[str, int]]]:
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    tries: dict[str, list[tuple[str, int]]] = {}
    with create_session() as session:
        rows = (
            session.query(TaskInstance)
            .filter(TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id)
            .order_by(TaskInstance.task_id, TaskInstance.map_index)
            .all()
        )
        for ti in rows:
            tries.setdefault(ti.task_id, []).append((_value(ti.state), ti.try_number))
    return tries
