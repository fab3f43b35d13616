"""
`make e2e-celery`: the provider on a distributed Airflow 3 deployment, sharing one rate limit.

PostgreSQL and Redis from Debian's packages; Airflow with the CeleryExecutor (Redis the broker,
the metadata database the result backend), two ``airflow celery worker`` processes with hostnames
of their own, scheduler, dag-processor, triggerer and api-server, all on 127.0.0.1; the
simulator in place of the API, answering every send after 0.5 s; StatsD on, to a UDP listener of
this process. One DAG sends with one key from two bulk tasks and 50 mapped tasks at once:

1. with the limit shared through the same Redis: the API must see at least 0.9 of its limit, at
   most the limit in any one second, at most 0.5 % answers of 429, no duplicate, every recipient
   accounted for, and the ``autocalls.*`` metrics must count what the simulator saw;
2. the same run with each process keeping its own limit (the default), to show the 429s the
   shared limit removes (figures printed; only "no duplicate" and the metrics are checked).

Cleanup, markers, port checks and the log scan for secrets are those of ``make e2e``.
"""

from __future__ import annotations

import bisect
import contextlib
import json
import shutil
import signal
import socket
import sys
import time
import traceback
from datetime import datetime
from pathlib import Path
from typing import Any

from e2e.__main__ import begin, ensure_system_packages, stage, stage_times, wind_down
from e2e.airflow_api import AirflowAPI
from e2e.deployment import (
    ADMIN_USER,
    AIRFLOW_COMPONENTS,
    Deployment,
    free_port,
    wait_until,
)
from e2e.statsd import StatsdListener

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "build" / "e2e-celery"
DAG_ID = "e2e_autocalls_distributed"
WORKERS = ("worker-1", "worker-2")
WORKER_CONCURRENCY = 4
RATE_LIMIT = 5  # the API's: requests per second per account
SEND_LATENCY = 0.5
BULK_SIZE = 200
MAPPED_SIZE = 50
TIME_LIMIT = 900
# (connection id, the run's phone prefix, the limit it keeps to)
RUNS = (("autocalls_shared", "4101", "shared (Redis)"), ("autocalls_local", "4102", "in-process (default)"))

results: dict[str, Any] = {}
failures: list[str] = []


