"""
``timeout`` is a deadline for the whole request: connecting, sending and reading all of the answer.

An answer that trickles in one byte every 2 s never lets any single read wait long, so per-step
timeouts alone never fire. With ``timeout=3`` the call must end within ``timeout`` + 1 s, give
its pacer permit back by then, and on an event loop shared by many callers (a triggerer) hold up
no other caller past that deadline. A send cut off by its deadline is in doubt (never repeated); a
read is retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from airflow_provider_autocalls.exceptions import AutocallsError, SendOutcomeUnknownError
from airflow_provider_autocalls.hooks._claims import under_claim
from airflow_provider_autocalls.hooks._transport import _DeadlineBackend
from airflow_provider_autocalls.hooks.autocalls import AutocallsHook
from airflow_provider_autocalls.ledger import State, ledger_for, phone_key
from airflow_provider_autocalls.testing import AutocallsSimulator, Fault

PHONE = "+14155550123"
TIMEOUT = 3.0
#: The simulator sends one byte of the answer this often: each read gets a byte well within TIMEOUT.
TRICKLE = 2.0
#: How much later than its deadline a call may end.
SLACK = 1.0


def bounded(call: Callable[[], object], limit: float = TIMEOUT + 5) -> tuple[float, BaseException | None]:
    """Run ``call`` in a thread; return how long it took and what it raised, failing if it outlives ``limit``."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        started = time.monotonic()
        try:
            call()
        except BaseException as error:
            outcome["error"] = error
        outcome["elapsed"] = time.monotonic() - started

    thread = threading.Thread(target=run, daemon=True)  # a call that never ends dies with the simulator
    thread.start()
    thread.join(limit)
    assert not thread.is_alive(), f"the call was still running after {limit} s"
    return outcome["elapsed"], outcome.get("error")


def test_a_trickling_answer_to_a_send_ends_at_the_deadline_in_doubt(
    make_conn: Callable[..., str], sim: AutocallsSimulator
) -> None:
    hook = AutocallsHook(make_conn(timeout=TIMEOUT))
    sim.inject(Fault(endpoint="send_template", trickle=TRICKLE))
    flag: list[bool] = []

    def send() -> None:
        try:
            hook.send_template(12, 46, PHONE)
        finally:
            flag.append(hook.request_may_have_reached_api)  # per thread: read in the calling one

    elapsed, error = bounded(send)
    assert TIMEOUT - 0.1 <= elapsed <= TIMEOUT + SLACK
    assert isinstance(error, SendOutcomeUnknownError)
    assert "may have been delivered" in str(error)
    assert "timeout of 3 s" in str(error)
    assert flag == [True]
    assert (len(sim.requests), len(sim.delivered)) == (1, 1)  # acted on, and never repeated


