"""Pacing under the API's rate limit: the simulator counts every 429 it answers."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Callable

import pytest

from airflow_provider_autocalls.hooks._pacing import Pacer, pacer_for
from airflow_provider_autocalls.hooks.autocalls import AutocallsHook
from airflow_provider_autocalls.testing import AutocallsSimulator

PHONE = "+14155550123"


def test_twenty_calls_at_the_limit_cause_no_429(
    make_conn: Callable[..., str], sim: AutocallsSimulator
) -> None:
    sim.rate_limit = 5
    hook = AutocallsHook(make_conn(rate_limit=5))
    started = time.monotonic()
    for _ in range(20):
        hook.get_session_status(12, PHONE)
    elapsed = time.monotonic() - started
    assert sim.rate_limited_count == 0
    assert len(sim.requests) == 20
    assert elapsed >= 19 / 5  # evenly spaced: never two requests closer than 1/rate


def test_without_pacing_the_simulator_would_have_refused(
    make_conn: Callable[..., str], sim: AutocallsSimulator
) -> None:
    """The control for the test above: a client faster than the limit does get 429s (and recovers)."""
    sim.rate_limit = 5
    hook = AutocallsHook(make_conn(rate_limit=50))
    for _ in range(8):
        hook.get_session_status(12, PHONE)
    assert sim.rate_limited_count > 0


def test_hooks_threads_and_event_loops_share_one_pacer(
    make_conn: Callable[..., str], sim: AutocallsSimulator
) -> None:
    sim.rate_limit = 10
    conn_id = make_conn(rate_limit=10)
    hooks = [AutocallsHook(conn_id) for _ in range(3)]
    assert hooks[0].pacer is hooks[1].pacer

    def sync_calls(hook: AutocallsHook) -> None:
        for _ in range(5):
            hook.get_session_status(12, PHONE)

    async def async_calls() -> None:
        hook = AutocallsHook(conn_id)
        await asyncio.gather(*(hook.async_get_session_status(12, PHONE) for _ in range(5)))

    threads = [threading.Thread(target=sync_calls, args=(h,)) for h in hooks]
    threads.append(threading.Thread(target=asyncio.run, args=(async_calls(),)))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(sim.requests) == 20
    assert sim.rate_limited_count == 0


def test_slots_are_evenly_spaced_without_bursts() -> None:
    pacer = Pacer(rate=100)
    delays = [pacer.reserve() for _ in range(5)]
    gaps = [b - a for a, b in itertools.pairwise(delays)]
    assert delays[0] == pytest.approx(0, abs=1e-3)
    assert all(gap == pytest.approx(0.01, abs=1e-3) for gap in gaps)


def test_the_gate_counts_requests_in_flight_and_answered_within_the_window() -> None:
    pacer = Pacer(rate=3)
    pacer._interval = 0  # look at the gate alone
    assert [pacer._release() for _ in range(3)] == [0, 0, 0]
    assert pacer._release() > 0  # three in flight: a fourth could make four in one second
    pacer._done()  # one answered just now: it still counts for a second
    assert pacer._release() == pytest.approx(1.0, abs=0.05)


def test_a_stalled_event_loop_does_not_bunch_requests(
    make_conn: Callable[..., str], sim: AutocallsSimulator
) -> None:
    """Requests delayed by a stall and requests on time must not land in the same second."""
    sim.rate_limit = 10
    conn_id = make_conn(rate_limit=10)

    async def stall() -> None:
        for _ in range(4):
            await asyncio.sleep(0.35)
            time.sleep(0.25)  # a blocking call on the loop, as a busy triggerer has

    async def calls() -> None:
        hook = AutocallsHook(conn_id)
        await asyncio.gather(stall(), *(hook.async_get_session_status(12, PHONE) for _ in range(25)))

    asyncio.run(calls())
    assert len(sim.requests) == 25
    assert sim.rate_limited_count == 0


def test_callers_that_give_up_leave_no_phantom_queue() -> None:
    pacer = Pacer(rate=5)

    async def scenario() -> float:
        waiting = [asyncio.ensure_future(_hold_permit(pacer)) for _ in range(50)]
        await asyncio.sleep(0.05)
        for task in waiting:
            task.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)
        started = time.monotonic()
        async with pacer.async_permit():
            return time.monotonic() - started

    assert asyncio.run(scenario()) < 0.5  # not the 10 s the 50 abandoned slots would add


async def _hold_permit(pacer: Pacer) -> None:
    async with pacer.async_permit():
        await asyncio.sleep(10)


def test_a_429_holds_back_every_caller_of_the_key() -> None:
    pacer = Pacer(rate=100)
    pacer.hold_off(2.0)
    assert pacer.reserve() == pytest.approx(2.0, abs=0.05)


def test_one_pacer_per_key_and_base_url_and_the_lower_rate_wins() -> None:
    a = pacer_for("https://a.example/api", "key-1", 5)
    assert pacer_for("https://a.example/api", "key-1", 50) is a
    assert a.rate == 5
    assert pacer_for("https://a.example/api", "key-1", 2).rate == 2
    assert pacer_for("https://a.example/api", "key-2", 5) is not a
    assert pacer_for("https://b.example/api", "key-1", 5) is not a
