"""
Pacing at the API's limit: N session-status calls through one hook against the simulator's
strict 5 requests/s window. Prints the wall time, the achieved rate against the limit, and the
number of 429s the simulator answered (goal: 0).
"""

from __future__ import annotations

import json
import os
import sys
import time

CALLS = int(sys.argv[1]) if len(sys.argv) > 1 else 20
RATE = 5.0


def main() -> None:
    from airflow_provider_autocalls.hooks.autocalls import AutocallsHook
    from airflow_provider_autocalls.testing import AutocallsSimulator

    with AutocallsSimulator(rate_limit=RATE) as sim:
        os.environ["AIRFLOW_CONN_AUTOCALLS_DEFAULT"] = json.dumps(
            {"conn_type": "autocalls", "host": sim.url, "password": sim.api_key}
        )
        hook = AutocallsHook()
        hook.get_conn()  # build the client outside the timed loop
        started = time.perf_counter()
        for _ in range(CALLS):
            hook.get_session_status(12, "+14155550123")
        elapsed = time.perf_counter() - started
        achieved = (CALLS - 1) / elapsed  # N calls span N-1 intervals
        print(f"pacing: {CALLS} session-status calls at a {RATE:g}/s limit took {elapsed:.2f} s")
        print(
            f"pacing: achieved {achieved:.3f} req/s = {achieved / RATE:.3f} of the limit; 429s: {sim.rate_limited_count}"
        )


if __name__ == "__main__":
    main()