def test_a_send_whose_deadline_passed_before_its_first_byte_is_not_in_doubt(
    make_conn: Callable[..., str], sim: AutocallsSimulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    The deadline starts at the permit; a busy machine can use all of it before the request is written
    (here: the thread is held up right after its connection opened, until past the deadline). Not a
    byte went out, so the claim is released and the recipient stays sendable, where it was recorded
    in doubt.
    """
    hook = AutocallsHook(make_conn(timeout=0.2, max_retries=1))
    connect = _DeadlineBackend.connect_tcp

    def slow_connect(backend: _DeadlineBackend, *args: Any, **kwargs: Any) -> Any:
        stream = connect(backend, *args, **kwargs)
        time.sleep(0.3)  # the deadline passes before the first write
        return stream

    monkeypatch.setattr(_DeadlineBackend, "connect_tcp", slow_connect)
    ti = SimpleNamespace(dag_id="d", run_id="r", task_id="t", map_index=-1, try_number=1)
    ledger = ledger_for({"ti": ti}, str(tmp_path))  # type: ignore[arg-type]
    assert ledger is not None
    claim = ledger.new_claim(phone_key(PHONE), PHONE)
    with pytest.raises(AutocallsError) as raised, under_claim(claim):
        hook.send_template(12, 46, PHONE)
    assert not isinstance(raised.value, SendOutcomeUnknownError), raised.value
    assert hook.request_may_have_reached_api is False
    assert (len(sim.requests), len(sim.delivered)) == (0, 0)
    entry = ledger.entry(phone_key(PHONE))
    assert entry is None or entry.state is State.RELEASED


def test_a_trickling_answer_to_a_read_is_lost_and_read_again(
    make_conn: Callable[..., str], sim: AutocallsSimulator
) -> None:
    hook = AutocallsHook(make_conn(timeout=TIMEOUT, max_retries=1))
    sim.inject(Fault(endpoint="senders", trickle=TRICKLE))
    senders: list[Any] = []
    elapsed, error = bounded(lambda: senders.extend(hook.get_senders(status="all")))
    assert error is None
    assert elapsed <= TIMEOUT + SLACK + 1.0  # and the retry's backoff
    assert senders
    assert len(sim.requests) == 2


def test_the_permit_is_given_back_at_the_deadline(
    make_conn: Callable[..., str], sim: AutocallsSimulator
) -> None:
    """One request per second for this key: a second caller gets its permit once the first's deadline passed."""
    slow = AutocallsHook(make_conn("slow", timeout=TIMEOUT, rate_limit=1, max_retries=0))
    other = AutocallsHook(make_conn("other", timeout=TIMEOUT, rate_limit=1))
    sim.inject(Fault(endpoint="send_template", trickle=TRICKLE))
    done: dict[str, float] = {}
    started = time.monotonic()

    def run(name: str, call: Callable[[], object]) -> None:
        with contextlib.suppress(Exception):  # the slow send ends in doubt; only when it ends matters here
            call()
        done[name] = time.monotonic() - started

    threads = [
        threading.Thread(target=run, args=("slow", lambda: slow.send_template(12, 46, PHONE)), daemon=True),
        threading.Thread(target=run, args=("other", lambda: other.get_senders()), daemon=True),
    ]
    threads[0].start()
    while not sim.requests:
        time.sleep(0.01)
    threads[1].start()
    for thread in threads:
        thread.join(TIMEOUT + 5)
    assert done.get("slow", float("inf")) <= TIMEOUT + SLACK
    # The pacer lets the next request go one window (1 s at this rate) after the last answer.
    assert done.get("other", float("inf")) <= TIMEOUT + 1.0 + SLACK


def test_a_trickling_answer_on_an_event_loop_ends_at_the_deadline(
    make_conn: Callable[..., str], sim: AutocallsSimulator
) -> None:
    hook = AutocallsHook(make_conn(timeout=TIMEOUT))
    sim.inject(Fault(endpoint="send_template", trickle=TRICKLE))

    async def send() -> float:
        started = time.monotonic()
        with pytest.raises(SendOutcomeUnknownError, match="timeout of 3 s"):
            await asyncio.wait_for(hook.async_send_template(12, 46, PHONE), TIMEOUT + 10)
        return time.monotonic() - started

    assert TIMEOUT - 0.1 <= asyncio.run(send()) <= TIMEOUT + SLACK
    assert (len(sim.requests), len(sim.delivered)) == (1, 1)


def test_slow_answers_hold_no_other_caller_on_the_loop_past_their_deadline(
    make_conn: Callable[..., str], sim: AutocallsSimulator
) -> None:
    """
    A triggerer: callers on one event loop, one shared client, one pacer for the key (5 requests/s).
    Five sends whose answers trickle take every permit of the second; an unrelated session-status
    read (a trigger's poll) started just after them must be done once their deadline has passed
    (and the pacer's one-second window after their end), not when they finally finish.
    """
    conn_id = make_conn(timeout=TIMEOUT, rate_limit=5, max_retries=0)
    sim.inject(Fault(endpoint="send_template", trickle=TRICKLE, count=5))
    sim.customer_message(12, PHONE)

    async def run() -> tuple[list[float], float]:
        started = time.monotonic()

        async def slow(n: int) -> float:
            with pytest.raises(SendOutcomeUnknownError):
                await AutocallsHook(conn_id).async_send_template(12, 46, f"+1415555{n:04d}")
            return time.monotonic() - started

        slow_ones = [asyncio.create_task(slow(n)) for n in range(5)]
        while len(sim.requests) < 5:
            await asyncio.sleep(0.01)
        status = await asyncio.wait_for(AutocallsHook(conn_id).async_get_session_status(12, PHONE), 15)
        unrelated = time.monotonic() - started
        assert status["session_status"]["is_open"] is True
        return list(await asyncio.wait_for(asyncio.gather(*slow_ones), 15)), unrelated

    slow_ends, unrelated_end = asyncio.run(run())
    assert max(slow_ends) <= TIMEOUT + 1.0 + SLACK  # five sends at 5/s leave over the first second
    assert unrelated_end <= max(slow_ends) + 1.0 + SLACK


def test_every_connection_pool_of_a_sync_client_honours_the_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Direct and through proxies from the environment; this fails loudly if httpx builds its pools differently."""
    from airflow_provider_autocalls.hooks._clients import new_client
    from airflow_provider_autocalls.hooks._settings import build_settings
    from airflow_provider_autocalls.hooks._transport import _DeadlineBackend

    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("ALL_PROXY", "http://127.0.0.1:9")
    client = new_client(build_settings("c", None, "sk-key", {}, {}))
    try:
        transports = [client._transport, *(t for t in client._mounts.values() if t is not None)]
        assert len(transports) >= 2  # the proxies were mounted
        for transport in transports:
            assert isinstance(transport._pool._network_backend, _DeadlineBackend)  # type: ignore[attr-defined]
    finally:
        client.close()
