"""CustomerReplyTrigger driven through run() (and its shared stream) against the simulator."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest

from airflow_provider_autocalls.exceptions import AutocallsValidationError, NotFoundError
from airflow_provider_autocalls.testing import AutocallsSimulator, Fault
from airflow_provider_autocalls.triggers import _reply_watch
from airflow_provider_autocalls.triggers._watch_budget import WatchBudget, budget_for, forget_budgets
from airflow_provider_autocalls.triggers.autocalls import CustomerReplyTrigger

pytestmark = pytest.mark.skipif(
    not _reply_watch.HAS_EVENT_TRIGGERS, reason="event triggers (BaseEventTrigger) need Airflow 3"
)

ANA, BEN, CLEO = "+14155550101", "+14155550102", "+14155550103"
INTERVAL = 0.05


@pytest.fixture(autouse=True)
def clean_budgets() -> Iterator[None]:
    forget_budgets()
    yield
    forget_budgets()


class MemoryStateStore:
    """Stands in for the accessor Airflow injects as ``asset_state_store`` (one watched asset)."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    def set(self, key: str, value: Any) -> None:
        self.values[key] = value

    async def aget(self, key: str, default: Any = None) -> Any:
        return self.get(key, default)

    async def aset(self, key: str, value: Any) -> None:
        self.set(key, value)


def watcher(phones: list[str] | None = None, store: Any = None, **kwargs: Any) -> CustomerReplyTrigger:
    trigger = CustomerReplyTrigger(
        sender_id=kwargs.pop("sender_id", 12),
        recipient_phones=phones or [ANA],
        poll_interval=kwargs.pop("poll_interval", INTERVAL),
        **kwargs,
    )
    trigger.asset_state_store = store
    return trigger


class Watching:
    """A trigger's run() consumed in the background; its event payloads collected in order."""

    def __init__(self, sim: AutocallsSimulator, trigger: CustomerReplyTrigger) -> None:
        self.sim = sim
        self.events: list[dict[str, Any]] = []
        self.task = asyncio.create_task(self._consume(trigger.run()))

    async def _consume(self, events: AsyncIterator[Any]) -> None:
        async for event in events:
            self.events.append(event.payload)

    async def polls(self, count: int, timeout: float = 10) -> None:
        """Wait until ``count`` more requests reached the simulator (and their answers were read)."""
        target = len(self.sim.requests) + count
        async with asyncio.timeout(timeout):
            while len(self.sim.requests) < target or any(r["status"] is None for r in self.sim.requests):
                if self.task.done():
                    self.task.result()  # raises the watcher's error
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.02)  # the last answer reaches the trigger

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


def scenario(
    sim: AutocallsSimulator, trigger: CustomerReplyTrigger, body: Callable[[Watching], Awaitable[None]]
) -> list[dict[str, Any]]:
    async def main() -> list[dict[str, Any]]:
        watching = Watching(sim, trigger)
        try:
            await body(watching)
        finally:
            await watching.stop()
        return watching.events

    return asyncio.run(main())


def write_in(sim: AutocallsSimulator, phone: str, name: str = "Ana") -> str:
    """A customer writes; the clock moves first so each message has its own second on the API's clock."""
    sim.advance(2)
    sim.customer_message(12, phone, "Hello?", name=name)
    return sim.now().replace(microsecond=0).isoformat()


def test_a_new_message_fires_once_with_the_payload(
    make_conn: Callable[..., str], sim: AutocallsSimulator
) -> None:
    make_conn()

    async def body(w: Watching) -> None:
        await w.polls(1)  # the baseline
        write_in(sim, ANA, "Ana Silva")
        await w.polls(4)

    [event] = scenario(sim, watcher(), body)
    assert event["sender_id"] == 12
    assert event["recipient_phone"] == ANA
    assert event["customer_name"] == "Ana Silva"
    assert event["conversation_id"] is not None
    assert event["last_customer_message_at"].startswith(sim.now().strftime("%Y-%m-%dT%H:%M"))
    assert {r["method"] for r in sim.requests} == {"GET"}  # a watcher only reads


def test_no_message_no_event_within_two_poll_intervals(
    make_conn: Callable[..., str], sim: AutocallsSimulator
) -> None:
    make_conn()

    async def body(w: Watching) -> None:
        await w.polls(3)

    assert scenario(sim, watcher(), body) == []


def test_the_same_message_fires_once_and_the_next_one_again(
    make_conn: Callable[..., str], sim: AutocallsSimulator
) -> None:
    make_conn()

    async def body(w: Watching) -> None:
        await w.polls(1)
        write_in(sim, ANA)
        await w.polls(5)  # the same last_customer_message_at, read again and again
        assert len(w.events) == 1
        write_in(sim, ANA)
        await w.polls(3)

    events = scenario(sim, watcher(), body)
    assert len(events) == 2
    assert events[0]["last_customer_message_at"] < events[1]["last_customer_message_at"]


