"""Metrics reach a StatsD listener through Airflow's own Stats, with the documented names and tags."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import textwrap
import time
from collections import Counter

import pytest

pytest.importorskip("statsd")

# A task's process: the hook's calls (one 429 then a retry, a send) and the counters the send
# operators report. Stats reads [metrics] when first used, so it runs in a process of its own.
TASK = textwrap.dedent(
    """
    import json, os
    from airflow_provider_autocalls.exceptions import AutocallsError
    from airflow_provider_autocalls.hooks.autocalls import AutocallsHook
    from airflow_provider_autocalls.testing import AutocallsSimulator, Fault

    with AutocallsSimulator(rate_limit=0) as sim:
        os.environ["AIRFLOW_CONN_AUTOCALLS_DEFAULT"] = json.dumps(
            {"conn_type": "autocalls", "host": sim.url, "password": sim.api_key, "extra": {"rate_limit": 50}}
        )
        sim.inject(Fault(endpoint="senders", status=429, headers={"Retry-After": "1"}))
        hook = AutocallsHook()
        hook.get_senders()
        hook.send_template(12, 45, "+14155550123", variables={"1": "Ada", "date": "1 May", "3": "9"})
        offline = '{"success": false, "error": "off", "error_code": "SENDER_OFFLINE"}'
        sim.inject(Fault(endpoint="send_template", status=422, body=offline, count=2))
        sim.inject(Fault(endpoint="send_template", status=502))
        for _ in range(3):  # two refusals, then a send in doubt
            try:
                hook.send_template(12, 46, "+14155550124")
            except AutocallsError:
                pass
        for bad in ("no phone", "+1", "12"):  # refused before any request
            try:
                hook.send_freeform(12, bad, "hi")
            except AutocallsError:
                pass
    """
)
LINE = re.compile(r"^airflow\.(?P<name>[\w.]+)(?P<tags>(,[\w]+=[\w]+)*):(?P<value>[-\d.]+)\|(?P<type>\w+)$")


def _run_task_with_statsd(**metrics_conf: str) -> list[re.Match[str]]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.settimeout(0.2)
        env = {
            **os.environ,
            "AIRFLOW__METRICS__STATSD_ON": "True",
            "AIRFLOW__METRICS__STATSD_HOST": "127.0.0.1",
            "AIRFLOW__METRICS__STATSD_PORT": str(listener.getsockname()[1]),
            "AIRFLOW__METRICS__STATSD_PREFIX": "airflow",
            **{f"AIRFLOW__METRICS__{k.upper()}": v for k, v in metrics_conf.items()},
        }
        task = subprocess.Popen([sys.executable, "-c", TASK], env=env)
        packets: list[str] = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                packets.extend(listener.recv(65535).decode().splitlines())
            except TimeoutError:
                if task.poll() is not None:
                    break
        assert task.wait(timeout=10) == 0
    ours = [m for p in packets if (m := LINE.match(p)) and m["name"].startswith("autocalls.")]
    assert ours, f"no autocalls metric arrived; got {packets[:5]}"
    return ours


def test_counters_timers_and_gauge_arrive_with_their_counts() -> None:
    seen = _run_task_with_statsd()
    counts: Counter[str] = Counter()
    types: dict[str, str] = {}
    for m in seen:
        types[m["name"]] = m["type"]
        if m["type"] == "c":
            counts[m["name"]] += int(float(m["value"]))
        else:
            counts[m["name"]] += 1
    assert counts["autocalls.rate_limited"] == 1
    assert counts["autocalls.retries"] == 1
    assert counts["autocalls.sent"] == 1
    assert counts["autocalls.failed"] == 2
    assert counts["autocalls.unknown"] == 1
    assert counts["autocalls.refused_before_send"] == 3
    # Six requests went out (the 429, its retry, four sends): each waited for and held a permit.
    assert counts["autocalls.request_latency"] == 6
    assert counts["autocalls.pacer_wait"] == 6
    assert types["autocalls.request_latency"] == types["autocalls.pacer_wait"] == "ms"
    assert types["autocalls.in_flight"] == "g"
    gauges = [float(m["value"]) for m in seen if m["name"] == "autocalls.in_flight"]
    assert max(gauges) == 1
    assert gauges[-1] == 0  # nothing left in flight


def test_the_kind_of_request_arrives_as_a_tag() -> None:
    seen = _run_task_with_statsd(statsd_influxdb_enabled="True")
    tags = {(m["name"], m["tags"]) for m in seen}
    assert ("autocalls.rate_limited", ",kind=read") in tags
    assert ("autocalls.retries", ",kind=read") in tags
    assert ("autocalls.request_latency", ",kind=send") in tags
    assert ("autocalls.pacer_wait", ",kind=send") in tags
