"""
`make e2e`: the provider on a real Airflow 3 deployment, one command, nothing but package registries.

PostgreSQL from Debian's packages; Airflow's api-server, scheduler (LocalExecutor), dag-processor
and triggerer as processes of their own on 127.0.0.1; the simulator in place of the Autocalls API.
Then, through Airflow's REST API:

1. example 2 (template -> deferred wait for the reply -> follow-up), the simulator playing the
   customer once the trigger is polling in the triggerer;
2. the same with the triggerer SIGKILLed while the sensor is deferred, then started again;
3. the same with the scheduler SIGKILLed while the sensor is deferred, then started again;
4. example 6 (``CustomerReplyTrigger`` in an asset watcher, e2e/replies.py): a message from before
   the watcher's first poll starts nothing; one customer writes: one run, within poll_interval +
   10 s, and one follow-up to that customer; three write: three runs, one follow-up each; nobody
   writes for two poll intervals: no run; the triggerer SIGKILLed, a customer writes while it is
   down, it restarts: one run for that message (its cursor was in the asset state store) and none
   for the messages already handled;
5. example 3 mapped over 50 recipients;
6. the provider in ``airflow providers list`` and in ``/api/v2/providers``;
7. the connection form in headless Chromium.

Every stage prints its time; everything started is stopped at the end, pass or fail, and the
logs of each component stay in build/e2e/logs. Exits 1 if any check fails.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any

from e2e.airflow_api import AirflowAPI
from e2e.browser import CHROMIUM, HIDDEN_LABELS, OUR_LABELS, PLACEHOLDERS, check_connection_form, wrong_key
from e2e.deployment import (
    ADMIN_USER,
    AIRFLOW_COMPONENTS,
    Deployment,
    Postgres,
    clean_up_earlier_runs,
    wait_until,
)
from e2e.replies import REPLIES_DAG, customer_replies, dag_source, print_timelines, write_before_watching

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "build" / "e2e"
FOLLOWUP_DAG = "example_autocalls_reply_followup"
SEGMENT_DAG = "example_autocalls_segment"
SEGMENT_SIZE = 50
PACKAGE = "airflow-provider-autocalls"
# The example polls every 30 s, as a real wait would; here the customer answers within seconds.
POKE_INTERVAL = 2
TIME_LIMIT = 600  # the run's promise: under 10 minutes, cleanup included
JOB_TYPES = {"scheduler": "SchedulerJob", "triggerer": "TriggererJob"}

stage_times: dict[str, float] = {}
results: dict[str, Any] = {}


@contextmanager
def stage(name: str) -> Iterator[None]:
    print(f"\n=== {name}", flush=True)
    started = time.monotonic()
    try:
        yield
    finally:
        stage_times[name] = time.monotonic() - started
        print(f"=== {name}: {stage_times[name]:.1f} s", flush=True)


def ensure_system_packages(packages: tuple[str, ...] = ("postgresql", "chromium")) -> None:
    """Debian's ``packages`` (of postgresql, chromium, redis-server), installed when missing."""
    installed = {
        "postgresql": lambda: bool(Postgres.find_bindir()),
        "chromium": lambda: Path(CHROMIUM).exists(),
        "redis-server": lambda: shutil.which("redis-server") is not None,
    }
    missing = []
    for package in packages:
        try:
            if not installed[package]():
                missing.append(package)
        except RuntimeError:
            missing.append(package)
    if not missing:
        print(f"{', '.join(packages)}: installed.")
        return
    if os.geteuid() != 0:
        raise RuntimeError(
            f"missing Debian packages {missing}: run 'sudo apt-get install {' '.join(missing)}'"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if "postgresql" in missing:  # only our own throw-away cluster; not Debian's default one on 5432
        conf = Path("/etc/postgresql-common/createcluster.d")
        conf.mkdir(parents=True, exist_ok=True)
        (conf / "autocalls-e2e.conf").write_text("create_main_cluster = false\n")
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    print(f"Installed {', '.join(missing)}.")


def deployment_dags() -> dict[str, str]:
    sources = {}
    for dag_id in (FOLLOWUP_DAG, SEGMENT_DAG):
        source = (ROOT / "example_dags" / f"{dag_id}.py").read_text()
        if dag_id == FOLLOWUP_DAG:
            assert "poke_interval=30" in source, "example 2 no longer polls every 30 s; update e2e"
            source = source.replace("poke_interval=30", f"poke_interval={POKE_INTERVAL}")
        sources[f"{dag_id}.py"] = source
    sources[f"{REPLIES_DAG}.py"] = dag_source()
    return sources


def when(moment: str) -> datetime:
    return datetime.fromisoformat(moment.replace("Z", "+00:00"))


def session_checks(d: Deployment, phone: str) -> list[dict[str, Any]]:
    requests = d.sim("GET", "requests")["requests"]
    return [
        r
        for r in requests
        if r["endpoint"] == "session_status" and r["query"].get("recipient_phone") == phone
    ]


def reply_followup(
    api: AirflowAPI, d: Deployment, phone: str, while_deferred: Callable[[], dict[str, Any]] | None = None
) -> dict[str, Any]:
    """
    One run of example 2 for ``phone``; checks it and returns its timeline.

    ``while_deferred`` runs once the trigger is polling; it must make the customer reply (so the
    fault scenarios can choose when) and returns what it wants recorded.
    """
    started = time.time()
    run_id = api.trigger(FOLLOWUP_DAG, {"phone": phone, "name": "Ada", "date": "Monday"})
    api.wait_task_state(FOLLOWUP_DAG, run_id, "send_reminder", "success", timeout=180)
    ti = api.wait_task_state(FOLLOWUP_DAG, run_id, "wait_for_reply", "deferred", timeout=120)
    deferred_at = time.time()
    classpath = ti["trigger"]["classpath"]
    assert classpath.endswith("triggers.autocalls.SessionOpenTrigger"), classpath

    def claimed() -> dict[str, Any] | None:
        ti = api.task_instance(FOLLOWUP_DAG, run_id, "wait_for_reply")
        job = ti.get("triggerer_job") or {}
        return (
            ti if ti["trigger"] and ti["trigger"]["triggerer_id"] and job.get("state") == "running" else None
        )

    ti = wait_until(claimed, timeout=60, what="a triggerer to take the trigger")
    triggerer_job = ti["trigger"]["triggerer_id"]
    # The sensor checks once before deferring; more checks come from the trigger, in the triggerer.
    wait_until(lambda: len(session_checks(d, phone)) >= 2, timeout=60, what="the trigger's first poll")
    polling_at = time.time()
    print(f"  {run_id}: deferred, trigger {ti['trigger']['id']} running in triggerer job {triggerer_job}")

    fault = while_deferred() if while_deferred else {}
    reply_at = fault.pop("reply_at", None) or reply(d, phone)
    state = api.wait_run(FOLLOWUP_DAG, run_id, timeout=240)
    finished_at = time.time()
    assert state == "success", f"run {run_id} ended {state}"

    messages = [m for m in d.delivered() if m["recipient_phone"] == phone]
    kinds = [m["kind"] for m in messages]
    assert kinds == ["template", "freeform"], f"{phone} got {kinds}, expected one template then one follow-up"
    template_at, followup_at = when(messages[0]["at"]), when(messages[1]["at"])
    assert template_at < when(reply_at) < followup_at, "the follow-up did not come after the reply"
    tis = {t["task_id"]: t for t in api.task_instances(FOLLOWUP_DAG, run_id)}
    sensor = tis["wait_for_reply"]
    new_job = fault.pop("new_job", None)
    fault_times = {f"{name.removesuffix('_at')} (fault)": moment for name, moment in fault.items()}
    polls = [when(r["at"]).timestamp() for r in session_checks(d, phone)]
    if fault:  # who polled for the reply while the component was down, and after it came back
        polls_seen = {
            "while_down": sum(fault["killed_at"] <= t < fault["restarted_at"] for t in polls),
            "after_restart": sum(t >= fault["restarted_at"] for t in polls),
        }
        print(
            f"  trigger polls for the reply: {polls_seen['while_down']} while down, {polls_seen['after_restart']} after"
        )
    print(
        f"  {phone}: {kinds}, follow-up {(followup_at - when(reply_at)).total_seconds():.1f} s after the reply"
    )
    return {
        "run_id": run_id,
        "phone": phone,
        "state": state,
        "messages": kinds,
        "tries": {task: t["try_number"] for task, t in tis.items()},
        "timeline_s": _in_order(
            {
                "template delivered": round(template_at.timestamp() - started, 2),
                "sensor deferred (seen by API)": round(deferred_at - started, 2),
                "trigger polling in triggerer": round(polling_at - started, 2),
                "customer replied": round(when(reply_at).timestamp() - started, 2),
                "sensor success (end_date)": round(when(sensor["end_date"]).timestamp() - started, 2),
                "follow-up delivered": round(followup_at.timestamp() - started, 2),
                "run success (seen by API)": round(finished_at - started, 2),
                **{name: round(moment - started, 2) for name, moment in fault_times.items()},
            }
        ),
        "triggerer_job_at_deferral": triggerer_job,
        "restarted_job": new_job,
        "polls": polls_seen if fault else {"total": len(polls)},
    }


def _in_order(timeline: dict[str, float]) -> dict[str, float]:
    return dict(sorted(timeline.items(), key=lambda item: item[1]))


def reply(d: Deployment, phone: str) -> str:
    """The customer answers; returns when, by the simulator's clock."""
    return str(
        d.sim("POST", "inbound", {"sender_id": 12, "recipient_phone": phone, "text": "Yes, see you!"})["at"]
    )


def kill_and_restart(
    d: Deployment, component: str, phone: str, api: AirflowAPI
) -> Callable[[], dict[str, Any]]:
    """SIGKILL ``component`` while the sensor is deferred; the customer replies while it is down."""

    def fault() -> dict[str, Any]:
        d.kill(component)
        killed_at = time.time()  # after the kill: a poll in flight before it is not "while down"
        print(f"  SIGKILLed the {component} (and its children)")
        reply_at = reply(d, phone)
        time.sleep(3)  # the reply waits with nothing of the component to notice it
        restarted_at = time.time()
        d.start(component)

        def new_job() -> dict[str, Any] | None:
            job = api.newest_job(JOB_TYPES[component])
            return job if job and when(job["start_date"]).timestamp() >= restarted_at - 1 else None

        job = wait_until(new_job, timeout=90, what=f"the restarted {component} to heartbeat")
        print(f"  restarted the {component}: job {job['id']}")
        return {
            "reply_at": reply_at,
            "killed_at": killed_at,
            "restarted_at": restarted_at,
            "new_job": job["id"],
        }

    return fault


def mapped_segment(api: AirflowAPI, d: Deployment, *, kill_scheduler: bool = False) -> dict[str, Any]:
    """
    Example 3 over 50 recipients; with ``kill_scheduler``, the scheduler and its LocalExecutor
    workers are SIGKILLed once a quarter of the messages are out, and started again.
    """
    before = len(d.delivered())
    run_id = api.trigger(SEGMENT_DAG, {"segment_size": SEGMENT_SIZE})
    killed: dict[str, Any] = {}
    if kill_scheduler:
        wait_until(
            lambda: len(d.delivered()) - before >= SEGMENT_SIZE // 4,
            timeout=180,
            what="a quarter of the sends",
        )
        states = [t["state"] for t in api.task_instances(SEGMENT_DAG, run_id) if t["task_id"] == "send_offer"]
        d.kill("scheduler")
        killed = {
            "sent_at_kill": len(d.delivered()) - before,
            "states_at_kill": {state: states.count(state) for state in sorted(set(states), key=str)},
        }
        print(
            f"  SIGKILLed the scheduler with {killed['sent_at_kill']} sent; task states {killed['states_at_kill']}"
        )
        time.sleep(3)
        d.start("scheduler")
        print("  restarted the scheduler")
    state = api.wait_run(SEGMENT_DAG, run_id, timeout=420)
    assert state == "success", f"run {run_id} ended {state}"
    tis = [t for t in api.task_instances(SEGMENT_DAG, run_id) if t["task_id"] == "send_offer"]
    phones = [f"+1415555{i:04d}" for i in range(SEGMENT_SIZE)]
    delivered = [m for m in d.delivered()[before:] if m["recipient_phone"] in phones]
    per_phone = {p: sum(m["recipient_phone"] == p for m in delivered) for p in phones}
    duplicates = {p: n for p, n in per_phone.items() if n > 1}
    missing = [p for p, n in per_phone.items() if n == 0]
    retried = sum(t["try_number"] > 1 for t in tis)
    kept_by_ledger = sum(
        "An earlier try sent this message" in log.read_text(errors="replace")
        for log in (d.logs / "tasks" / f"dag_id={SEGMENT_DAG}" / f"run_id={run_id}").rglob("*.log")
    )
    print(
        f"  {len(tis)} mapped task instances ({retried} run again after the restart); "
        f"{len(delivered)} messages to {sum(n > 0 for n in per_phone.values())} recipients; "
        f"{kept_by_ledger} re-runs found their message already sent"
    )
    assert len(tis) == SEGMENT_SIZE, f"{len(tis)} mapped task instances, expected {SEGMENT_SIZE}"
    assert all(t["state"] == "success" for t in tis), "not every mapped send succeeded"
    assert not duplicates, f"duplicate messages: {duplicates}"
    assert not missing, f"no message for {missing}"
    assert len({m["text"] for m in delivered}) == SEGMENT_SIZE, "the messages are not 50 distinct texts"
    return {
        "run_id": run_id,
        "mapped": len(tis),
        "messages": len(delivered),
        "duplicates": 0,
        "run_again": retried,
        "found_already_sent": kept_by_ledger,
        **killed,
    }


def providers(api: AirflowAPI, d: Deployment) -> dict[str, Any]:
    listed = d.airflow("providers", "list", "--output", "json")
    cli = next((p for p in json.loads(listed) if p["package_name"] == PACKAGE), None)
    assert cli, f"{PACKAGE} is not in 'airflow providers list'"
    api_listing = api.get("/providers", limit=100)["providers"]
    rest = next((p for p in api_listing if p["package_name"] == PACKAGE), None)
    assert rest, f"{PACKAGE} is not in GET /api/v2/providers"
    print(f"  airflow providers list: {cli['package_name']} {cli['version']}; /providers: {rest['version']}")
    # The way to test a connection that the UI's Test button can't on Airflow 3.3.2 (see browser.py).
    tested = d.airflow("connections", "test", "autocalls_default").strip().splitlines()[-1]
    print(f"  airflow connections test autocalls_default: {tested}")
    assert "success" in tested.lower(), tested
    return {"cli": cli["version"], "api": rest["version"], "connections_test": tested}


def browser(api: AirflowAPI, d: Deployment) -> dict[str, Any]:
    report = check_connection_form(d.api_url, ADMIN_USER, d.admin_password, d.sim_url, d.sim_key, OUT)
    print(f"  labels: {report.labels}")
    for label in OUR_LABELS:
        assert label in report.labels, f"the form does not show {label!r}"
    for label in HIDDEN_LABELS:
        assert label not in report.labels, f"the form shows the meaningless field {label!r}"
    assert report.placeholders == PLACEHOLDERS, report.placeholders
    outcome: dict[str, Any] = {"labels": report.labels, "placeholders": report.placeholders}
    right, wrong = report.outcomes
    for test, should_pass in ((right, True), (wrong, False)):
        if test.hit_upstream_port_bug:
            # Airflow 3.3.2's Test button cannot test a connection without a port (any type);
            # check our answer through the same endpoint, as the fixed UI will call it.
            answer = test.api_check["body"]
            print(
                f"  {test.connection_id}: Test button -> {test.toast!r} (Airflow's port bug, apache/airflow#73298)"
            )
        else:
            answer = {"status": "Successful" in test.toast, "message": test.toast}
        print(f"  {test.connection_id}: {answer}")
        assert answer["status"] is should_pass, f"{test.connection_id}: {answer}"
        if should_pass:
            assert "Connected to the Autocalls API: 2 sender(s)" in answer["message"], answer
        else:
            assert "[HTTP 401]" in answer["message"], f"the failure does not say what went wrong: {answer}"
            assert "Check the API key" in answer["message"], f"the failure does not say what to fix: {answer}"
            assert wrong_key(d.sim_key) not in answer["message"], "the failure shows the key"
        outcome[test.connection_id] = {
            "toast": test.toast,
            "answer": answer,
            "upstream_port_bug": test.hit_upstream_port_bug,
        }
    return outcome


def main() -> int:
    started = time.monotonic()
    begin(OUT, TIME_LIMIT, "e2e-local")
    failed = False
    d: Deployment | None = None
    api: AirflowAPI | None = None
    try:
        with stage("system packages (Debian: postgresql, chromium)"):
            ensure_system_packages()
        d = Deployment(OUT / "work", OUT / "logs", deployment_dags())
        with stage("PostgreSQL: cluster and database"):
            d.postgres.start()
            print(f"  PostgreSQL on 127.0.0.1:{d.postgres.port}")
        with stage("airflow db migrate"):
            d.airflow("db", "migrate")
        with stage("start simulator, api-server, scheduler, dag-processor, triggerer"):
            d.start_simulator()
            written_before_watching = write_before_watching(d)
            for component in AIRFLOW_COMPONENTS:
                d.start(component)
            api = AirflowAPI(d.api_url, ADMIN_USER, d.admin_password)
            wait_until(api.login, timeout=120, what="the api-server to sign us in")
            # Through the API, so the key is on no command line and in no log.
            api.add_connection("autocalls_default", "autocalls", f"{d.sim_url}/api", d.sim_key)
            api.wait_healthy(("metadatabase", "scheduler", "triggerer", "dag_processor"), timeout=120)
            for dag_id in (FOLLOWUP_DAG, SEGMENT_DAG, REPLIES_DAG):
                api.wait_dag(dag_id, timeout=120)
            print(f"  Airflow on {d.api_url}, simulator on {d.sim_url}")
        with stage("providers and connection test: CLI and REST API"):
            results["providers"] = providers(api, d)
        with stage("example 2: template -> deferred -> reply -> follow-up"):
            results["reply_followup"] = reply_followup(api, d, "+14155559001")
        with stage("example 2 with the triggerer SIGKILLed while deferred"):
            phone = "+14155559002"
            results["triggerer_kill"] = reply_followup(
                api, d, phone, kill_and_restart(d, "triggerer", phone, api)
            )
            killed = results["triggerer_kill"]["polls"]
            assert killed["while_down"] == 0, "something polled while the triggerer was down"
            assert killed["after_restart"] >= 1, "the restarted triggerer did not take the trigger over"
        with stage("example 2 with the scheduler SIGKILLed while deferred"):
            phone = "+14155559003"
            results["scheduler_kill"] = reply_followup(
                api, d, phone, kill_and_restart(d, "scheduler", phone, api)
            )
        with stage("example 6: customers write in -> asset watcher -> one run and follow-up each"):
            results["customer_replies"] = customer_replies(
                api,
                d,
                lambda phone: kill_and_restart(d, "triggerer", phone, api)(),
                written_before_watching,
            )
        with stage(f"example 3 mapped over {SEGMENT_SIZE} recipients"):
            results["segment"] = mapped_segment(api, d)
        with stage(f"example 3 over {SEGMENT_SIZE}, the scheduler SIGKILLed mid-run"):
            results["segment_scheduler_kill"] = mapped_segment(api, d, kill_scheduler=True)
        with stage("connection form in headless Chromium"):
            results["browser"] = browser(api, d)
    except BaseException:
        failed = True
        traceback.print_exc()
        if d is not None:
            print(f"\nFAILED; the logs of every component are in {d.logs}", flush=True)
    finally:
        # Cleanup runs to the end: a second Ctrl-C, a CI cancel or the time limit can't cut it short.
        signal.alarm(0)
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)
        if api is not None:
            api.close()
        if d is not None:
            failed |= not wind_down(d, results)
    total = time.monotonic() - started
    print("\nStage times:")
    for name, seconds in stage_times.items():
        print(f"  {seconds:6.1f} s  {name}")
    print(f"  {total:6.1f} s  in all")
    for key in ("reply_followup", "triggerer_kill", "scheduler_kill"):
        if key in results:
            print(f"\n{key} timeline (s after the trigger call):")
            for event, seconds in results[key]["timeline_s"].items():
                print(f"  {seconds:6.2f}  {event}")
    print_timelines(results.get("customer_replies", {}))
    summary = {"stage_times_s": {k: round(v, 1) for k, v in stage_times.items()}, "total_s": round(total, 1)}
    (OUT / "summary.json").write_text(json.dumps({**summary, **results}, indent=2, default=str))
    if not failed:  # on a failure the Airflow home and DAG files stay for reading, next to the logs
        shutil.rmtree(OUT / "work", ignore_errors=True)
    print("\ne2e: " + ("FAILED" if failed else "all checks passed") + f" in {total:.0f} s")
    return 1 if failed else 0


