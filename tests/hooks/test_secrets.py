"""The API key appears in no log line (httpx and httpcore at DEBUG included), no error text or repr."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from airflow_provider_autocalls.exceptions import AutocallsError
from airflow_provider_autocalls.hooks.autocalls import AutocallsHook
from airflow_provider_autocalls.testing import AutocallsSimulator, Fault

CANARY = "sk-canary-5be1d2a7c9"
PHONE = "+14155550123"


@contextlib.contextmanager
def everything_logged(caplog: pytest.LogCaptureFixture) -> Iterator[list[str]]:
    """Every log line at DEBUG, through stdlib logging and structlog alike."""
    lines: list[str] = []
    loggers = [
        logging.getLogger(name) for name in ("httpx", "httpcore", "airflow", "airflow_provider_autocalls", "")
    ]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.DEBUG)
    try:
        structlog_capture: Any = contextlib.nullcontext([])
        with contextlib.suppress(ImportError):
            from structlog.testing import capture_logs

            structlog_capture = capture_logs()
        with caplog.at_level(logging.DEBUG), structlog_capture as structured:
            yield lines
        lines.extend(f"{r.getMessage()} {r.args!r} {r.exc_text or ''}" for r in caplog.records)
        lines.extend(repr(event) for event in structured)
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


@pytest.fixture
def sim() -> Iterator[AutocallsSimulator]:
    with AutocallsSimulator(api_key=CANARY, rate_limit=0) as simulator:
        yield simulator


def test_the_key_is_in_no_log_line_and_no_error(
    make_conn: Callable[..., str], sim: AutocallsSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    errors: list[BaseException] = []
    with everything_logged(caplog) as lines:
        hook = AutocallsHook(make_conn(max_retries=1))
        hook.get_senders()
        sim.inject(Fault(endpoint="senders", status=502))
        hook.get_senders()
        hook.send_template(12, 45, PHONE, variables={"1": "a", "2": "b", "3": "c"})
        for fault in (
            Fault(status=500),
            Fault(process=True, drop=True),
            Fault(status=429, headers={"Retry-After": "0.1"}, count=5),
        ):
            sim.inject(fault)
            with pytest.raises(AutocallsError) as err:
                hook.send_template(12, 46, PHONE)
            errors.append(err.value)
        with pytest.raises(AutocallsError) as err:
            hook.send_freeform(12, PHONE, "closed window")
        errors.append(err.value)
        with pytest.raises(AutocallsError) as err:
            AutocallsHook(make_conn("wrong", password=CANARY + "-wrong")).get_senders()
        errors.append(err.value)
        hook.test_connection()
        lines.append(repr(hook.settings))
    assert any("HTTP Request" in line for line in lines), "httpx's own log lines were not captured"
    assert any(line.startswith("send_request_headers") for line in lines), (
        "httpcore's DEBUG lines were not captured"
    )
    leaks = [line for line in lines if CANARY in line]
    leaks += [text for e in errors for text in (str(e), repr(e), repr(e.__dict__)) if CANARY in text]
    assert leaks == []


def test_a_key_with_a_trailing_newline_is_refused_unshown_and_unsent(
    make_conn: Callable[..., str], sim: AutocallsSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    """Pasted with its line break, the key used to fail inside h11 with the whole header in the error."""
    import asyncio
    import traceback

    from airflow_provider_autocalls.exceptions import AutocallsValidationError
    from tests.reliability.test_secret_hygiene import debug_everywhere

    conn_id = make_conn("newline", password=CANARY + "\n")
    errors: list[BaseException] = []
    with debug_everywhere(), everything_logged(caplog) as lines:
        for call in (
            lambda hook: hook.send_template(12, 46, PHONE),
            lambda hook: hook.get_senders(),
            lambda hook: asyncio.run(hook.async_send_template(12, 46, PHONE)),
            lambda hook: hook.test_connection(),
        ):
            hook = AutocallsHook(conn_id)
            try:
                result = call(hook)
            except AutocallsValidationError as exc:
                errors.append(exc)
            else:  # test_connection never raises: it answers with the message
                assert result[0] is False
                lines.append(result[1])
                assert result[1].startswith("password: ")
    assert len(errors) == 3
    assert all(error.field == "password" for error in errors)  # type: ignore[attr-defined]
    assert sim.requests == []
    secret = CANARY.removeprefix("sk-canary-")
    texts = lines + [
        text
        for error in errors
        for text in (str(error), repr(error), "".join(traceback.format_exception(error)))
    ]
    assert [text for text in texts if secret in text] == []
    assert len(lines) > 1, "no log line was captured besides test_connection's message"
