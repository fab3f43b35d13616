"""
The simulator's HTTP side: the threaded server, each request's handler, and the ``/_sim`` control endpoints.

:class:`~airflow_provider_autocalls.testing.simulator.AutocallsSimulator` owns a :class:`SimulatorServer`;
the handler passes each API request to the simulator's state and answers it, and each control request
to :func:`_control`.
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
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from airflow_provider_autocalls.testing.simulator_models import (
    Response,
    fault_from_json,
    fault_response,
    json_response,
)

if TYPE_CHECKING:
    from airflow_provider_autocalls.testing.simulator import AutocallsSimulator

_CONTROL_PREFIX = "/_sim/"
_MAX_BODY = 1 << 20


class _Handler(BaseHTTPRequestHandler):
    """One keep-alive connection; every request is answered with Content-Length."""

    protocol_version = "HTTP/1.1"
    server_version = "AutocallsSimulator"
    sys_version = ""
    # Headers and body go out in two writes: without TCP_NODELAY, Nagle + delayed ACK add ~40 ms.
    disable_nagle_algorithm = True
    server: SimulatorServer

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


class SimulatorServer(ThreadingHTTPServer):
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