class CeleryDeployment(Deployment):
    """The LocalExecutor deployment of ``make e2e`` turned into a CeleryExecutor one with Redis."""

    def __init__(self, workdir: Path, logs: Path, dags: dict[str, str], statsd_port: int) -> None:
        super().__init__(workdir, logs, dags)
        self.redis_port = free_port()
        self.statsd_port = statsd_port

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}"

    @property
    def ports(self) -> dict[str, int]:
        return {**super().ports, "redis": self.redis_port}

    def environment(self) -> dict[str, str]:
        pg = self.postgres
        return {
            **super().environment(),
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CORE__PARALLELISM": "16",
            "AIRFLOW__CELERY__BROKER_URL": f"{self.redis_url}/0",
            "AIRFLOW__CELERY__RESULT_BACKEND": (
                f"db+postgresql+psycopg2://airflow:{pg.password}@127.0.0.1:{pg.port}/airflow"
            ),
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(WORKER_CONCURRENCY),
            "AIRFLOW__METRICS__STATSD_ON": "True",
            "AIRFLOW__METRICS__STATSD_HOST": "127.0.0.1",
            "AIRFLOW__METRICS__STATSD_PORT": str(self.statsd_port),
        }

    def start_redis(self) -> None:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        folder = self.workdir / "redis"
        folder.mkdir(exist_ok=True)
        command = [binary, "--port", str(self.redis_port), "--bind", "127.0.0.1", "--dir", str(folder)]
        self.start("redis", [*command, "--save", "", "--appendonly", "no"])

        def pong() -> bool:
            with socket.create_connection(("127.0.0.1", self.redis_port), timeout=2) as conn:
                conn.sendall(b"PING\r\n")
                return conn.recv(16).startswith(b"+PONG")

        wait_until(pong, timeout=30, what="redis-server to answer PING")

    def start_worker(self, name: str) -> None:
        # Logs are read from the shared folder, so neither worker serves them (they'd share a port).
        hostname = f"{name}@127.0.0.1"
        # The simulator plays a remote API, whose limiter never waits for our workers' CPU: on this one
        # machine the workers (and their task processes) yield it to the simulator and the scheduler.
        command = [
            "nice",
            "-n",
            "10",
            str(self.bin / "airflow"),
            "celery",
            "worker",
            "--celery-hostname",
            hostname,
        ]
        self.start(name, [*command, "--concurrency", str(WORKER_CONCURRENCY), "--skip-serve-logs"])

    def log_text(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")

    def worker_ready(self, name: str) -> bool:
        if self.components[name].process.poll() is not None:  # waiting won't bring it back
            raise AssertionError(f"Celery {name} exited; see {self.logs / (name + '.log')}")
        return f"{name}@127.0.0.1 ready." in self.log_text(name)

    def stop(self) -> list[str]:
        # Workers before the broker they talk to, so their warm shutdown has nothing to wait for; all
        # of them told at once, so their shutdowns overlap instead of adding up.
        problems = []
        first = [c for c in (self.components.pop(n, None) for n in (*WORKERS, "scheduler")) if c is not None]
        for component in first:
            if component.process.poll() is None:
                component.signal(signal.SIGTERM)
        for component in first:
            try:
                component.stop()
            except Exception as exc:
                problems.append(f"stopping {component.name}: {exc!r}")
        return problems + super().stop()


def arrival(record: dict[str, Any]) -> float:
    return datetime.fromisoformat(record["at"].replace("Z", "+00:00")).timestamp()


def most_in_one_second(times: list[float]) -> int:
    """The most arrivals in any window [t, t + 1 s) that starts at an arrival."""
    return max((bisect.bisect_left(times, t + 1.0) - i for i, t in enumerate(times)), default=0)


def xcom(api: AirflowAPI, run_id: str, task_id: str) -> Any:
    value = api.get(f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/return_value")[
        "value"
    ]
    return json.loads(value) if isinstance(value, str) else value


def check(condition: bool, failure: str) -> None:
    """Record a failed check and go on, so that both runs' figures are always measured."""
    if not condition:
        print(f"  CHECK FAILED: {failure}", flush=True)
        failures.append(failure)


def one_run(
    api: AirflowAPI,
    d: CeleryDeployment,
    statsd: StatsdListener,
    conn_id: str,
    prefix: str,
    label: str,
    figures: dict[str, Any],
) -> None:
    """Trigger the DAG with ``conn_id``; measure what the simulator saw; check the accounting."""
    requests_before = len(d.sim("GET", "requests")["requests"])
    messages_before = len(d.delivered())
    statsd.reset()
    run_id = api.trigger(DAG_ID, {"prefix": prefix, "conn_id": conn_id, "bulk_size": BULK_SIZE})
    state = api.wait_run(DAG_ID, run_id, timeout=360)
    requests = d.sim("GET", "requests")["requests"][requests_before:]
    delivered = d.delivered()[messages_before:]
    phones = [f"+1{prefix}{g}{i:05d}" for g, n in (("1", BULK_SIZE), ("2", BULK_SIZE)) for i in range(n)]
    phones += [f"+1{prefix}3{i:05d}" for i in range(MAPPED_SIZE)]
    per_phone = {p: 0 for p in phones}
    for message in delivered:
        per_phone[message["recipient_phone"]] = per_phone.get(message["recipient_phone"], 0) + 1
    duplicates = {p: n for p, n in per_phone.items() if n > 1}
    strangers = sorted(set(per_phone) - set(phones))
    answered = [r for r in requests if r["status"] is not None]
    refused = [r for r in answered if r["status"] == 429]
    accepted = sorted(arrival(r) for r in answered if r["status"] != 429)
    span = accepted[-1] - accepted[0] if len(accepted) > 1 else float("inf")
    tis = api.task_instances(DAG_ID, run_id)
    mapped = [t for t in tis if t["task_id"] == "send_each"]
    bulk = {task: xcom(api, run_id, task) for task in ("bulk_1", "bulk_2") if _succeeded(tis, task)}
    figures |= {
        "limit": label,
        "run_id": run_id,
        "state": state,
        "requests": len(answered),
        "sends": sum(r["endpoint"] == "send_template" for r in answered),
        "answers_429": len(refused),
        "share_429": round(len(refused) / max(len(answered), 1), 4),
        "achieved_over_limit": round((len(accepted) - 1) / span / RATE_LIMIT, 3),
        "most_in_one_second": most_in_one_second(accepted),
        "most_arrivals_in_one_second": most_in_one_second(sorted(arrival(r) for r in answered)),
        "seconds": round(span, 1),
        "delivered": len(delivered),
        "duplicates": len(duplicates),
        "recipients_reached": sum(per_phone[p] > 0 for p in phones),
        "bulk_reports": {
            t: {k: r[k] for k in ("total", "sent", "failed", "unknown")} for t, r in bulk.items()
        },
        # For reading a run afterwards: accepted requests in each second, and when the 429s came.
        "per_second": [sum(int(t - accepted[0]) == i for t in accepted) for i in range(int(span) + 1)]
        if len(accepted) > 1
        else [],
        "answers_429_at_s": [round(arrival(r) - accepted[0], 2) for r in refused] if accepted else [],
        "mapped_states": {s: sum(t["state"] == s for t in mapped) for s in {t["state"] for t in mapped}},
    }
    print(f"  {label}: {json.dumps({k: v for k, v in figures.items() if k != 'run_id'})}")
    check(not strangers, f"messages to numbers not in the run: {strangers[:5]}")
    check(not duplicates, f"duplicate messages: {duplicates}")
    # Metrics: what the tasks counted must be what the simulator saw (UDP: wait until all arrived).
    with contextlib.suppress(TimeoutError):  # the comparison below says what is missing
        wait_until(
            lambda: (
                statsd.count("autocalls.sent") >= len(delivered)
                and statsd.count("autocalls.rate_limited") >= len(refused)
            ),
            timeout=60,
            what="the StatsD counters to reach the simulator's counts",
        )
    metrics = statsd.snapshot()
    figures["metrics"] = metrics
    counters = metrics["counters"]
    print(f"  StatsD: {json.dumps(counters, sort_keys=True)}; Airflow's own: {metrics['others']}")
    check(
        counters.get("autocalls.sent", 0) == len(delivered),
        (
            f"autocalls.sent counted {counters.get('autocalls.sent', 0)}, the simulator delivered {len(delivered)}"
        ),
    )
    check(
        counters.get("autocalls.rate_limited", 0) == len(refused),
        (
            f"autocalls.rate_limited counted {counters.get('autocalls.rate_limited', 0)}, the simulator answered "
            f"{len(refused)} with 429"
        ),
    )
    check(
        counters.get("autocalls.retries", 0) == len(refused),
        f"autocalls.retries counted {counters.get('autocalls.retries', 0)}; every one of {len(refused)} 429s is retried",
    )
    # Nothing in this run is refused, fails or is in doubt: those counters must not arrive at all.
    for name in ("autocalls.failed", "autocalls.unknown", "autocalls.refused_before_send"):
        check(
            counters.get(name, 0) == 0, f"{name} counted {counters.get(name)} in a run where nothing failed"
        )
    for name in ("autocalls.request_latency", "autocalls.pacer_wait"):
        check("ms" in metrics["types"].get(name, []), f"no {name} timer arrived")
    check("g" in metrics["types"].get("autocalls.in_flight", []), "no autocalls.in_flight gauge arrived")


def _succeeded(tis: list[dict[str, Any]], task_id: str) -> bool:
    return any(t["task_id"] == task_id and t["state"] == "success" for t in tis)


def check_shared(figures: dict[str, Any]) -> None:
    """What the shared limit promises on a distributed deployment."""
    check(figures["state"] == "success", f"run {figures['run_id']} ended {figures['state']}")
    check(figures["achieved_over_limit"] >= 0.9, f"achieved {figures['achieved_over_limit']} of the limit")
    check(
        figures["most_in_one_second"] <= RATE_LIMIT,
        (f"{figures['most_in_one_second']} requests in one second"),
    )
    check(
        figures["share_429"] <= 0.005,
        (f"{figures['answers_429']} answers of 429 ({figures['share_429']:.1%})"),
    )
    total = 2 * BULK_SIZE + MAPPED_SIZE
    check(
        figures["recipients_reached"] == total,
        (f"{figures['recipients_reached']} of {total} recipients reached"),
    )
    for task, report in figures["bulk_reports"].items():
        check(
            report == {"total": BULK_SIZE, "sent": BULK_SIZE, "failed": 0, "unknown": 0},
            (f"{task}: {report}"),
        )
    check(len(figures["bulk_reports"]) == 2, "a bulk task has no report")
    check(
        figures["mapped_states"] == {"success": MAPPED_SIZE},
        f"mapped task states: {figures['mapped_states']}",
    )


def add_connections(api: AirflowAPI, d: CeleryDeployment) -> None:
    # Through the API, so the key is on no command line and in no log. The shared one's backend is
    # Redis' database 1 (Celery's broker uses 0); the other keeps each process to its own pacer.
    for conn_id, backend in (("autocalls_shared", f"{d.redis_url}/1"), ("autocalls_local", "local")):
        extra = {"rate_limit": RATE_LIMIT, "max_retries": 10, "rate_limit_backend": backend}
        api.add_connection(conn_id, "autocalls", f"{d.sim_url}/api", d.sim_key, extra=extra)


def main() -> int:
    started = time.monotonic()
    begin(OUT, TIME_LIMIT, "e2e-celery")
    failed = False
    d: CeleryDeployment | None = None
    api: AirflowAPI | None = None
    statsd = StatsdListener()
    dags = {f"{DAG_ID}.py": (Path(__file__).parent / "dags" / f"{DAG_ID}.py").read_text()}
    try:
        with stage("system packages (Debian: postgresql, redis-server)"):
            ensure_system_packages(("postgresql", "redis-server"))
        d = CeleryDeployment(OUT / "work", OUT / "logs", dags, statsd.port)
        with stage("PostgreSQL and Redis"):
            d.postgres.start()
            d.start_redis()
            print(f"  PostgreSQL on 127.0.0.1:{d.postgres.port}, Redis on 127.0.0.1:{d.redis_port}")
        with stage("airflow db migrate"):
            d.airflow("db", "migrate")
        with stage("start simulator, api-server, scheduler, dag-processor, triggerer, two Celery workers"):
            d.start_simulator()
            d.sim("POST", "faults", {"endpoint": "send_template", "delay": SEND_LATENCY, "count": 1_000_000})
            for component in AIRFLOW_COMPONENTS:
                d.start(component)
            for worker in WORKERS:
                d.start_worker(worker)
            api = AirflowAPI(d.api_url, ADMIN_USER, d.admin_password)
            wait_until(api.login, timeout=120, what="the api-server to sign us in")
            add_connections(api, d)
            api.wait_healthy(("metadatabase", "scheduler", "triggerer", "dag_processor"), timeout=180)
            deployment = d
            wait_until(
                lambda: all(deployment.worker_ready(w) for w in WORKERS),
                timeout=180,
                what=f"Celery workers {', '.join(WORKERS)} to be ready",
            )
            api.wait_dag(DAG_ID, timeout=180)
            print(f"  Airflow on {d.api_url}, simulator on {d.sim_url}, StatsD to 127.0.0.1:{statsd.port}")
        for conn_id, prefix, label in RUNS:
            title = f"2 bulk x {BULK_SIZE} + {MAPPED_SIZE} mapped, one key, {SEND_LATENCY} s latency, {label}"
            with stage(title):
                results[conn_id] = {}
                one_run(api, d, statsd, conn_id, prefix, label, results[conn_id])
                if conn_id == "autocalls_shared":
                    check_shared(results[conn_id])
        # A task instance's hostname is the machine's; each worker's own log says what it ran.
        ran = {w: d.log_text(w).count("Executing workload in Celery") for w in WORKERS}
        print(f"  task instances run by each Celery worker (both runs): {ran}")
        check(all(ran.values()), f"not every worker ran tasks: {ran}")
        assert not failures, f"{len(failures)} check(s) failed: {'; '.join(failures)}"
    except BaseException:
        failed = True
        traceback.print_exc()
        if d is not None:
            print(f"\nFAILED; the logs of every component are in {d.logs}", flush=True)
    finally:
        signal.alarm(0)
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)
        statsd.close()
        if api is not None:
            api.close()
        if d is not None:
            failed |= not wind_down(d, results)
    total = time.monotonic() - started
    print("\nStage times:")
    for name, seconds in stage_times.items():
        print(f"  {seconds:6.1f} s  {name}")
    print(f"  {total:6.1f} s  in all")
    print(
        "\n| limit | achieved / limit | 429s | most in one second: accepted (all arrivals) | duplicates | recipients |"
    )
    print("|---|---|---|---|---|---|")
    for conn_id, _, label in RUNS:
        if results.get(conn_id):
            f = results[conn_id]
            print(
                f"| {label} | {f['achieved_over_limit']:.3f} | {f['answers_429']}/{f['requests']} "
                f"({f['share_429']:.1%}) | {f['most_in_one_second']} ({f['most_arrivals_in_one_second']}) | "
                f"{f['duplicates']} | "
                f"{f['recipients_reached']}/{2 * BULK_SIZE + MAPPED_SIZE} |"
            )
    (OUT / "summary.json").write_text(
        json.dumps({"total_s": round(total, 1), **results}, indent=2, default=str)
    )
    if not failed:
        shutil.rmtree(OUT / "work", ignore_errors=True)
    print("\ne2e-celery: " + ("FAILED" if failed else "all checks passed") + f" in {total:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
