"""
The fault matrix: every endpoint of the hook by every fault the simulator (or the network) can
produce, what must happen in each cell, and a runner that measures what does happen.

Shared by ``tests/reliability/test_fault_matrix.py``, which asserts every cell, and
``scripts/reliability_table.py``, which runs that test module and writes ``docs/reliability.md``.

A cell runs against a simulator of its own on 127.0.0.1, with an API key of its own (so it also
has a pacer of its own: a 429's hold-off in one cell never slows another), a connection with
``timeout`` = :data:`TIMEOUT` and ``max_retries`` = :data:`MAX_RETRIES`, and no rate limit. Cells
run in parallel batches; each is bounded by its timeouts, so the whole matrix takes seconds.

Importing this module imports neither Airflow nor httpx: the runner loads them when it runs.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal

from airflow_provider_autocalls import exceptions

if TYPE_CHECKING:
    from airflow_provider_autocalls.hooks.autocalls import AutocallsHook
    from airflow_provider_autocalls.testing import AutocallsSimulator

ENDPOINTS: Final = ("senders", "templates", "session_status", "send_template", "send_freeform")
SENDS: Final = frozenset({"send_template", "send_freeform"})

SENDER_ID: Final = 12  # seeded: online
TEMPLATE_ID: Final = 46  # seeded: approved, no variables
PHONE: Final = "+14155550123"
MESSAGE: Final = "Your report is ready."

#: The connection's ``timeout`` extra (seconds); connecting gives up after the same time.
TIMEOUT: Final = 0.5
#: How late a slow or hanging answer is: well past :data:`TIMEOUT`.
LATE: Final = 1.5
#: The connection's ``max_retries`` extra in the matrix: a call makes at most this many + 1 attempts.
MAX_RETRIES: Final = 2
ATTEMPTS: Final = MAX_RETRIES + 1
#: A fault's ``count`` that outlasts every attempt of a call.
EVERY: Final = 100
#: Cells prepared and run together (each holds a simulator: a thread and a few sockets).
BATCH: Final = 32
#: No cell may take longer than this (its faults and timeouts bound it to a few seconds).
CELL_TIME_LIMIT: Final = 60.0

#: The call returned the API's real answer (checked against what the simulator holds).
RECOVERED: Final = "recovered"
#: The call returned without an error, but what it returned is not an answer of the API.
NOT_AN_ANSWER: Final = "returned a non-answer"
CONNECTION: Final = exceptions.AutocallsConnectionError.__name__
SERVER: Final = exceptions.AutocallsServerError.__name__
RATE_LIMIT: Final = exceptions.RateLimitError.__name__
API: Final = exceptions.AutocallsAPIError.__name__
UNKNOWN: Final = exceptions.SendOutcomeUnknownError.__name__

#: The name under which tests record what they saw (``record_property``), for the table.
RECORD: Final = "fault_matrix"

Network = Literal["simulator", "refused", "connect-timeout"]

HTML_PAGE: Final = (
    "<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head>"
    "<body><center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body></html>"
)
PORTAL_PAGE: Final = "<!DOCTYPE html><html><body><h1>Welcome</h1><p>Please sign in.</p></body></html>"
TRUNCATED_JSON: Final = '{"success": true, "data": [{"id": 12, "phone_number": "+1415'
WRONG_SHAPE_OBJECT: Final = '{"status": "ok"}'
SUCCESS_FALSE: Final = '{"success": false, "error": "Something went wrong"}'
SENDER_OFFLINE: Final = json.dumps(
    {
        "success": False,
        "error": "Sender is not online. Current status: Offline",
        "error_code": "SENDER_OFFLINE",
    }
)


@dataclass(frozen=True)
class Expect:
    """
    What one call ends in.

    :param outcome: :data:`RECOVERED`, :data:`NOT_AN_ANSWER`, or the name of the public error class.
    :param requests: how many requests the simulator saw.
    :param delivered: how many messages the simulator delivered (sends; always 0 for reads).
    :param detail: the error's HTTP status (``"HTTP 503"``) or, when no answer came, the transport
        failure under it (``"ReadTimeout"``); empty for a call that returned.
    :param attempts: how many attempts the hook made, when that differs from ``requests`` (a
        connection that was never made reaches no simulator).
    """

    outcome: str
    requests: int
    delivered: int = 0
    detail: str = ""
    attempts: int | None = None

    @property
    def hook_attempts(self) -> int:
        return self.requests if self.attempts is None else self.attempts


@dataclass(frozen=True)
class Case:
    """
    One fault, and what must happen when it meets a read and when it meets a send.

    :param fault: keyword arguments of the simulator's ``Fault`` (its ``endpoint`` is the cell's).
    :param network: where the hook connects: the simulator, a port nobody listens on, or a port
        whose accept queue is full (so connecting times out).
    """

    id: str
    label: str
    read: Expect
    send: Expect
    fault: Mapping[str, Any] | None = None
    network: Network = "simulator"


@dataclass(frozen=True)
class KnownIssue:
    """A cell where the library does not do what it should: what it does instead, and why it is wrong."""

    seen: Expect
    note: str


@dataclass(frozen=True)
class Cell:
    endpoint: str
    case: Case

    @property
    def id(self) -> str:
        return f"{self.endpoint}-{self.case.id}"

    @property
    def is_send(self) -> bool:
        return self.endpoint in SENDS

    @property
    def expected(self) -> Expect:
        """What the README promises."""
        return self.case.send if self.is_send else self.case.read

    @property
    def known_issue(self) -> KnownIssue | None:
        return KNOWN_ISSUES.get((self.endpoint, self.case.id))

    @property
    def asserted(self) -> Expect:
        """What the test holds the library to: the promise, or what it does today if that is a known issue."""
        issue = self.known_issue
        return issue.seen if issue else self.expected


@dataclass(frozen=True)
class Observed:
    """What one call did."""

    outcome: str
    detail: str
    requests: int
    delivered: int
    attempts: int
    #: The error's message, or the repr of what the call returned (shortened).
    message: str
    #: Whether the API key shows in the message (it never may).
    key_leaked: bool


def _status_cases() -> list[Case]:
    cases = [
        Case(
            "500",
            "500 after the API acted",
            fault={"status": 500, "process": True},
            read=Expect(SERVER, 1, detail="HTTP 500"),
            send=Expect(UNKNOWN, 1, 1, detail="HTTP 500"),
        )
    ]
    for status in (502, 503, 504):
        cases += [
            Case(
                str(status),
                f"{status} after the API acted, once",
                fault={"status": status, "process": True},
                read=Expect(RECOVERED, 2),
                send=Expect(UNKNOWN, 1, 1, detail=f"HTTP {status}"),
            ),
            Case(
                f"{status}-always",
                f"{status} after the API acted, on every attempt",
                fault={"status": status, "process": True, "count": EVERY},
                read=Expect(SERVER, ATTEMPTS, detail=f"HTTP {status}"),
                send=Expect(UNKNOWN, 1, 1, detail=f"HTTP {status}"),
            ),
        ]
    return cases


CASES: Final[tuple[Case, ...]] = (
    Case(
        "refused",
        "connection refused (nothing listens on the port)",
        network="refused",
        read=Expect(CONNECTION, 0, detail="ConnectError", attempts=ATTEMPTS),
        send=Expect(CONNECTION, 0, detail="ConnectError", attempts=ATTEMPTS),
    ),
    Case(
        "connect-timeout",
        "connect timeout (the port's accept queue is full, so the SYN goes unanswered)",
        network="connect-timeout",
        read=Expect(CONNECTION, 0, detail="ConnectTimeout", attempts=ATTEMPTS),
        send=Expect(CONNECTION, 0, detail="ConnectTimeout", attempts=ATTEMPTS),
    ),
    Case(
        "read-timeout",
        f"read timeout: the API hangs without acting ({LATE:g} s, then closes), once",
        fault={"drop": True, "delay": LATE},
        read=Expect(RECOVERED, 2),
        send=Expect(UNKNOWN, 1, 0, detail="ReadTimeout"),
    ),
    Case(
        "read-timeout-always",
        "read timeout: the API hangs without acting, on every attempt",
        fault={"drop": True, "delay": LATE, "count": EVERY},
        read=Expect(SERVER, ATTEMPTS, detail="ReadTimeout"),
        send=Expect(UNKNOWN, 1, 0, detail="ReadTimeout"),
    ),
    Case(
        "dropped",
        "connection dropped after the API acted, once",
        fault={"process": True, "drop": True},
        read=Expect(RECOVERED, 2),
        send=Expect(UNKNOWN, 1, 1, detail="RemoteProtocolError"),
    ),
    Case(
        "dropped-always",
        "connection dropped after the API acted, on every attempt",
        fault={"process": True, "drop": True, "count": EVERY},
        read=Expect(SERVER, ATTEMPTS, detail="RemoteProtocolError"),
        send=Expect(UNKNOWN, 1, 1, detail="RemoteProtocolError"),
    ),
    Case(
        "slow",
        f"slow answer: the API acts and answers {LATE:g} s later, past the timeout, once",
        fault={"delay": LATE},
        read=Expect(RECOVERED, 2),
        send=Expect(UNKNOWN, 1, 1, detail="ReadTimeout"),
    ),
    Case(
        "slow-always",
        "slow answer past the timeout, on every attempt",
        fault={"delay": LATE, "count": EVERY},
        read=Expect(SERVER, ATTEMPTS, detail="ReadTimeout"),
        send=Expect(UNKNOWN, 1, 1, detail="ReadTimeout"),
    ),
    *_status_cases(),
    Case(
        "429-retry-after",
        "429 with Retry-After: 1, once",
        fault={"status": 429, "headers": {"Retry-After": "1"}},
        read=Expect(RECOVERED, 2),
        send=Expect(RECOVERED, 2, 1),
    ),
    Case(
        "429-no-retry-after",
        "429 without Retry-After, once (the hook waits 1 s)",
        fault={"status": 429},
        read=Expect(RECOVERED, 2),
        send=Expect(RECOVERED, 2, 1),
    ),
    Case(
        "429-always",
        "429 with Retry-After: 0.2, on every attempt",
        fault={"status": 429, "headers": {"Retry-After": "0.2"}, "count": EVERY},
        read=Expect(RATE_LIMIT, ATTEMPTS, detail="HTTP 429"),
        send=Expect(RATE_LIMIT, ATTEMPTS, 0, detail="HTTP 429"),
    ),
    Case(
        "429-long-retry-after",
        "429 with Retry-After: 3600 (over the hook's 60 s cap)",
        fault={"status": 429, "headers": {"Retry-After": "3600"}},
        read=Expect(RATE_LIMIT, 1, detail="HTTP 429"),
        send=Expect(RATE_LIMIT, 1, 0, detail="HTTP 429"),
    ),
    Case(
        "502-html",
        "502 with an HTML error page (a proxy's) after the API acted, once",
        fault={"status": 502, "body": HTML_PAGE, "process": True},
        read=Expect(RECOVERED, 2),
        send=Expect(UNKNOWN, 1, 1, detail="HTTP 502"),
    ),
    Case(
        "200-html",
        "200 with an HTML page (something else answered; the API did not act)",
        fault={"status": 200, "body": PORTAL_PAGE},
        read=Expect(API, 1, detail="HTTP 200"),
        send=Expect(UNKNOWN, 1, 0, detail="HTTP 200"),
    ),
    Case(
        "200-empty",
        "200 with an empty body after the API acted",
        fault={"status": 200, "body": "", "process": True},
        read=Expect(API, 1, detail="HTTP 200"),
        send=Expect(UNKNOWN, 1, 1, detail="HTTP 200"),
    ),
    Case(
        "200-truncated",
        "200 with JSON cut short after the API acted",
        fault={"status": 200, "body": TRUNCATED_JSON, "process": True},
        read=Expect(API, 1, detail="HTTP 200"),
        send=Expect(UNKNOWN, 1, 1, detail="HTTP 200"),
    ),
    Case(
        "200-wrong-shape-object",
        f"200 with a JSON object of the wrong shape, `{WRONG_SHAPE_OBJECT}` (the API did not act)",
        fault={"status": 200, "body": WRONG_SHAPE_OBJECT},
        read=Expect(API, 1, detail="HTTP 200"),
        send=Expect(UNKNOWN, 1, 0, detail="HTTP 200"),
    ),
    Case(
        "200-wrong-shape-list",
        "200 with a JSON list, `[]`, instead of an object (the API did not act)",
        fault={"status": 200, "body": "[]"},
        read=Expect(API, 1, detail="HTTP 200"),
        send=Expect(UNKNOWN, 1, 0, detail="HTTP 200"),
    ),
    Case(
        "200-success-false",
        f"200 with `{SUCCESS_FALSE}` (the API refused)",
        fault={"status": 200, "body": SUCCESS_FALSE},
        read=Expect(API, 1, detail="HTTP 200"),
        send=Expect(API, 1, 0, detail="HTTP 200"),
    ),
)


KNOWN_ISSUES: Final[dict[tuple[str, str], KnownIssue]] = {}

CELLS: Final[tuple[Cell, ...]] = tuple(Cell(endpoint, case) for endpoint in ENDPOINTS for case in CASES)


# -- through the operators, in DAG runs -------------------------------------------------------------------

#: The hook's retries inside DAG runs (Airflow's own retries are 3).
DAG_MAX_RETRIES: Final = 1


@dataclass(frozen=True)
class DagOutcome:
    """
    How a DAG run of one send task ends.

    :param tries: the task's ``(state, try_number)`` at the end of the run.
    """

    state: str
    tries: tuple[tuple[str, int], ...]
    requests: int
    delivered: int


@dataclass(frozen=True)
class DagCell:
    """One fault met by a send operator in a DAG run with ``retries=3, retry_delay=0``."""

    id: str
    operator: Literal["SendTemplateOperator", "SendFreeformOperator"]
    label: str
    expectation: str
    expected: DagOutcome
    fault: Mapping[str, Any] | None = None
    network: Literal["simulator", "refused"] = "simulator"
    #: What the run does instead of ``expected`` today, and why that is wrong.
    known_issue: tuple[DagOutcome, str] | None = None

    @property
    def endpoint(self) -> str:
        return "send_template" if self.operator == "SendTemplateOperator" else "send_freeform"

    @property
    def asserted(self) -> DagOutcome:
        return self.known_issue[0] if self.known_issue else self.expected


DAG_CELLS: Final[tuple[DagCell, ...]] = (
    DagCell(
        "template-502-after-acting",
        "SendTemplateOperator",
        "502 after the API acted",
        "send in doubt: the task fails on try 1, Airflow does not retry",
        DagOutcome("failed", (("failed", 1),), requests=1, delivered=1),
        fault={"status": 502, "process": True},
    ),
    DagCell(
        "freeform-slow-answer",
        "SendFreeformOperator",
        "slow answer past the timeout (the API acted)",
        "send in doubt: the task fails on try 1, Airflow does not retry",
        DagOutcome("failed", (("failed", 1),), requests=1, delivered=1),
        fault={"delay": LATE},
    ),
    DagCell(
        "template-429-past-the-hooks-retries",
        "SendTemplateOperator",
        f"429 (Retry-After: 0.2) on the hook's {DAG_MAX_RETRIES + 1} attempts",
        "RateLimitError is retryable: try 2 sends, once",
        DagOutcome("success", (("success", 2),), requests=DAG_MAX_RETRIES + 2, delivered=1),
        fault={"status": 429, "headers": {"Retry-After": "0.2"}, "count": DAG_MAX_RETRIES + 1},
    ),
    DagCell(
        "freeform-503-sender-offline",
        "SendFreeformOperator",
        "503 SENDER_OFFLINE (a refusal: nothing was sent)",
        "SenderOfflineError is retryable: try 2 sends, once",
        DagOutcome("success", (("success", 2),), requests=2, delivered=1),
        fault={"status": 503, "body": SENDER_OFFLINE},
    ),
    DagCell(
        "template-connection-refused",
        "SendTemplateOperator",
        "connection refused on every try",
        "AutocallsConnectionError is retryable: 4 tries, then the task fails; nothing sent",
        DagOutcome("failed", (("failed", 4),), requests=0, delivered=0),
        network="refused",
    ),
    DagCell(
        "freeform-200-success-false",
        "SendFreeformOperator",
        "200 with success: false (the API refused)",
        "AutocallsAPIError is not retryable: the task fails on try 1",
        DagOutcome("failed", (("failed", 1),), requests=1, delivered=0),
        fault={"status": 200, "body": SUCCESS_FALSE},
    ),
    DagCell(
        "template-200-wrong-shape-object",
        "SendTemplateOperator",
        f"200 with `{WRONG_SHAPE_OBJECT}` (the API did not act)",
        "send in doubt: the task fails on try 1, Airflow does not retry",
        DagOutcome("failed", (("failed", 1),), requests=1, delivered=0),
        fault={"status": 200, "body": WRONG_SHAPE_OBJECT},
    ),
)


# -- running cells ------------------------------------------------------------------------------------------


def refused_url() -> str:
    """A base URL on 127.0.0.1 where nothing listens: connecting is refused at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/api"


