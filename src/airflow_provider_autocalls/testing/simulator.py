"""A local stand-in for the Autocalls WhatsApp API, standard library only.

Serves the API under ``/api`` and control endpoints under ``/_sim`` (see the package docs) on a
daemon thread; binds to 127.0.0.1 unless told otherwise::

    with AutocallsSimulator() as sim:
        sim.customer_message(12, "+15551234567")
        ...  # point a client at sim.url with sim.api_key
"""

from __future__ import annotations

import contextlib
import json
import selectors
import socket
import socketserver
import sys
import threading
import time
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

from airflow_provider_autocalls.testing.simulator_models import (
    Fault,
    Response,
    Sender,
    Template,
    fault_from_json,
    fault_response,
    json_response,
)
from airflow_provider_autocalls.testing.simulator_state import SimulatorState

__all__ = ["AutocallsSimulator", "Fault"]

_CONTROL_PREFIX = "/_sim/"
_MAX_BODY = 1 << 20


class _Handler(BaseHTTPRequestHandler):
    """One keep-alive connection; every request is answered with Content-Length."""

    protocol_version = "HTTP/1.1"
    server_version = "AutocallsSimulator"
    sys_version = ""
    # Headers and body go out in two writes: without TCP_NODELAY, Nagle + delayed ACK add ~40 ms.
    disable_nagle_algorithm = True
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, add=False)

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: benchmarks send thousands of requests (and nothing may echo a key)."""

    def do_GET(self) -> None:
        self._dispatch()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_GET

    def _dispatch(self) -> None:
        parts = urlsplit(self.path)
        path = parts.path
        try:
            raw = self._read_body()
        except ValueError:
            self.close_connection = True
            self._send(json_response(400, {"message": "Bad Request"}))
            return
        payload = _parse_json(raw)
        if path.startswith(_CONTROL_PREFIX):
            self._send(_control(self.server.simulator, self.command, path, payload))
            return
        # Laravel's TrimStrings: query values arrive trimmed ("+" unencoded is a space, as in PHP).
        query = {k: v[-1].strip() for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        state = self.server.simulator._state
        record, response, fault = state.handle(self.command, path, query, payload, _bearer(self.headers))
        if fault is not None:
            if fault.delay:
                time.sleep(fault.delay)
            if fault.drop:
                state.set_status(record, 0)
                self.close_connection = True
                return
            if fault.status is not None:
                response = fault_response(fault)
                state.set_status(record, fault.status)
            else:
                assert response is not None
                response.headers.update(fault.headers)
        assert response is not None
        if fault is not None and fault.trickle:
            self._send_slowly(response, fault.trickle)
        else:
            self._send(response)

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        if length < 0 or length > _MAX_BODY:
            raise ValueError("bad Content-Length")
        return self.rfile.read(length) if length else b""

    def _send_slowly(self, response: Response, interval: float) -> None:
        """Write the whole answer one byte at a time, ``interval`` seconds apart."""
        lines = [f"HTTP/1.1 {response.status} {self.responses.get(response.status, ('',))[0]}"]
        lines += [
            f"{name}: {value}" for name, value in response.headers.items() if name.lower() != "content-length"
        ]
        lines += [f"Content-Length: {len(response.body)}", "", ""]
        answer = "\r\n".join(lines).encode("latin-1") + response.body
        self.close_connection = True
        for index in range(len(answer)):
            if index:
                time.sleep(interval)
            self.wfile.write(answer[index : index + 1])  # raises once the client has gone

    def _send(self, response: Response) -> None:
        self.send_response(response.status)
        for name, value in response.headers.items():
            if name.lower() != "content-length":
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        self.wfile.write(response.body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # The default backlog of 5 drops connects under concurrent load (then a 1 s SYN retry).
    request_queue_size = 128
    # handle_request() runs only when the socket is readable; the timeout bounds a lost race.
    timeout = 0.5

    def __init__(self, address: tuple[str, int], simulator: AutocallsSimulator) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.simulator = simulator
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        self._closing = False
        # serve_forever polls for shutdown (0.5 s by default); a wake-up pipe makes stop() instant.
        self._wake_read, self._wake_write = socket.socketpair()
        super().__init__(address, _Handler)

    def serve(self) -> None:
        """Accept connections until :meth:`wake` is called."""
        with selectors.DefaultSelector() as selector:
            selector.register(self.socket, selectors.EVENT_READ)
            selector.register(self._wake_read, selectors.EVENT_READ)
            while True:
                for key, _ in selector.select():
                    if key.fileobj is self._wake_read:
                        return
                    self.handle_request()

    def wake(self) -> None:
        """Make :meth:`serve` return."""
        with contextlib.suppress(OSError):
            self._wake_write.send(b"x")

    def server_close(self) -> None:
        super().server_close()
        self._wake_read.close()
        self._wake_write.close()

    def server_bind(self) -> None:
        # HTTPServer.server_bind does a reverse DNS lookup (getfqdn) that can stall for seconds.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def track(self, connection: socket.socket, *, add: bool) -> None:
        with self._connections_lock:
            if not add:
                self._connections.discard(connection)
            elif not self._closing:
                self._connections.add(connection)
                return
        if add:
            # Accepted just before stop(): cut it too rather than serve a stopped simulator.
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def close_connections(self) -> None:
        """Cut idle keep-alive connections so a stopped simulator really stops answering."""
        with self._connections_lock:
            self._closing = True
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (timeout, dropped fault) is normal here, not worth a traceback.
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            return
        super().handle_error(request, client_address)


class AutocallsSimulator:
    """The Autocalls WhatsApp API on a local port, with a movable clock and scripted faults.

    :param api_key: the bearer token it accepts.
    :param rate_limit: requests per second per key (strict sliding window); 0 or ``None`` = no limit.
    :param host: interface to bind (loopback by default).
    :param port: port to bind; 0 picks a free one (see :attr:`port` once started).
    :param seed: load the example senders and templates (again on :meth:`reset`).
    """

    def __init__(
        self,
        api_key: str = "sim-key",
        rate_limit: float | None = 5.0,
        host: str = "127.0.0.1",
        port: int = 0,
        seed: bool = True,
    ) -> None:
        self._state = SimulatorState(api_key, _check_rate(rate_limit), seed)
        self.host = host
        self._port = port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._lifecycle = threading.Lock()

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> Self:
        """Bind and serve on a daemon thread (a restart after :meth:`stop` reuses the port)."""
        with self._lifecycle:
            if self._server is not None:
                raise RuntimeError("the simulator is already running")
            server = _Server((self.host, self._port), self)
            self._port = server.server_port
            thread = threading.Thread(
                target=server.serve,
                name=f"autocalls-simulator-{self._port}",
                daemon=True,
            )
            thread.start()
            self._server, self._thread = server, thread
        return self

    def stop(self) -> None:
        """Stop serving, close the socket and open connections, join the thread; idempotent."""
        with self._lifecycle:
            server, thread = self._server, self._thread
            self._server = self._thread = None
        if server is None or thread is None:
            return
        server.wake()
        thread.join(timeout=5)
        server.close_connections()
        server.server_close()

    @property
    def running(self) -> bool:
        """Whether it is serving."""
        return self._server is not None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # -- addresses -------------------------------------------------------------------------------

    @property
    def api_key(self) -> str:
        """The accepted bearer token."""
        return self._state.api_key

    @property
    def port(self) -> int:
        """The bound port (the requested one before the first start)."""
        return self._port

    @property
    def url(self) -> str:
        """The API base URL, ``http://127.0.0.1:<port>/api``."""
        if not self._port:
            raise RuntimeError("start the simulator first: port 0 is only chosen when binding")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self._port}/api"

    @property
    def root_url(self) -> str:
        """The server root (control endpoints live under ``/_sim``)."""
        return self.url[: -len("/api")]

    # -- settings ----------------------------------------------------------------------------------

    @property
    def rate_limit(self) -> float | None:
        """Accepted requests per second per key; 0 or ``None`` = unlimited."""
        return self._state.rate_limit

    @rate_limit.setter
    def rate_limit(self, value: float | None) -> None:
        value = _check_rate(value)
        with self._state.lock:
            self._state.rate_limit = value

    @property
    def balance(self) -> int | None:
        """Messages the account can still send; ``None`` = unlimited, 0 = sends answer 402."""
        return self._state.balance

    @balance.setter
    def balance(self, value: int | None) -> None:
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise ValueError("balance must be None or an int >= 0")
        with self._state.lock:
            self._state.balance = value

    @property
    def rate_limited_count(self) -> int:
        """How many requests the rate limiter refused (429) since the start or last reset."""
        return self._state.rate_limited_count

    # -- scripting -------------------------------------------------------------------------------

    def add_sender(
        self,
        id: int,
        phone_number: str,
        display_name: str = "Simulated Sender",
        status: str = "online",
        quality_rating: str = "GREEN",
        messaging_limit: int | None = None,
    ) -> None:
        """Add (or replace) a sender."""
        self._state.add_sender(
            Sender(id, phone_number, display_name, status, quality_rating, messaging_limit)
        )

    def set_sender_status(self, id: int, status: str) -> None:
        """Put sender ``id`` ``"online"`` or ``"offline"`` (``KeyError`` if unknown)."""
        self._state.set_sender_status(id, status)

    def add_template(
        self,
        sender_id: int,
        id: int,
        name: str,
        body_text: str,
        variables: tuple[str, ...] | list[str] = (),
        status: str = "approved",
        language: str = "en",
        category: str = "utility",
    ) -> None:
        """Add (or replace) a template of an existing sender (``KeyError`` if the sender is unknown)."""
        self._state.add_template(
            Template(id, sender_id, name, body_text, tuple(variables), status, language, category)
        )

    def customer_message(
        self, sender_id: int, recipient_phone: str, text: str = "Hi", name: str | None = None
    ) -> None:
        """The customer writes in: opens or resets the 24 h window of the conversation."""
        self._state.customer_message(sender_id, recipient_phone, text, name)

    def now(self) -> datetime:
        """The simulator's clock (UTC, tz-aware): real time plus what :meth:`advance` added."""
        return self._state.now()

    def advance(self, seconds: float) -> datetime:
        """Move the clock forward by ``seconds``; returns the new time."""
        return self._state.advance(seconds)

    def skew(self, seconds: float) -> datetime:
        """
        Run the API's clock ``seconds`` ahead of this machine's (negative: behind), as a worker
        with a clock off the API's sees it; replaces what :meth:`advance` added. Returns the new time.
        """
        return self._state.skew(seconds)

    def inject(self, fault: Fault) -> None:
        """Queue a fault; faults apply FIFO to the first matching requests."""
        self._state.inject(fault)

    def reset(self) -> None:
        """Clear records, faults, conversations, limiter and clock; re-seed. Keeps ``rate_limit``."""
        self._state.reset()

    # -- records -----------------------------------------------------------------------------------

    @property
    def requests(self) -> list[dict[str, Any]]:
        """Every API request received, in arrival order (copies; ``status`` is None while in flight)."""
        return self._state.snapshot()[0]

    @property
    def delivered(self) -> list[dict[str, Any]]:
        """Every message sent successfully, in order (copies)."""
        return self._state.snapshot()[1]


