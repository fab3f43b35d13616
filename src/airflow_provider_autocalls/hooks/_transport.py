"""
One request on the wire: writing it and reading its answer (:func:`exchange`, :func:`async_exchange`),
whether any of it may have been written, and the deadline of the whole.

**What reached the wire** is learned from httpcore's ``trace`` request extension, never guessed
from the type of an error alone: an error raised before httpcore starts writing the request
(an invalid header, TLS set-up, a failed connect, no free connection in the pool) proves that the
API saw nothing; only once ``send_request_headers`` has started may it have seen the request.

**The deadline** bounds connecting, sending and reading the whole answer together. httpx's own
timeouts apply to each step (each read of a byte that trickles in starts a new read timeout), so
a slow answer could hold a request, and its pacer permit, for as long as it keeps trickling. On
an event loop ``asyncio.timeout_at`` gives the deadline. In a thread, every socket operation of
the request gets at most the time left (a network backend wrapped around httpcore's own): the
operation that would run past the deadline fails with httpcore's own timeout error, at the
deadline, and httpcore closes the connection as it does for any timeout.

**The answer** is read whole, but never more than ``MAX_BODY_BYTES`` of it: a larger one is
read as ``None`` (and refused by the answer's decoding).

This module imports httpcore: it is imported only where a client is built or a request is made.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterable, Callable, Iterable, Iterator
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import httpcore

from airflow_provider_autocalls.hooks._answers import MAX_BODY_BYTES

if TYPE_CHECKING:
    import ssl

    import httpx

    from airflow_provider_autocalls.hooks._answers import ApiRequest

log = logging.getLogger(__name__)

#: The ``time.monotonic()`` by which the current thread's request must be done, if it has one.
_deadline: ContextVar[float | None] = ContextVar("autocalls_request_deadline", default=None)


class WireWatch:
    """
    A ``trace`` extension that records whether writing the request has begun.

    Pass the instance itself as the trace of a sync request, :meth:`async_trace` for an async one.
    One instance watches one attempt.

    :param on_send: called (in the requesting thread) right before the first byte may be written.
    """

    def __init__(self, on_send: Callable[[], None] | None = None) -> None:
        #: Whether any byte of the request may have been written.
        self.sent = False
        self._on_send = on_send

    def __call__(self, event: str, info: dict[str, Any]) -> None:
        if event.endswith(".send_request_headers.started"):
            self.sent = True
            if self._on_send is not None:
                self._on_send()
        elif event.endswith(".send_request_headers.failed") and isinstance(
            info.get("exception"), (httpcore.LocalProtocolError, DeadlineBeforeWrite)
        ):
            # httpcore builds and checks the request line and headers before it writes them: an
            # illegal header fails there, and then not a byte went out. Nor did one when the
            # request's deadline had passed before its first write (a slow machine between the
            # permit and the request): the headers are the first bytes of a request.
            self.sent = False

    async def async_trace(self, event: str, info: dict[str, Any]) -> None:
        self(event, info)


@contextlib.contextmanager
def deadline(at: float) -> Iterator[None]:
    """Bound the socket operations of requests made in this block to end by ``at`` (monotonic)."""
    token = _deadline.set(at)
    try:
        yield
    finally:
        _deadline.reset(token)


class DeadlineBeforeWrite(httpcore.WriteTimeout):
    """The request's deadline passed before a write began: that write sent nothing."""


def _capped(timeout: float | None, error: type[Exception]) -> float | None:
    """The timeout of one socket operation, cut to the time left; ``error`` once none is left."""
    at = _deadline.get()
    if at is None:
        return timeout
    left = at - time.monotonic()
    if left <= 0:
        raise error("the request's deadline passed before this step began")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    """A connection whose reads, writes and TLS handshake end by the deadline of the request using it."""

    def __init__(self, stream: httpcore.NetworkStream) -> None:
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, _capped(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, _capped(timeout, DeadlineBeforeWrite))

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        stream = self._stream.start_tls(
            ssl_context, server_hostname, _capped(timeout, httpcore.ConnectTimeout)
        )
        return _DeadlineStream(stream)

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    """httpcore's network backend, with every connection it opens bound by the request's deadline."""

    def __init__(self, backend: httpcore.NetworkBackend) -> None:
        self._backend = backend

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        timeout = _capped(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._backend.connect_tcp(host, port, timeout, local_address, socket_options))

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        timeout = _capped(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._backend.connect_unix_socket(path, timeout, socket_options))

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


def bind_to_deadlines(client: httpx.Client) -> bool:
    """
    Make every connection of ``client`` (direct, and through proxies from the environment) honour
    :func:`deadline`. Call it before the first request.

    httpx builds its httpcore connection pools without a way to pass a network backend, so the
    pools' backends are wrapped in place. Return whether every pool was found; if httpx ever
    builds its pools differently, requests keep httpx's per-step timeouts and a warning says so.
    """
    transports = [client._transport, *(t for t in client._mounts.values() if t is not None)]
    bound = True
    for transport in transports:
        pool = getattr(transport, "_pool", None)
        backend = getattr(pool, "_network_backend", None)
        if not isinstance(backend, httpcore.NetworkBackend):
            bound = False
        elif not isinstance(backend, _DeadlineBackend):
            pool._network_backend = _DeadlineBackend(backend)  # type: ignore[union-attr]
    if not bound:
        log.warning(
            "This httpx version builds its connection pools differently: the connection's timeout "
            "applies to each step of a request (connect, each read), not to the whole request."
        )
    return bound


def exchange(
    client: httpx.Client, request: ApiRequest, wire: WireWatch, at: float
) -> tuple[int, httpx.Headers, bytes | None]:
    """Write the request and read its whole answer, all by ``at`` (``time.monotonic()``)."""
    import httpx

    # Waiting for a free connection of the pool counts against the deadline too.
    steps = client.timeout
    timeouts = httpx.Timeout(
        connect=steps.connect, read=steps.read, write=steps.write, pool=max(0.0, at - time.monotonic())
    )
    with (
        deadline(at),
        client.stream(
            request.method,
            request.path,
            params=request.params,
            json=request.body,
            timeout=timeouts,
            extensions={"trace": wire},
        ) as r,
    ):
        return r.status_code, r.headers, _read_capped(r.iter_bytes(), r.headers)


async def async_exchange(
    client: httpx.AsyncClient, request: ApiRequest, wire: WireWatch
) -> tuple[int, httpx.Headers, bytes | None]:
    """Write the request and read its whole answer (the caller bounds it by the deadline)."""
    async with client.stream(
        request.method,
        request.path,
        params=request.params,
        json=request.body,
        extensions={"trace": wire.async_trace},
    ) as r:
        return r.status_code, r.headers, await _aread_capped(r.aiter_bytes(), r.headers)


def _too_large(headers: httpx.Headers) -> bool:
    declared = headers.get("content-length")
    return declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES


def _read_capped(chunks: Iterable[bytes], headers: httpx.Headers) -> bytes | None:
    if _too_large(headers):
        return None
    body = bytearray()
    for chunk in chunks:
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            return None
    return bytes(body)


async def _aread_capped(chunks: AsyncIterable[bytes], headers: httpx.Headers) -> bytes | None:
    if _too_large(headers):
        return None
    body = bytearray()
    async for chunk in chunks:
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            return None
    return bytes(body)