def begin(out: Path, time_limit: int, target: str) -> None:
    """Before a run: its output folder, a time limit and signals that end it in order, no leftovers."""
    out.mkdir(parents=True, exist_ok=True)

    def interrupt(signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGALRM:
            raise TimeoutError(f"make {target} took over {time_limit} s")
        raise KeyboardInterrupt(f"signal {signum}")

    for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGALRM):
        signal.signal(signum, interrupt)
    signal.alarm(time_limit)
    for leftover in clean_up_earlier_runs():
        print(f"cleaned up after an earlier run: {leftover}")


def wind_down(d: Deployment, results: dict[str, Any]) -> bool:
    """Stop everything, then scan every log for secrets; whether both went clean (noted in ``results``)."""
    with stage("stop everything"):
        problems = d.stop()
        for problem in problems:
            print(f"  {problem}")
        results["cleanup_problems"] = problems
    with stage("secrets: none in any log"):
        leaks = leaked_secrets(d)
        for leak in leaks:
            print(f"  {leak}")
        results["secret_leaks"] = leaks
    return not problems and not leaks


def leaked_secrets(d: Deployment) -> list[str]:
    """Every file of the logs folder that holds the API key, the wrong key or a password."""
    secrets = {**d.secrets, "wrong API key": wrong_key(d.sim_key)}
    leaks = []
    files = [f for f in d.logs.rglob("*") if f.is_file()]
    for file in files:
        text = file.read_bytes()
        leaks += [f"{name} in {file}" for name, secret in secrets.items() if secret.encode() in text]
    print(f"  {len(files)} log files scanned for {len(secrets)} secrets")
    return leaks


if __name__ == "__main__":
    sys.exit(main())