def _check_rate(value: float | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError("rate_limit must be None or a number >= 0")
    return float(value)


def _bearer(headers: Any) -> str | None:
    value = headers.get("Authorization")
    if not value:
        return None
    scheme, _, token = value.partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def _parse_json(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        # Laravel treats an unreadable JSON body as no input: validation then says what's missing.
        return None


def _control(sim: AutocallsSimulator, method: str, path: str, payload: Any) -> Response:
    """The ``/_sim`` endpoints: scripting a simulator that runs in another process."""
    name = path[len(_CONTROL_PREFIX) :].rstrip("/")
    data = payload if isinstance(payload, dict) else {}
    gets = {"requests", "messages", "state"}
    posts = {"inbound", "advance", "faults", "reset", "config", "senders"}
    if name not in gets | posts:
        return json_response(404, {"error": f"unknown control endpoint {path}"})
    expected = "GET" if name in gets else "POST"
    if method != expected:
        return json_response(405, {"error": f"use {expected} for {path}"}, {"Allow": expected})
    try:
        if name == "requests":
            return json_response(200, {"requests": sim.requests})
        if name == "messages":
            return json_response(200, {"messages": sim.delivered})
        if name == "state":
            return json_response(200, sim._state.summary())
        if name == "inbound":
            sim.customer_message(
                _need(data, "sender_id", int),
                _need(data, "recipient_phone", str),
                data.get("text") or "Hi",
                data.get("name"),
            )
            # When the customer wrote, by the simulator's clock: what a later message is compared to.
            return json_response(200, {"ok": True, "at": sim.now().isoformat()})
        elif name == "advance":
            return json_response(200, {"now": sim.advance(_need(data, "seconds", int | float)).isoformat()})
        elif name == "faults":
            sim.inject(fault_from_json(payload))
        elif name == "reset":
            sim.reset()
        elif name == "config":
            if "rate_limit" in data:
                sim.rate_limit = data["rate_limit"]
            if "balance" in data:
                sim.balance = data["balance"]
        else:  # senders
            sim.set_sender_status(_need(data, "id", int), _need(data, "status", str))
    except KeyError as exc:
        return json_response(404, {"error": f"unknown id {exc}"})
    except (TypeError, ValueError) as exc:
        return json_response(400, {"error": str(exc)})
    return json_response(200, {"ok": True})


def _need(data: dict[str, Any], key: str, kind: Any) -> Any:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, kind):
        raise ValueError(f"{key!r} is required ({getattr(kind, '__name__', kind)})")
    return value