@contextlib.contextmanager
def unanswered_port() -> Iterator[int]:
    """
    A port on 127.0.0.1 that listens but never completes a new connection.

    Its accept queue (backlog 0) is filled with a connection nobody accepts; Linux then drops new
    SYNs, so a client's connect waits until its own timeout. That is a true connect timeout on
    loopback, with no outside network.
    """
    with contextlib.ExitStack() as stack:
        listener = stack.enter_context(socket.socket())
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port: int = listener.getsockname()[1]
        for _ in range(8):
            filler = stack.enter_context(socket.socket())
            filler.settimeout(0.2)
            try:
                filler.connect(("127.0.0.1", port))
            except TimeoutError:
                break  # the queue is full: from now on a connect goes unanswered
        else:
            raise RuntimeError(f"could not fill the accept queue of port {port}: no connect timeout here")
        yield port


@contextlib.contextmanager
def _base_url(network: Network, sim: AutocallsSimulator) -> Iterator[str]:
    if network == "simulator":
        yield sim.url
    elif network == "refused":
        yield refused_url()
    else:
        with unanswered_port() as port:
            yield f"http://127.0.0.1:{port}/api"


def _new_hook(base_url: str, api_key: str) -> AutocallsHook:
    """A hook whose connection points at ``base_url``, with its settings and client built now."""
    from airflow_provider_autocalls.hooks.autocalls import AutocallsHook

    conn_id = f"autocalls_fault_matrix_{secrets.token_hex(6)}"
    variable = f"AIRFLOW_CONN_{conn_id.upper()}"
    extra = {"timeout": TIMEOUT, "max_retries": MAX_RETRIES, "rate_limit": 1000}
    conn = {"conn_type": "autocalls", "host": base_url, "password": api_key, "extra": extra}
    # Set, read and removed on the calling thread while no cell runs: the environment is not
    # thread-safe, and the hook reads its connection once.
    os.environ[variable] = json.dumps(conn)
    try:
        hook = AutocallsHook(conn_id)
        hook.get_conn()
    finally:
        del os.environ[variable]
    return hook


