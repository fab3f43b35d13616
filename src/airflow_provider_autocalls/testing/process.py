"""The simulator in a process of its own, for benchmarks and soak runs (client and server then don't share a GIL)."""

from __future__ import annotations

import select
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def simulator_process(
    *, rate_limit: float = 5.0, api_key: str = "sim-key", startup_timeout: float = 30
) -> Iterator[str]:
    """
    Run ``autocalls-simulator`` on a free port of 127.0.0.1; yield its base URL; always stop it.

    :param rate_limit: requests per second per key; 0 for none.
    :param api_key: the key it accepts.
    :param startup_timeout: seconds to wait for it to serve.
    """
    command = [sys.executable, "-m", "airflow_provider_autocalls.testing.cli", "--port", "0"]
    command += ["--rate-limit", str(rate_limit), "--api-key", api_key]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        ready = select.select([process.stdout], [], [], startup_timeout)[0]  # it prints its URL once serving
        line = process.stdout.readline() if ready else ""
        if " on " not in line:
            raise RuntimeError(f"the simulator did not start: {line!r}")
        yield line.split(" on ", 1)[1].split()[0]
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