def test_a_message_before_the_first_poll_does_not_fire(
    make_conn: Callable[..., str], sim: AutocallsSimulator
) -> None:
    make_conn()
    write_in(sim, ANA)

    async def body(w: Watching) -> None:
        await w.polls(4)
        assert w.events == []
        write_in(sim, ANA)
        await w.polls(2)

    assert len(scenario(sim, watcher(), body)) == 1  # the watcher does watch: the later one fires


def test_each_recipient_fires_for_its_own_message(
    make_conn: Callable[..., str], sim: AutocallsSimulator
) -> None:
    make_conn()

    async def body(w: Watching) -> None:
        await w.polls(3)
        write_in(sim, BEN, "Ben")
        write_in(sim, CLEO, "Cleo")
        await w.polls(6)

    events = scenario(sim, watcher([ANA, BEN, CLEO]), body)
    assert sorted((e["recipient_phone"], e["customer_name"]) for e in events) == [
        (BEN, "Ben"),
        (CLEO, "Cleo"),
    ]


def test_a_restart_with_the_state_store_neither_refires_nor_misses(
    make_conn: Callable[..., str], sim: AutocallsSimulator
) -> None:
    make_conn()
    store = MemoryStateStore()

    async def before(w: Watching) -> None:
        await w.polls(2)
        write_in(sim, ANA)
        await w.polls(2)

    assert len(scenario(sim, watcher([ANA, BEN], store), before)) == 1
    during_downtime = write_in(sim, BEN, "Ben")  # the triggerer is down

    async def after(w: Watching) -> None:
        await w.polls(6)

    events = scenario(sim, watcher([ANA, BEN], store), after)
    assert [(e["recipient_phone"], e["last_customer_message_at"][:19]) for e in events] == [
        (BEN, during_downtime[:19])
    ]


def test_a_restart_without_the_state_store_misses_the_downtime_and_never_refires(
    make_conn: Callable[..., str], sim: AutocallsSimulator
) -> None:
    """The documented behaviour on Airflow 3.0-3.2: a new baseline at the restart."""
    make_conn()

    async def before(w: Watching) -> None:
        await w.polls(1)
        write_in(sim, ANA)
        await w.polls(2)

    assert len(scenario(sim, watcher(), before)) == 1
    write_in(sim, ANA)  # while down

    async def after(w: Watching) -> None:
        await w.polls(4)

    assert scenario(sim, watcher(), after) == []


def test_a_store_shared_by_several_assets_falls_back_to_memory(
    make_conn: Callable[..., str], sim: AutocallsSimulator
) -> None:
    class SeveralAssets(MemoryStateStore):
        async def aget(self, key: str, default: Any = None) -> Any:
            raise ValueError("Task has 2 concrete inlets and outlets")

    make_conn()

    async def body(w: Watching) -> None:
        await w.polls(1)
        write_in(sim, ANA)
        await w.polls(2)

    assert len(scenario(sim, watcher(store=SeveralAssets()), body)) == 1


@pytest.mark.parametrize("status", [503, 429, 500])
def test_failing_polls_are_retried_and_never_fire(
    make_conn: Callable[..., str], sim: AutocallsSimulator, status: int
) -> None:
    make_conn(max_retries=0)

    async def body(w: Watching) -> None:
        await w.polls(1)
        sim.inject(Fault(endpoint="session_status", status=status, count=3, headers={"Retry-After": "0"}))
        await w.polls(3)  # three failures in a row, each retried after a longer wait
        assert w.events == []
        write_in(sim, ANA)
        await w.polls(2)

    assert len(scenario(sim, watcher(), body)) == 1
    # A busy machine can fit another good poll in before the fault is injected: the three failures
    # are found where they came, one after the other.
    statuses = [r["status"] for r in sim.requests]
    first_failure = statuses.index(status)
    assert statuses[first_failure : first_failure + 3] == [status] * 3
    assert statuses.count(status) == 3


def test_a_failing_first_poll_is_retried_too(make_conn: Callable[..., str], sim: AutocallsSimulator) -> None:
    make_conn(max_retries=0)
    write_in(sim, ANA)  # predates the watcher: must not fire even though the first reads fail
    sim.inject(Fault(endpoint="session_status", status=503, count=2))

    async def body(w: Watching) -> None:
        await w.polls(5)

    assert scenario(sim, watcher(), body) == []