def _count_attempts(hook: AutocallsHook) -> list[int]:
    """Count the hook's attempts (a refused connect reaches no simulator, so it cannot count them)."""
    attempt = hook._attempt
    counter = [0]

    def counted(*args: Any) -> Any:
        counter[0] += 1
        return attempt(*args)

    hook.__dict__["_attempt"] = counted
    return counter


@dataclass
class _Prepared:
    cell: Cell
    sim: AutocallsSimulator
    hook: AutocallsHook
    attempts: list[int]


@contextlib.contextmanager
def _prepared(cell: Cell) -> Iterator[_Prepared]:
    from airflow_provider_autocalls.testing import AutocallsSimulator, Fault

    # A key of its own: the hook's pacer is per (base URL, key), and a port can be reused.
    api_key = f"matrix-{secrets.token_hex(8)}"
    with contextlib.ExitStack() as stack:
        sim = stack.enter_context(AutocallsSimulator(api_key=api_key, rate_limit=0))
        base_url = stack.enter_context(_base_url(cell.case.network, sim))
        if cell.endpoint == "send_freeform":
            sim.customer_message(SENDER_ID, PHONE)  # the window is open: freeform can succeed
        if cell.case.fault is not None:
            sim.inject(Fault(endpoint=cell.endpoint, **cell.case.fault))
        hook = _new_hook(base_url, api_key)
        stack.callback(hook.close)
        yield _Prepared(cell, sim, hook, _count_attempts(hook))


