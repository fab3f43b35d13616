"""Pacing under the API's rate limit: the simulator counts every 429 it answers."""

from __future__ import annotations

import asyncio
import itertools
import json
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


def test_the_window_counts_departures_not_answers() -> None:
    """A request counts from the moment it leaves for 1 s + margin, however long its answer takes."""
    pacer = Pacer(rate=3, margin=0.02)
    pacer._interval = 0  # look at the window alone
    assert [pacer._release() for _ in range(3)] == [0, 0, 0]
    assert pacer._release() == pytest.approx(1.02, abs=0.05)  # a fourth could make four in one second
    for _ in range(3):
        pacer._done()  # answers change nothing: the API counted the requests when they arrived
    assert pacer._release() == pytest.approx(1.02, abs=0.05)


def test_requests_still_in_flight_do_not_hold_the_window() -> None:
    """The old model held a request in the window until 1 s after its answer: latency ate the rate."""
    pacer = Pacer(rate=3, margin=0.02)
    pacer._interval = 0
    assert [pacer._release() for _ in range(3)] == [0, 0, 0]
    pacer._departures = type(pacer._departures)(t - 1.1 for t in pacer._departures)  # 1.1 s ago
    assert pacer._release() == 0  # three in flight still, but they left more than 1.02 s ago
    assert pacer.in_flight == 4


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


def test_one_pacer_per_api_key_whatever_the_url_and_the_lower_rate_wins() -> None:
    a = pacer_for("key-1", 5)
    assert pacer_for("key-1", 50) is a
    assert a.rate == 5
    assert pacer_for("key-1", 2).rate == 2
    assert pacer_for("key-2", 5) is not a


@pytest.mark.parametrize(
    "other_url",
    ["http://localhost:{port}", "http://LOCALHOST:{port}", "HTTP://127.0.0.1:{port}"],
)
def test_spellings_of_one_base_url_share_one_pacer(
    make_conn: Callable[..., str], sim: AutocallsSimulator, other_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = sim.url.split(":")[2].split("/")[0]
    path = sim.url.split(str(port), 1)[1]
    first = AutocallsHook(make_conn("first", rate_limit=5))
    monkeypatch.setenv(
        "AIRFLOW_CONN_SECOND",
        json.dumps(
            {"conn_type": "autocalls", "host": other_url.format(port=port) + path, "password": sim.api_key}
        ),
    )
    second = AutocallsHook("second", rate_limit=5)
    assert first.pacer is second.pacer
    second.get_senders()  # the other spelling reaches the same API


def test_an_explicit_default_port_shares_the_pacer() -> None:
    from airflow_provider_autocalls.hooks.autocalls import build_settings

    plain = build_settings("a", "https://api.example", "key-443", {}, {})
    explicit = build_settings("b", "https://api.example:443", "key-443", {}, {})
    assert plain.base_url != explicit.base_url  # two spellings ...
    assert pacer_for(plain.api_key, 5) is pacer_for(explicit.api_key, 5)  # ... one account, one pacer
