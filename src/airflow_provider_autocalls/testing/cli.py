"""``autocalls-simulator``: run the simulator as a process (for demos and end-to-end runs)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

# A key given this way is on no command line and is not printed: for runs whose logs are kept.
KEY_VARIABLE = "AUTOCALLS_SIMULATOR_API_KEY"


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``autocalls-simulator``."""
    parser = argparse.ArgumentParser(
        prog="autocalls-simulator",
        description="Serve a local stand-in of the Autocalls WhatsApp API until SIGINT/SIGTERM.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default: %(default)s)")
    parser.add_argument(
        "--port", type=int, default=8080, help="port; 0 = any free port (default: %(default)s)"
    )
    parser.add_argument(
        "--api-key",
        default=os.environ.get(KEY_VARIABLE, "sim-key"),
        help=f"accepted bearer token (default: ${KEY_VARIABLE}, else sim-key)",
    )
    parser.add_argument(
        "--rate-limit",
        type=float,
        default=5.0,
        help="requests per second per key; 0 = no limit (default: %(default)s)",
    )
    parser.add_argument("--no-seed", action="store_true", help="start without the example senders/templates")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Start the simulator, print its URL (with the real port), serve until a signal; returns 0."""
    args = build_parser().parse_args(argv)
    from airflow_provider_autocalls.testing.simulator import AutocallsSimulator

    stopping = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    previous = {sig: signal.signal(sig, _stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            simulator = AutocallsSimulator(
                api_key=args.api_key,
                rate_limit=args.rate_limit,
                host=args.host,
                port=args.port,
                seed=not args.no_seed,
            ).start()
        except (OSError, ValueError) as exc:
            print(f"autocalls-simulator: cannot start on {args.host}:{args.port}: {exc}", file=sys.stderr)
            return 2
        shown = f"${KEY_VARIABLE}" if os.environ.get(KEY_VARIABLE) == simulator.api_key else simulator.api_key
        print(f"Autocalls simulator on {simulator.url} (API key: {shown})", flush=True)
        try:
            # A timeout keeps the wait responsive to signals on every platform.
            while not stopping.wait(0.5):
                pass
        finally:
            simulator.stop()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


if __name__ == "__main__":
    sys.exit(main())
