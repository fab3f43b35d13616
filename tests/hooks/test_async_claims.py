"""
A claimed send on the event loop is settled by what reached the wire, as on the sync path.

A trigger, an async ``@task`` or an ``asyncio.wait_for`` cancels a send from outside. Cancelled
once the request may have reached the API, the claim is ``unknown`` and no later try sends the
message again; cancelled before a byte of it was written, the message stays sendable.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException
from pytest_mock import MockerFixture

from airflow_provider_autocalls import metrics
from airflow_provider_autocalls.exceptions import AutocallsConnectionError, SendOutcomeUnknownError
from airflow_provider_autocalls.hooks._claims import under_claim
from airflow_provider_autocalls.hooks.autocalls import AutocallsHook
from airflow_provider_autocalls.ledger import Claim, Ledger, State, ledger_for, phone_key
from airflow_provider_autocalls.testing import AutocallsSimulator, Fault
from tests.reliability.matrix import refused_url, unanswered_port

PHONE = "+14155550123"
KEY = phone_key(PHONE)


def context(try_number: int = 1) -> Any:
    ti = SimpleNamespace(dag_id="d", run_id="r", task_id="notify", map_index=-1, try_number=try_number)
    return {"ti": ti}


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    found = ledger_for(context(), str(tmp_path))
    assert found is not None
    return found


@pytest.fixture
def claim(ledger: Ledger) -> Claim:
    """A claim on the recipient, as the send operators and the bulk engine choose one."""
    return ledger.new_claim(KEY, PHONE)


@pytest.fixture
def hook(make_conn: Callable[..., str]) -> AutocallsHook:
    return AutocallsHook(make_conn(timeout=10, max_retries=0))


def state(ledger: Ledger, key: str = KEY) -> State | None:
    entry = ledger.entry(key)
    return None if entry is None else entry.state


async def until(condition: Callable[[], bool], limit: float = 10.0) -> None:
    """Wait (on the loop) until ``condition()`` holds."""
    async with asyncio.timeout(limit):
        while not condition():
            await asyncio.sleep(0.01)


def cancel_when(hook: AutocallsHook, claim: Claim | None, ready: Callable[[], bool]) -> None:
    """Start a send under ``claim``, cancel it once ``ready()`` holds, and check it was cancelled."""

    async def scenario() -> None:
        with under_claim(claim):
            sending = asyncio.create_task(hook.async_send_template(12, 46, PHONE))
        await until(ready)
        sending.cancel()
        with pytest.raises(asyncio.CancelledError):
            await sending

    asyncio.run(scenario())


# -- cancelled once the request reached the wire: in doubt ------------------------------------------------


def test_cancelled_while_awaiting_the_answer_is_unknown(
    hook: AutocallsHook, sim: AutocallsSimulator, ledger: Ledger, claim: Claim, mocker: MockerFixture
) -> None:
    unknown = mocker.patch.object(metrics, "unknown")
    sim.inject(Fault(endpoint="send_template", delay=3.0))  # processed (delivered) at once, answered late
    cancel_when(hook, claim, lambda: bool(sim.requests))
    assert len(sim.delivered) == 1
    assert state(ledger) is State.UNKNOWN
    unknown.assert_called_once_with()  # counted as autocalls.unknown too
    with pytest.raises(RuntimeError, match="unknown"):
        claim.take()  # a claim that may have gone out is never taken again


def test_a_wait_for_timeout_while_awaiting_the_answer_is_unknown(
    hook: AutocallsHook, sim: AutocallsSimulator, ledger: Ledger, claim: Claim
) -> None:
    sim.inject(Fault(endpoint="send_template", delay=3.0))

    async def scenario() -> None:
        with under_claim(claim):
            await asyncio.wait_for(hook.async_send_template(12, 46, PHONE), timeout=1.0)

    with pytest.raises(TimeoutError):
        asyncio.run(scenario())
    assert len(sim.delivered) == 1
    assert state(ledger) is State.UNKNOWN


def test_another_error_after_the_request_left_is_unknown(
    hook: AutocallsHook, sim: AutocallsSimulator, ledger: Ledger, claim: Claim, mocker: MockerFixture
) -> None:
    # Something other than httpx fails while the answer is read: the API has the message already.
    mocker.patch(
        "airflow_provider_autocalls.hooks._transport._aread_capped", side_effect=RuntimeError("broken")
    )

    async def scenario() -> None:
        with under_claim(claim):
            await hook.async_send_template(12, 46, PHONE)

    with pytest.raises(RuntimeError, match="broken"):
        asyncio.run(scenario())
    assert len(sim.delivered) == 1
    assert state(ledger) is State.UNKNOWN


def test_a_lost_answer_is_unknown(
    hook: AutocallsHook, sim: AutocallsSimulator, ledger: Ledger, claim: Claim
) -> None:
    sim.inject(Fault(endpoint="send_template", process=True, drop=True))

    async def scenario() -> None:
        with under_claim(claim):
            await hook.async_send_template(12, 46, PHONE)

    with pytest.raises(SendOutcomeUnknownError):
        asyncio.run(scenario())
    assert len(sim.delivered) == 1
    assert state(ledger) is State.UNKNOWN


def test_a_cancelled_async_task_is_not_sent_again_by_its_next_try(
    make_conn: Callable[..., str], sim: AutocallsSimulator, tmp_path: Path, mocker: MockerFixture
) -> None:
    """The hook inside an async ``@task``: try 1 is cancelled mid-request, try 2 must not resend."""
    conn_id = make_conn(timeout=10, max_retries=0)
    running = mocker.patch("airflow_provider_autocalls.hooks._claims._running_task_context")
    running.return_value = context(try_number=1)
    sim.inject(Fault(endpoint="send_template", delay=3.0))
    cancel_when(AutocallsHook(conn_id, ledger_location=str(tmp_path)), None, lambda: bool(sim.requests))
    assert len(sim.delivered) == 1

    running.return_value = context(try_number=2)
    second = AutocallsHook(conn_id, ledger_location=str(tmp_path))
    with pytest.raises(AirflowFailException, match="may have been delivered"):
        asyncio.run(second.async_send_template(12, 46, PHONE))
    assert len(sim.delivered) == 1


# -- cancelled before a byte of the request was written: nothing sent -------------------------------------


def test_cancelled_while_connecting_is_released(
    hook: AutocallsHook, sim: AutocallsSimulator, ledger: Ledger, claim: Claim, mocker: MockerFixture
) -> None:
    unknown = mocker.patch.object(metrics, "unknown")
    with unanswered_port() as port:

        async def scenario() -> None:
            settings = await hook.async_settings()
            object.__setattr__(settings, "base_url", f"http://127.0.0.1:{port}/api")
            with under_claim(claim):
                sending = asyncio.create_task(hook.async_send_template(12, 46, PHONE))
            await until(lambda: claim.taken)  # the claim is down; the connect never completes
            await asyncio.sleep(0.3)
            sending.cancel()
            with pytest.raises(asyncio.CancelledError):
                await sending

        asyncio.run(scenario())
    assert sim.requests == []
    assert state(ledger) is State.RELEASED
    unknown.assert_not_called()


def test_cancelled_while_waiting_for_a_permit_claims_nothing(
    hook: AutocallsHook, sim: AutocallsSimulator, ledger: Ledger, claim: Claim
) -> None:
    async def scenario() -> None:
        (await hook._async_client())[1].hold_off(5.0)  # the key's pacer holds every caller back
        with under_claim(claim):
            sending = asyncio.create_task(hook.async_send_template(12, 46, PHONE))
        await asyncio.sleep(0.3)
        sending.cancel()
        with pytest.raises(asyncio.CancelledError):
            await sending

    asyncio.run(scenario())
    assert sim.requests == []
    assert not claim.taken
    assert state(ledger) is None  # no claim was made: the message is sendable


def test_a_refused_connection_is_released(
    hook: AutocallsHook, sim: AutocallsSimulator, ledger: Ledger, claim: Claim
) -> None:
    async def scenario() -> None:
        settings = await hook.async_settings()
        object.__setattr__(settings, "base_url", refused_url())
        with under_claim(claim):
            await hook.async_send_template(12, 46, PHONE)

    with pytest.raises(AutocallsConnectionError, match="nothing was sent"):
        asyncio.run(scenario())
    assert state(ledger) is State.RELEASED
