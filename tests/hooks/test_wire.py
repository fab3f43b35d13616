"""
Failures are classified by what reached the wire, as httpcore's trace tells it, not by error type.

Before the first byte of a request is written (an invalid header, TLS set-up, a failed connect,
no free connection in the pool) the API saw nothing: a send is safely retryable and a bulk-style
loop of sends ends with no recipient "in doubt". ``request_may_have_reached_api`` follows the
same line when something from outside interrupts a call.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from airflow_provider_autocalls.exceptions import AutocallsConnectionError, SendOutcomeUnknownError
from airflow_provider_autocalls.hooks.autocalls import AutocallsHook
from airflow_provider_autocalls.testing import AutocallsSimulator, Fault
from tests.reliability.matrix import refused_url, unanswered_port

PHONES = [f"+1415555{n:04d}" for n in range(12)]


def bulk_loop(hook: AutocallsHook) -> dict[str, int]:
    """Send to every phone as a bulk send does, one at a time; count how each one ended."""
    outcomes = {"sent": 0, "nothing sent": 0, "unknown": 0}
    for phone in PHONES:
        error: SendOutcomeUnknownError | AutocallsConnectionError | None = None
        try:
            hook.send_template(12, 46, phone)
        except (SendOutcomeUnknownError, AutocallsConnectionError) as failure:
            error = failure
        if error is None:
            outcomes["sent"] += 1
        elif isinstance(error, SendOutcomeUnknownError):
            outcomes["unknown"] += 1
        else:
            assert error.retryable
            assert "nothing was sent" in str(error)
            assert hook.request_may_have_reached_api is False
            outcomes["nothing sent"] += 1
    return outcomes


def with_bad_header(hook: AutocallsHook) -> AutocallsHook:
    """A hook whose Authorization header h11 refuses to write (settings are checked; this bypasses them)."""
    object.__setattr__(hook.settings, "api_key", "sk-key-with-a-line-break\n")
    return hook


def test_an_invalid_header_is_nothing_sent(make_conn: Callable[..., str], sim: AutocallsSimulator) -> None:
    hook = with_bad_header(AutocallsHook(make_conn(max_retries=1)))
    assert bulk_loop(hook) == {"sent": 0, "nothing sent": len(PHONES), "unknown": 0}
    assert sim.requests == []


def test_an_invalid_header_is_nothing_sent_on_the_async_path(
    make_conn: Callable[..., str], sim: AutocallsSimulator
) -> None:
    hook = AutocallsHook(make_conn(max_retries=0))

    async def send() -> None:
        settings = await hook.async_settings()
        object.__setattr__(settings, "api_key", "sk-key-with-a-line-break\n")
        await hook.async_send_template(12, 46, PHONES[0])

    with pytest.raises(AutocallsConnectionError, match="LocalProtocolError"):
        asyncio.run(send())
    assert sim.requests == []


def test_a_refused_connection_is_nothing_sent(make_conn: Callable[..., str], sim: AutocallsSimulator) -> None:
    hook = AutocallsHook(make_conn(max_retries=0))
    object.__setattr__(hook.settings, "base_url", refused_url())
    assert bulk_loop(hook) == {"sent": 0, "nothing sent": len(PHONES), "unknown": 0}


def test_a_failed_tls_set_up_is_nothing_sent(make_conn: Callable[..., str], sim: AutocallsSimulator) -> None:
    hook = AutocallsHook(make_conn(max_retries=0))
    # https:// to a server that speaks plain HTTP: the TLS handshake fails before any request.
    object.__setattr__(hook.settings, "base_url", sim.url.replace("http://", "https://"))
    assert bulk_loop(hook) == {"sent": 0, "nothing sent": len(PHONES), "unknown": 0}
    assert sim.requests == []


def test_no_free_connection_in_the_pool_is_nothing_sent(
    make_conn: Callable[..., str], sim: AutocallsSimulator
) -> None:
    import httpx

    from airflow_provider_autocalls.hooks._clients import _options
    from airflow_provider_autocalls.hooks._transport import bind_to_deadlines

    holder = AutocallsHook(make_conn("holder", timeout=5))
    client = httpx.Client(**_options(holder.settings), limits=httpx.Limits(max_connections=1))
    assert bind_to_deadlines(client)
    holder.__dict__["client"] = client
    waiter = AutocallsHook(make_conn("waiter", timeout=0.3, max_retries=0))
    waiter.__dict__["client"] = client  # the same one-connection pool
    sim.inject(Fault(endpoint="senders", delay=1.5))
    holding = threading.Thread(target=holder.get_senders)
    holding.start()
    try:
        while not sim.requests:  # the holder's request has the only connection
            time.sleep(0.01)
        with pytest.raises(AutocallsConnectionError, match="PoolTimeout") as err:
            waiter.send_template(12, 46, PHONES[0])
        assert "nothing was sent" in str(err.value)
        assert waiter.request_may_have_reached_api is False
    finally:
        holding.join(10)
        client.close()
    assert [r["endpoint"] for r in sim.requests] == ["senders"]


@contextlib.contextmanager
def interrupted_after(seconds: float) -> Iterator[type[BaseException]]:
    """Raise an exception of our own in this (main) thread after ``seconds``, like a task's timeout."""

    class Interrupted(BaseException):
        pass

    def interrupt(signum: int, frame: object) -> None:
        raise Interrupted

    previous = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield Interrupted
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_interrupted_while_connecting_nothing_may_have_reached_the_api(
    make_conn: Callable[..., str],
) -> None:
    hook = AutocallsHook(make_conn(timeout=5, max_retries=0))
    with unanswered_port() as port:
        object.__setattr__(hook.settings, "base_url", f"http://127.0.0.1:{port}/api")
        with interrupted_after(0.3) as interrupted, pytest.raises(interrupted):
            hook.send_template(12, 46, PHONES[0])
    assert hook.request_may_have_reached_api is False


def test_interrupted_while_waiting_for_the_answer_the_api_may_have_acted(
    make_conn: Callable[..., str], sim: AutocallsSimulator
) -> None:
    hook = AutocallsHook(make_conn(timeout=5, max_retries=0))
    sim.inject(Fault(endpoint="send_template", delay=1.0))
    with interrupted_after(0.3) as interrupted, pytest.raises(interrupted):
        hook.send_template(12, 46, PHONES[0])
    assert hook.request_may_have_reached_api is True
