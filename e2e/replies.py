"""
Example 6 on the real deployment: customers write in, the asset watcher's ``CustomerReplyTrigger``
polls in the triggerer, and the scheduler starts one run of the example per message.

The simulator plays the customers (``/_sim/inbound``). What counts is what Airflow's REST API and the
simulator saw: the example's runs, the asset events each run consumed, the follow-ups delivered
and the session-status reads. Every event is timed from the customer's write (the simulator's
clock; it runs on this machine, like Airflow's).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy

from e2e.airflow_api import AirflowAPI
from e2e.deployment import Deployment, wait_until

ROOT = Path(__file__).resolve().parent.parent
REPLIES_DAG = "example_autocalls_customer_replies"
REPLIES_ASSET = "autocalls_customer_replies"
SENDER_ID = 12
#: The example's watched customers (``WATCHED``): A writes first, then all three; B while the triggerer is down.
A, B, C = "+14155550161", "+14155550162", "+14155550163"
# The example polls every 60 s, as a real watcher would; here the customers write seconds apart.
POLL_INTERVAL = 5
#: How soon after a customer's message its run must start: one poll round, then 10 s for the rest.
RUN_START_LIMIT = POLL_INTERVAL + 10
#: What restarting the triggerer takes (``kill_and_restart``): SIGKILL, ``write(phone)``, restart.
TriggererKill = Callable[[str], dict[str, Any]]


def dag_source() -> str:
    """The example's source, polling every :data:`POLL_INTERVAL` seconds instead of 60."""
    source = (ROOT / "example_dags" / f"{REPLIES_DAG}.py").read_text()
    assert "poll_interval=60" in source, "example 6 no longer polls every 60 s; update e2e/replies.py"
    assert all(f'"{phone}"' in source for phone in (A, B, C)), "example 6 watches other customers"
    return source.replace("poll_interval=60", f"poll_interval={POLL_INTERVAL}")


def when(moment: str) -> float:
    return datetime.fromisoformat(moment.replace("Z", "+00:00")).timestamp()


def write(d: Deployment, phone: str, name: str) -> float:
    """The customer writes in; returns when, by the simulator's clock."""
    answer = d.sim(
        "POST", "inbound", {"sender_id": SENDER_ID, "recipient_phone": phone, "text": "Hi!", "name": name}
    )
    return when(str(answer["at"]))


def write_before_watching(d: Deployment) -> float:
    """C writes before Airflow starts, so before the watcher's first poll: that message must never fire."""
    return write(d, C, "Cleo")