_CALLS: Final[dict[str, Callable[[AutocallsHook], Any]]] = {
    "senders": lambda hook: hook.get_senders(),
    "templates": lambda hook: hook.get_templates(SENDER_ID),
    "session_status": lambda hook: hook.get_session_status(SENDER_ID, PHONE),
    "send_template": lambda hook: hook.send_template(SENDER_ID, TEMPLATE_ID, PHONE),
    "send_freeform": lambda hook: hook.send_freeform(SENDER_ID, PHONE, MESSAGE),
}


def _is_answer(endpoint: str, value: Any, delivered: list[dict[str, Any]]) -> bool:
    """Whether ``value`` is the simulator's real answer to the cell's call."""
    if endpoint == "senders":
        return isinstance(value, list) and [s.get("id") for s in value] == [SENDER_ID]
    if endpoint == "templates":
        return isinstance(value, list) and sorted(t.get("id") for t in value) == [45, TEMPLATE_ID, 49]
    if endpoint == "session_status":
        return (
            isinstance(value, dict)
            and value.get("success") is True
            and isinstance(value.get("session_status"), dict)
        )
    return (
        isinstance(value, dict)
        and len(delivered) == 1
        and value.get("success") is True
        and value.get("message_sid") == delivered[0]["message_sid"]
    )


