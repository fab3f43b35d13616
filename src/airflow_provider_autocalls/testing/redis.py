"""A throw-away ``redis-server`` on 127.0.0.1, for tests and benchmarks of the shared rate limit."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator


def redis_server_binary() -> str | None:
    """The path of ``redis-server``, or ``None`` if it is not installed (Debian: ``redis-server``)."""
    return shutil.which("redis-server")


@contextlib.contextmanager
def local_redis(startup_timeout: float = 10.0) -> Iterator[str]:
    """
    Run ``redis-server`` on a free 127.0.0.1 port in a temporary folder; yield its ``redis://`` URI.

    Nothing is persisted, and the server is stopped on exit.

    :raises FileNotFoundError: if ``redis-server`` is not installed.
    """
    binary = redis_server_binary()
    if binary is None:
        raise FileNotFoundError("redis-server is not installed (Debian: apt-get install redis-server)")
    with tempfile.TemporaryDirectory(prefix="autocalls-redis-") as folder:
        port = _free_port()
        process = subprocess.Popen(
            [
                binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--dir",
                folder,
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            _wait_for(port, process, startup_timeout)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_for(port: int, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"redis-server exited with status {process.returncode} before it answered")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5) as conn:
            conn.sendall(b"PING\r\n")
            if conn.recv(16).startswith(b"+PONG"):
                return
        time.sleep(0.05)
    raise RuntimeError(f"redis-server did not answer on port {port} within {timeout:g} s")
