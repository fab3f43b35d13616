"""A local stand-in for the Autocalls WhatsApp API, standard library only.

Serves the API under ``/api`` and control endpoints under ``/_sim`` (see the package docs) on a
daemon thread; binds to 127.0.0.1 unless told otherwise::

    with AutocallsSimulator() as sim:
        sim.customer_message(12, "+15551234567")
        ...  # point a client at sim.url with sim.api_key
"""

from __future__ import annotations

import threading
from datetime import datetime
from types import TracebackType
from typing import Any, Self

from airflow_provider_autocalls.testing.simulator_http import SimulatorServer
from airflow_provider_autocalls.testing.simulator_models import (
    Fault,
    Sender,
    Template,
)
from airflow_provider_autocalls.testing.simulator_state import SimulatorState

__all__ = ["AutocallsSimulator", "Fault"]


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
        self._server: SimulatorServer | None = None
        self._thread: threading.Thread | None = None
        self._lifecycle = threading.Lock()

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> Self:
        """Bind and serve on a daemon thread (a restart after :meth:`stop` reuses the port)."""
        with self._lifecycle:
            if self._server is not None:
                raise RuntimeError("the simulator is already running")
            server = SimulatorServer((self.host, self._port), self)
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