class Watch:
    """
    What the example's runs did for the customers' messages, checked as they come.

    :param d: the deployment.
    :param api: the signed-in REST client.
    """

    def __init__(self, d: Deployment, api: AirflowAPI) -> None:
        self.d = d
        self.api = api
        #: Per customer, the messages that must have started a run (each once).
        self.expected: Counter[str] = Counter()
        self.runs_checked: set[str] = set()

    # -- what Airflow and the simulator saw ------------------------------------------------------------

    def runs(self) -> list[dict[str, Any]]:
        runs = self.api.get(f"/dags/{REPLIES_DAG}/dagRuns", limit=100, order_by="run_after")["dag_runs"]
        return list(runs)

    def consumed(self, run_id: str) -> list[dict[str, Any]]:
        """The asset events a run consumed, oldest first."""
        events = self.api.get(f"/dags/{REPLIES_DAG}/dagRuns/{run_id}/upstreamAssetEvents")["asset_events"]
        return sorted(events, key=lambda e: when(e["timestamp"]))

    def asset_events(self) -> list[dict[str, Any]]:
        return list(self.api.get("/assets/events", name_pattern=REPLIES_ASSET, limit=100)["asset_events"])

    def follow_ups(self) -> list[dict[str, Any]]:
        return [m for m in self.d.delivered() if m["recipient_phone"] in (A, B, C)]

    def polls(self, phone: str, since: float = 0.0, until: float = float("inf")) -> list[float]:
        """When the simulator answered a session-status read of ``phone`` in [since, until)."""
        return [
            moment
            for r in self.d.sim("GET", "requests")["requests"]
            if r["endpoint"] == "session_status"
            and r["query"].get("recipient_phone") == phone
            and since <= (moment := when(r["at"])) < until
        ]

    def cursors(self) -> dict[str, Any]:
        """The watcher's cursor per customer, as kept in Airflow's asset state store."""
        engine = sqlalchemy.create_engine(self.d.postgres.url)
        try:
            with engine.connect() as db:
                rows = db.execute(
                    sqlalchemy.text(
                        "SELECT s.key, s.value FROM asset_state_store s JOIN asset a ON a.id = s.asset_id "
                        "WHERE a.name = :name"
                    ),
                    {"name": REPLIES_ASSET},
                ).all()
        finally:
            engine.dispose()
        return {key.rsplit(".", 1)[-1]: json.loads(value) for key, value in rows}

    # -- the checks --------------------------------------------------------------------------------------

    def wait_watching(self, phones: tuple[str, ...], rounds: int) -> None:
        """Wait until the watcher has read each of ``phones`` ``rounds`` more times."""
        since = time.time()
        wait_until(
            lambda: all(len(self.polls(p, since)) >= rounds for p in phones),
            timeout=rounds * POLL_INTERVAL + 60,
            interval=1,
            what=f"{rounds} polls of each watched customer",
        )

    def expect(self, writes: dict[str, float], limit: float | None = RUN_START_LIMIT) -> list[dict[str, Any]]:
        """
        One run for each message in ``writes`` (``{phone: written at}``), starting within ``limit``
        seconds (``None``: no limit) and ending ``success`` with one follow-up to that customer;
        returns each message's timeline.
        """
        self.expected.update(writes.keys())

        def new_runs_done() -> list[dict[str, Any]] | None:
            runs = [r for r in self.runs() if r["dag_run_id"] not in self.runs_checked]
            phones = [
                e["extra"]["payload"]["recipient_phone"] for r in runs for e in self.consumed(r["dag_run_id"])
            ]
            assert all(r["state"] != "failed" for r in runs), f"a run failed: {runs}"
            if sorted(phones) == sorted(writes) and all(r["state"] == "success" for r in runs):
                return runs
            assert len(phones) <= len(writes), f"runs for {phones}, expected one each for {sorted(writes)}"
            return None

        runs = wait_until(
            new_runs_done, timeout=RUN_START_LIMIT + 90, interval=1, what=f"runs for {sorted(writes)}"
        )
        assert len(runs) == len(writes), (
            f"{len(runs)} runs for {len(writes)} messages: {[r['dag_run_id'] for r in runs]}"
        )
        timelines = []
        for run in runs:
            events = self.consumed(run["dag_run_id"])
            assert len(events) == 1, f"{run['dag_run_id']} consumed {len(events)} asset events, expected 1"
            event = events[0]
            payload = event["extra"]["payload"]
            phone = payload["recipient_phone"]
            written = writes[phone]
            followed = [
                when(m["at"])
                for m in self.follow_ups()
                if m["recipient_phone"] == phone and when(m["at"]) > written
            ]
            assert len(followed) == 1, f"{phone} got {len(followed)} follow-ups after writing, expected 1"
            timeline = {
                "asset event": when(event["timestamp"]) - written,
                "run queued": when(run["queued_at"]) - written,
                "run started": when(run["start_date"]) - written,
                "follow-up delivered": followed[0] - written,
                "run success": when(run["end_date"]) - written,
            }
            assert limit is None or timeline["run started"] <= limit, (
                f"the run for {phone}'s message started {timeline['run started']:.1f} s after it, "
                f"over poll_interval + 10 = {limit} s"
            )
            self.runs_checked.add(run["dag_run_id"])
            timelines.append(
                {
                    "phone": phone,
                    "run_id": run["dag_run_id"],
                    "last_customer_message_at": payload["last_customer_message_at"],
                    "timeline_s": {name: round(seconds, 2) for name, seconds in timeline.items()},
                }
            )
            print(
                f"  {phone} wrote; {run['dag_run_id']} started {timeline['run started']:.1f} s later, "
                f"follow-up at {timeline['follow-up delivered']:.1f} s"
            )
        return sorted(timelines, key=lambda t: writes[t["phone"]])

    def totals(self) -> dict[str, Any]:
        """Runs, asset events and follow-ups so far: exactly one of each per message expected."""
        runs = self.runs()
        events = self.asset_events()
        per_phone = Counter(e["extra"]["payload"]["recipient_phone"] for e in events)
        follow_ups = Counter(m["recipient_phone"] for m in self.follow_ups())
        expected = dict(sorted(self.expected.items()))
        assert len(runs) == sum(self.expected.values()), (
            f"{len(runs)} runs, expected {sum(self.expected.values())}"
        )
        assert dict(sorted(per_phone.items())) == expected, (
            f"asset events per customer {dict(per_phone)}, expected {expected}"
        )
        assert dict(sorted(follow_ups.items())) == expected, (
            f"follow-ups per customer {dict(follow_ups)}, expected {expected}"
        )
        return {"runs": len(runs), "asset_events": dict(per_phone), "follow_ups": dict(follow_ups)}