def test_an_unknown_sender_ends_the_watch_at_the_first_poll(
    make_conn: Callable[..., str], sim: AutocallsSimulator
) -> None:
    make_conn()

    async def body(w: Watching) -> None:
        await w.polls(1)
        await asyncio.wait_for(w.task, 5)

    with pytest.raises(NotFoundError, match="Sender not found"):
        scenario(sim, watcher(sender_id=999), body)
    assert len(sim.requests) == 1  # not retried: it cannot pass


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"recipient_phones": ["+1 415 555 0101"]}, "recipient_phones[0]"),
        ({"recipient_phones": [ANA, "14155550102"]}, "recipient_phones[1]"),
        ({"recipient_phones": ANA}, "recipient_phones"),
        ({"recipient_phones": []}, "recipient_phones"),
        ({"sender_id": "twelve"}, "sender_id"),
        ({"poll_interval": 0}, "poll_interval"),
        ({"poll_share": 1.5}, "poll_share"),
    ],
)
def test_bad_input_is_refused_when_the_dag_is_parsed(
    kwargs: dict[str, Any], field: str, sim: AutocallsSimulator
) -> None:
    arguments = {"sender_id": 12, "recipient_phones": [ANA], **kwargs}
    with pytest.raises(AutocallsValidationError) as raised:
        CustomerReplyTrigger(**arguments)
    assert raised.value.field == field
    assert sim.requests == []


def test_serialises_under_its_public_path_and_fits_an_asset_watcher() -> None:
    from airflow.sdk import Asset, AssetWatcher
    from airflow.triggers.base import BaseEventTrigger  # type: ignore[attr-defined,unused-ignore]

    trigger = CustomerReplyTrigger(sender_id="12", recipient_phones=[ANA, ANA, BEN])
    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow_provider_autocalls.triggers.autocalls.CustomerReplyTrigger"
    assert kwargs == {
        "sender_id": 12,
        "recipient_phones": [ANA, BEN],
        "poll_interval": 60.0,
        "autocalls_conn_id": "autocalls_default",
        "poll_share": 0.2,
    }
    assert CustomerReplyTrigger(**kwargs).serialize() == (classpath, kwargs)
    assert isinstance(trigger, BaseEventTrigger)
    Asset("replies", watchers=[AssetWatcher(name="replies_watcher", trigger=trigger)])


def test_watchers_of_one_sender_share_one_poll_loop(
    make_conn: Callable[..., str], sim: AutocallsSimulator
) -> None:
    """Two watchers, overlapping recipients: each recipient is read once per round, each watcher fires for its own."""
    make_conn()
    first, second = watcher([ANA, BEN]), watcher([BEN, CLEO])
    assert first.shared_stream_key() == second.shared_stream_key()

    async def main() -> tuple[list[str], list[str]]:
        queues: list[asyncio.Queue[Any]] = [asyncio.Queue(), asyncio.Queue()]

        async def fan_out() -> None:  # what the triggerer does with the one shared stream
            async for raw in CustomerReplyTrigger.open_shared_stream(first.serialize()[1]):
                for queue in queues:
                    queue.put_nowait(raw)

        async def from_queue(queue: asyncio.Queue[Any]) -> AsyncIterator[Any]:
            while True:
                yield await queue.get()

        fired: list[list[str]] = [[], []]

        async def consume(index: int, trigger: CustomerReplyTrigger) -> None:
            async for event in trigger.filter_shared_stream(from_queue(queues[index])):
                fired[index].append(event.payload["recipient_phone"])

        tasks = [asyncio.create_task(consume(0, first)), asyncio.create_task(consume(1, second))]
        await asyncio.sleep(0)
        tasks.append(asyncio.create_task(fan_out()))
        w = Watching.__new__(Watching)
        w.sim, w.task = sim, tasks[-1]
        await w.polls(6)
        write_in(sim, BEN, "Ben")
        write_in(sim, CLEO, "Cleo")
        await w.polls(6)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return fired[0], fired[1]

    first_fired, second_fired = asyncio.run(main())
    assert (first_fired, sorted(second_fired)) == ([BEN], [BEN, CLEO])
    phones = [r["query"].get("recipient_phone") or r["path"] for r in sim.requests]
    # At least the 12 reads waited for; a busy machine may fit part of another round in before the
    # cancel lands. Every whole round reads each of the three recipients once, not once per watcher.
    assert len(phones) >= 12
    for start in range(0, len(phones) - 2, 3):
        assert len(set(phones[start : start + 3])) == 3


def test_the_watch_budget_is_a_share_of_the_key_limit_and_the_smaller_share_wins() -> None:
    budget = budget_for("key", rate_limit=10, share=0.2)
    assert budget.rate == pytest.approx(2.0)
    assert budget_for("key", rate_limit=10, share=0.5) is budget
    assert budget.rate == pytest.approx(2.0)
    assert budget_for("key", rate_limit=10, share=0.1).rate == pytest.approx(1.0)
    assert budget_for("other key", rate_limit=0, share=0.2).rate == 0  # no limit, no budget


def test_the_watch_budget_spaces_slots_evenly() -> None:
    budget = WatchBudget(rate=4)
    delays = [budget._reserve() for _ in range(4)]
    assert delays[0] == pytest.approx(0, abs=0.01)
    assert [b - a for a, b in itertools.pairwise(delays)] == pytest.approx([0.25] * 3, abs=0.01)
