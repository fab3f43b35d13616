"""
httpx clients, built lazily and shared where sharing is safe.

Building an ``httpx`` client loads the system's CA certificates into a new SSL context (about
0.8 MB and 17 ms each), so every client of the process shares one verifying context. Async
clients are shared per event loop and settings: the triggerer runs all its triggers on one loop,
and a thousand waiting sensors then share one connection pool instead of holding a thousand.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from typing import TYPE_CHECKING, Any, Final

from airflow_provider_autocalls.hooks._settings import ClientSettings

if TYPE_CHECKING:
    import ssl

    import httpx

# Connecting should fail fast even when an answer may take long: a refused connect is safe to retry.
MAX_CONNECT_TIMEOUT: Final = 10.0

# Keyed by loop; entries of closed loops are dropped on the next lookup (a client holds its loop
# alive through its connections, so a weak mapping would never let go of either).
_async_clients: dict[asyncio.AbstractEventLoop, dict[ClientSettings, httpx.AsyncClient]] = {}
_lock = threading.Lock()


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    import httpx

    # Certificates are always verified; there is deliberately no option to turn that off.
    return httpx.create_ssl_context()


def _options(settings: ClientSettings) -> dict[str, Any]:
    import httpx

    return {
        "base_url": settings.base_url,
        "headers": settings.headers,
        "timeout": httpx.Timeout(settings.timeout, connect=min(settings.timeout, MAX_CONNECT_TIMEOUT)),
        # A redirect would carry the Authorization header to wherever it points; refuse it instead.
        "follow_redirects": False,
        "verify": _ssl_context(),
    }


def new_client(settings: ClientSettings) -> httpx.Client:
    """A synchronous client of its own (one per hook), whose requests honour a deadline."""
    import httpx

    from airflow_provider_autocalls.hooks._transport import bind_to_deadlines

    client = httpx.Client(**_options(settings))
    bind_to_deadlines(client)
    return client


def shared_async_client(settings: ClientSettings) -> httpx.AsyncClient:
    """The async client of the running event loop for these settings, built on first use."""
    import httpx

    loop = asyncio.get_running_loop()
    with _lock:
        for closed in [other for other in _async_clients if other.is_closed()]:
            del _async_clients[closed]
        clients = _async_clients.setdefault(loop, {})
        client = clients.get(settings)
        if client is None or client.is_closed:
            client = clients[settings] = httpx.AsyncClient(**_options(settings))
        return client
