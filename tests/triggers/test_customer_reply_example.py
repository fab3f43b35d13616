"""The customer-replies example: parses on both Airflows, and on Airflow 3 its watcher and task do the follow-up."""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Callable
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

from airflow_provider_autocalls.testing import AutocallsSimulator
from airflow_provider_autocalls.triggers import _reply_watch

EXAMPLE = Path(__file__).resolve().parents[2] / "example_dags" / "example_autocalls_customer_replies.py"
needs_airflow_3 = pytest.mark.skipif(
    not _reply_watch.HAS_EVENT_TRIGGERS, reason="asset watchers need Airflow 3"
)


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("example_autocalls_customer_replies", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_example_imports_on_every_airflow_and_defines_a_dag_only_on_airflow_3() -> None:
    module = load_example()
    assert module.HAS_ASSET_WATCHERS is _reply_watch.HAS_EVENT_TRIGGERS
    assert hasattr(module, "customer_replies") is _reply_watch.HAS_EVENT_TRIGGERS


@needs_airflow_3
def test_the_dag_is_scheduled_on_an_asset_watched_by_the_trigger() -> None:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(str(EXAMPLE))
    assert bag.import_errors == {}
    module = load_example()
    [watcher] = module.customer_replies.watchers
    assert isinstance(watcher.trigger, _reply_watch.CustomerReplyTrigger)
    assert watcher.trigger.recipient_phones == module.WATCHED


@needs_airflow_3
def test_each_customer_who_writes_gets_one_follow_up_from_the_triggering_event(
    make_conn: Callable[..., str], sim: AutocallsSimulator
) -> None:
    make_conn()
    module = load_example()
    kwargs = module.customer_replies.watchers[0].trigger.serialize()[1]
    trigger = _reply_watch.CustomerReplyTrigger(**{**kwargs, "poll_interval": 0.05})
    events: list[dict[str, Any]] = []

    async def watch() -> None:
        async def consume() -> None:
            async for event in trigger.run():
                events.append(event.payload)

        task = asyncio.create_task(consume())
        while len(sim.requests) < 3:  # the baseline of each watched customer
            await asyncio.sleep(0.01)
        for phone, name in zip(module.WATCHED[:2], ["Ana", "Ben"], strict=True):
            sim.advance(2)
            sim.customer_message(12, phone, "Is my order on its way?", name=name)
        async with asyncio.timeout(10):
            while len(events) < 2:
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.3)  # more polls: nothing else fires
        task.cancel()

    asyncio.run(watch())
    assert len(events) == 2
    # The scheduler hands the task every event of the run, keyed by the asset.
    asset_events = {module.customer_replies: [SimpleNamespace(extra={"payload": e}) for e in events]}
    follow_up = module.customer_replies_dag.get_task("follow_up_with_who_wrote")
    sids = follow_up.python_callable(triggering_asset_events=asset_events)
    assert len(sids) == 2
    assert sorted((m["recipient_phone"], m["kind"]) for m in sim.delivered) == [
        (module.WATCHED[0], "freeform"),
        (module.WATCHED[1], "freeform"),
    ]
    assert sorted(m["text"].split(",")[0] for m in sim.delivered) == ["Hi Ana", "Hi Ben"]