def public_error_name(error: BaseException) -> str:
    """The error's class as users see it: the nearest class of the public ``exceptions`` module."""
    for cls in type(error).__mro__:
        if cls.__module__ == exceptions.__name__:
            return cls.__name__
    return f"untyped {type(error).__module__}.{type(error).__qualname__}"


def _detail(error: BaseException) -> str:
    status = getattr(error, "status_code", None)
    if status:
        return f"HTTP {status}"
    return type(error.__cause__).__name__ if error.__cause__ is not None else ""


def _run(prepared: _Prepared) -> Observed:
    cell, sim = prepared.cell, prepared.sim
    try:
        value = _CALLS[cell.endpoint](prepared.hook)
    except Exception as error:
        outcome, detail, message = public_error_name(error), _detail(error), str(error)
    else:
        delivered = sim.delivered
        outcome = RECOVERED if _is_answer(cell.endpoint, value, delivered) else NOT_AN_ANSWER
        detail, message = "", repr(value)
    return Observed(
        outcome=outcome,
        detail=detail,
        requests=len(sim.requests),
        delivered=len(sim.delivered),
        attempts=prepared.attempts[0],
        message=message[:500],
        key_leaked=sim.api_key in message,
    )


def _expected_seconds(cell: Cell) -> float:
    """A rough duration, so that slow cells share batches and fast ones follow."""
    case, expect = cell.case, cell.asserted
    if case.network == "connect-timeout":
        return 1 + ATTEMPTS * TIMEOUT
    fault = case.fault or {}
    seconds = expect.hook_attempts * 0.1
    if fault.get("delay"):
        seconds += min(expect.hook_attempts, fault.get("count", 1)) * TIMEOUT
    if fault.get("status") == 429:
        seconds += 1
    if expect.hook_attempts > 1:
        seconds += 0.5 * (expect.hook_attempts - 1)  # the hook's backoff
    return seconds


def run_matrix(cells: Sequence[Cell], batch_size: int = BATCH) -> dict[str, Observed]:
    """Run ``cells`` (in parallel batches) and return what each did, by cell id."""
    ordered = sorted(cells, key=_expected_seconds, reverse=True)
    observed: dict[str, Observed] = {}
    with ThreadPoolExecutor(max_workers=batch_size, thread_name_prefix="fault-matrix") as pool:
        for start in range(0, len(ordered), batch_size):
            with contextlib.ExitStack() as stack:
                batch = [stack.enter_context(_prepared(cell)) for cell in ordered[start : start + batch_size]]
                futures = [pool.submit(_run, prepared) for prepared in batch]
                for prepared, future in zip(batch, futures, strict=True):
                    observed[prepared.cell.id] = future.result(timeout=CELL_TIME_LIMIT)
    return observed