def customer_replies(
    api: AirflowAPI, d: Deployment, kill_triggerer: TriggererKill, written_before: float
) -> dict[str, Any]:
    """
    Example 6 end to end: C's message from before the watcher started never fires; A writes, then
    A, B and C, a poll round apart; nobody writes for two rounds; the triggerer is SIGKILLed, B
    writes while it is down, and it restarts. Runs, asset events and follow-ups per customer must
    be exact after each step.

    :param kill_triggerer: SIGKILLs the triggerer, makes the given customer write and restarts it.
    :param written_before: when :func:`write_before_watching` wrote.
    """
    watch = Watch(d, api)
    assert api.get(f"/dags/{REPLIES_DAG}")["is_paused"] is False, "an asset-triggered DAG must be unpaused"
    result: dict[str, Any] = {"poll_interval_s": POLL_INTERVAL, "run_start_limit_s": RUN_START_LIMIT}

    # Before the watcher's first poll: its first reads take the baseline and fire nothing.
    watch.wait_watching((A, B, C), rounds=2)
    assert not watch.runs(), f"runs before anyone wrote to the watcher: {watch.runs()}"
    result["before_first_poll"] = {"written_at": written_before, "runs": 0, **watch.totals()}
    print(f"  C wrote before the watcher started; {len(watch.polls(C))} polls of C later, no run")

    written = {A: write(d, A, "Ana")}
    result["one"] = watch.expect(written)
    result["one_totals"] = watch.totals()

    written = {}
    for phone, name in ((A, "Ana"), (B, "Ben"), (C, "Cleo")):
        if written:  # a poll round apart, so each message is an asset event (and a run) of its own
            time.sleep(POLL_INTERVAL + 1)
        written[phone] = write(d, phone, name)
    result["three"] = watch.expect(written)
    result["three_totals"] = watch.totals()

    quiet_from = time.time()
    time.sleep(2 * POLL_INTERVAL + 1)
    quiet_reads = {phone: len(watch.polls(phone, since=quiet_from)) for phone in (A, B, C)}
    result["quiet"] = {"seconds": round(time.time() - quiet_from, 1), "polls": quiet_reads, **watch.totals()}
    assert all(n >= 2 for n in quiet_reads.values()), f"the watcher did not keep polling: {quiet_reads}"
    print(f"  nobody wrote for {result['quiet']['seconds']} s: polls {quiet_reads}, no new run")

    # The cursor is in the asset state store: what a restarted triggerer resumes from.
    cursors = watch.cursors()
    assert set(cursors) == {A, B, C}, f"the asset state store holds cursors for {sorted(cursors)}"
    for timeline in result["three"]:
        kept = cursors[timeline["phone"]]["last_customer_message_at"]
        assert kept == timeline["last_customer_message_at"], f"{timeline['phone']}: store has {kept}"
    result["cursors_before_kill"] = cursors

    fault = kill_triggerer(B)
    written = {B: when(fault["reply_at"])}
    killed, restarted = fault["killed_at"], fault["restarted_at"]
    # No limit from the write: how soon the restarted triggerer runs the watcher is Airflow's (its
    # start, the takeover of a dead triggerer's triggers); checked below from the watcher's first poll.
    result["triggerer_kill"] = watch.expect(written, limit=None)
    while_down = len(watch.polls(B, since=killed, until=restarted))
    assert while_down == 0, f"{while_down} polls of B while the triggerer was down"
    first_poll = min(watch.polls(B, since=restarted))
    # Two more rounds after the restart: nothing already handled fires again.
    watch.wait_watching((A, B, C), rounds=2)
    result["triggerer_kill_totals"] = watch.totals()
    timeline = result["triggerer_kill"][0]["timeline_s"]
    timeline |= {
        "triggerer SIGKILLed": round(killed - written[B], 2),
        "triggerer restarted": round(restarted - written[B], 2),
        "first poll after the restart": round(first_poll - written[B], 2),
    }
    cursor = watch.cursors()[B]["last_customer_message_at"]
    assert cursor == result["triggerer_kill"][0]["last_customer_message_at"], (
        f"B's cursor after the restart: {cursor}"
    )
    result["triggerer_kill_fault"] = {
        "new_job": fault["new_job"],
        "polls_while_down": while_down,
        "cursor_after": cursor,
    }
    from_poll = timeline["run started"] - timeline["first poll after the restart"]
    assert from_poll <= RUN_START_LIMIT - POLL_INTERVAL, (
        f"B's message ran {from_poll:.1f} s after the restarted watcher's first poll found it, "
        f"over {RUN_START_LIMIT - POLL_INTERVAL} s"
    )
    print(
        f"  triggerer down {restarted - killed:.1f} s; the restarted watcher first polled B "
        f"{first_poll - restarted:.1f} s after the restart, and its run started {from_poll:.1f} s later; "
        f"totals {result['triggerer_kill_totals']}"
    )
    return result


def print_timelines(result: dict[str, Any]) -> None:
    """Each message's timeline, in seconds after the customer wrote."""
    for step in ("one", "three", "triggerer_kill"):
        for message in result.get(step, []):
            print(f"\ncustomer_replies {step}: {message['phone']} (s after the customer wrote):")
            for event, seconds in sorted(message["timeline_s"].items(), key=lambda item: item[1]):
                print(f"  {seconds:6.2f}  {event}")
