"""
The ledger on S3, through Airflow's ``ObjectStoragePath`` and the Amazon provider, against moto's S3
server on 127.0.0.1: exclusive records by conditional writes (``If-None-Match: *``), two tries racing
on one task instance, and resuming sends.

No request leaves this machine: the connections point at the local server, the credentials are fake,
and botocore's metadata lookups and shared config files are switched off.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import pytest

pytest.importorskip("airflow.providers.amazon.aws.fs.s3", reason="the S3 ledger needs the Amazon provider")
pytest.importorskip("s3fs", reason="the S3 ledger needs s3fs")
pytest.importorskip("moto.server", reason="the S3 stand-in is moto's server (moto[server])")

import boto3
from botocore.exceptions import ClientError
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from s3fs.errors import translate_boto_error
from werkzeug.serving import make_server

from airflow_provider_autocalls.exceptions import SenderOfflineError
from airflow_provider_autocalls.ledger import LedgerStoreError, ledger_of
from airflow_provider_autocalls.ledger import _stores as stores
from airflow_provider_autocalls.operators.autocalls import BulkSendTemplateOperator, SendTemplateOperator
from airflow_provider_autocalls.testing import AutocallsSimulator, Fault
from tests.test_racing_tries import check_bulk_races, check_single_races, prepare_race

BUCKET = "ledgers"
#: Used only by the forked tries: a filesystem this process made would not survive the fork.
RACE_CONN = "autocalls_s3_race"
CONN = "autocalls_s3"
ROUNDS = 50


class QuietRequestHandler(MotoRequestHandler):
    """moto's request handler without a log line per request (the server answers one at a time)."""

    def log_request(self, *args: Any, **kwargs: Any) -> None:
        pass


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto's S3 on 127.0.0.1 with a bucket; the AWS environment points there and nowhere else."""
    # One request at a time: moto checks If-None-Match and then writes, which only a serial server
    # makes one step, as it is on S3 itself. (Unconditional writes still both succeed, serial or not.)
    server = make_server(
        "127.0.0.1",
        0,
        DomainDispatcherApplication(create_backend_app),
        threaded=False,
        request_handler=QuietRequestHandler,
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    endpoint = f"http://127.0.0.1:{server.server_port}"
    nowhere = str(tmp_path_factory.mktemp("aws") / "none")
    connection = {
        "conn_type": "aws",
        "login": "testing",
        "password": "testing",
        "extra": {"endpoint_url": endpoint, "region_name": "us-east-1"},
    }
    with pytest.MonkeyPatch.context() as env:
        for name, value in {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": nowhere,
            "AWS_SHARED_CREDENTIALS_FILE": nowhere,
            f"AIRFLOW_CONN_{CONN.upper()}": json.dumps(connection),
            f"AIRFLOW_CONN_{RACE_CONN.upper()}": json.dumps(connection),
        }.items():
            env.setenv(name, value)
        env.delenv("AWS_PROFILE", raising=False)
        s3_client(endpoint).create_bucket(Bucket=BUCKET)
        yield endpoint
    server.shutdown()
    thread.join(timeout=10)


def s3_client(endpoint: str) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


@pytest.fixture
def location(s3_endpoint: str) -> str:
    return f"s3://{CONN}@{BUCKET}/{uuid.uuid4().hex}"


def context(task_id: str, run_id: str = "r1") -> Any:
    return {"ti": SimpleNamespace(dag_id="s3", run_id=run_id, task_id=task_id, map_index=-1, try_number=1)}


def store_at(location: str) -> Any:
    return ledger_of("s3", "r1", "t", -1, location).store


# -- the store ---------------------------------------------------------------------------------------


def test_an_s3_ledger_is_kept_by_s3fs_with_conditional_writes(location: str) -> None:
    store = store_at(location)
    assert isinstance(store, stores.ObjectStore)
    assert type(store._fs).__module__.startswith("s3fs")


def test_an_existing_name_is_not_created_again(location: str) -> None:
    store = store_at(location)
    assert store.create("p1.0.claim", {"try_number": 1})
    assert not store.create("p1.0.claim", {"try_number": 2})
    assert store.read("p1.0.claim") == {"try_number": 1}
    assert list(store.names()) == ["p1.0.claim"]


def test_the_put_is_conditional_two_creates_of_one_name_one_winner(location: str) -> None:
    # Two tries (two stores, two threads) create the same names at the same moment: a plain PUT
    # would let both succeed, and the record would be the last writer's.
    first, second = store_at(location), store_at(location)
    wins: list[list[str]] = [[], []]
    barrier = threading.Barrier(2)

    def create_all(store: Any, mine: list[str], who: str) -> None:
        for round_ in range(ROUNDS):
            barrier.wait(timeout=30)
            if store.create(f"p{round_}.0.claim", {"who": who}):
                mine.append(str(round_))

    threads = [
        threading.Thread(target=create_all, args=(store, wins[index], str(index)))
        for index, store in enumerate((first, second))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(wins[0] + wins[1], key=int) == [str(r) for r in range(ROUNDS)]  # exactly one each
    for index, mine in enumerate(wins):
        for round_ in mine:
            assert first.read(f"p{round_}.0.claim") == {"who": str(index)}  # the winner's record stands


def test_records_another_try_wrote_since_are_seen(location: str, s3_endpoint: str) -> None:
    # This process listed the ledger (s3fs caches listings); another try then wrote a record.
    store = store_at(location)
    assert store.create("p1.0.claim", {"try_number": 1})
    assert list(store.names()) == ["p1.0.claim"]
    assert store.read("p1.0.outcome") is None
    key = store.location.split("@", 1)[1].partition("/")[2] + "/p1.0.outcome.json"
    s3_client(s3_endpoint).put_object(Bucket=BUCKET, Key=key, Body=b'{"state":"sent"}')
    assert store.read("p1.0.outcome") == {"state": "sent"}
    assert sorted(store.names()) == ["p1.0.claim", "p1.0.outcome"]


def test_a_conflict_between_two_conditional_writes_is_retried(
    location: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # S3 answers 409 ConditionalRequestConflict to one of two overlapping conditional writes of a
    # name; the retry creates it, or finds that the other write won.
    store = store_at(location)
    real = store._fs.pipe_file
    calls: list[str] = []

    def conflict_once(path: str, data: bytes, **kwargs: Any) -> Any:
        calls.append(path)
        if len(calls) == 1:  # what s3fs raises for S3's answer
            raise translate_boto_error(
                ClientError(
                    {"Error": {"Code": "ConditionalRequestConflict", "Message": "retry"}}, "PutObject"
                )
            )
        return real(path, data, **kwargs)

    monkeypatch.setattr(store._fs, "pipe_file", conflict_once)
    assert store.create("p1.0.claim", {"try_number": 1})
    assert len(calls) == 2
    assert not store.create("p1.0.claim", {"try_number": 2})


def test_a_retried_put_that_meets_its_own_first_write_is_a_win(
    location: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The first PUT reached S3 but its answer was lost; the client's retry gets 412 for that object.
    store = store_at(location)
    real = store._fs.pipe_file

    def answer_lost(path: str, data: bytes, **kwargs: Any) -> Any:
        real(path, data, **kwargs)
        raise FileExistsError(path)

    monkeypatch.setattr(store._fs, "pipe_file", answer_lost)
    assert store.create("p1.0.claim", {"attempt": "a"})
    monkeypatch.undo()
    assert not store.create("p1.0.claim", {"attempt": "b"})  # another try's record: lost
    assert store.read("p1.0.claim") == {"attempt": "a"}


def test_a_filesystem_without_conditional_writes_is_refused(
    location: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fsspec.implementations.http import HTTPFileSystem

    try:
        from airflow.sdk.io.store import attach
    except ImportError:  # Airflow 2
        from airflow.io.store import attach  # type: ignore[no-redef]

    # fsspec's HTTP filesystem has no exclusive create; refused before any request (port 9: nobody).
    attach(protocol="http", fs=HTTPFileSystem())
    with pytest.raises(LedgerStoreError, match="not known to create objects exclusively") as refused:
        ledger_of("s3", "r1", "t", -1, "http://127.0.0.1:9/ledgers")
    assert "s3fs>=2024.12.0" in str(refused.value)
    # A scheme no filesystem is registered for says so, as an error of ledger_location.
    with pytest.raises(LedgerStoreError, match="cannot be opened"):
        ledger_of("s3", "r1", "t", -1, "sftp://127.0.0.1:9/ledgers")
    # s3fs before its conditional PutObject is refused too: it would overwrite silently.
    monkeypatch.setitem(stores._CONDITIONAL_CREATE, "s3fs", "9999.1")
    with pytest.raises(LedgerStoreError, match=r"needs s3fs>=9999\.1"):
        store_at(location)


# -- sends with an S3 ledger ---------------------------------------------------------------------------


@pytest.fixture
def _api(make_conn: Callable[..., str]) -> None:
    make_conn(max_retries=0)


@pytest.mark.usefixtures("_api")
def test_a_single_send_is_not_repeated_by_a_later_try(location: str, sim: AutocallsSimulator) -> None:
    def send() -> Any:
        return SendTemplateOperator(
            task_id="one",
            sender_id=12,
            template_id=46,
            recipient_phone="+14155550001",
            ledger_location=location,
        ).execute(context("one"))

    first = send()
    assert send() == first
    assert len(sim.delivered) == 1


@pytest.mark.usefixtures("_api")
def test_a_bulk_send_resumes_where_it_stopped(location: str, sim: AutocallsSimulator) -> None:
    phones = [f"+1415555{i:04d}" for i in range(6)]

    def bulk() -> Any:
        return BulkSendTemplateOperator(
            task_id="bulk",
            sender_id=12,
            template_id=46,
            recipients=[{"recipient_phone": p} for p in phones],
            ledger_location=location,
            max_in_flight=1,  # the faults below meet the rows in order
        ).execute(context("bulk"))

    offline = '{"success": false, "error": "off", "error_code": "SENDER_OFFLINE"}'
    sim.inject(Fault(endpoint="send_template", process=True, drop=True))  # row 1: in doubt
    for _ in range(2):
        sim.inject(Fault(endpoint="send_template", status=None, delay=0))  # rows 2, 3: sent
    sim.inject(Fault(endpoint="send_template", status=422, body=offline))  # row 4: offline, stop
    with pytest.raises(SenderOfflineError):
        bulk()
    assert len(sim.delivered) == 3
    summary = bulk()
    delivered = [m["recipient_phone"] for m in sim.delivered]
    assert len(delivered) == len(set(delivered)) == 6
    assert (summary["sent"], summary["unknown"], summary["from_earlier_tries"]) == (5, 1, 3)
    assert summary["report"].startswith(f"s3://{CONN}@{BUCKET}/")


# -- two tries racing ----------------------------------------------------------------------------------


@pytest.fixture
def race_location(s3_endpoint: str, make_conn: Callable[..., str], sim: AutocallsSimulator) -> str:
    prepare_race(make_conn, sim)
    return f"s3://{RACE_CONN}@{BUCKET}/{uuid.uuid4().hex}"


def read_report(endpoint: str) -> Callable[[str], str]:
    """Reads a report with boto3, so this process never holds the forked tries' S3 filesystem."""

    def read(report: str) -> str:
        bucket, _, key = report.split("@", 1)[1].partition("/")
        return str(s3_client(endpoint).get_object(Bucket=bucket, Key=key)["Body"].read().decode())

    return read


def test_a_single_send_raced_by_two_tries_on_s3_goes_out_once(
    race_location: str, sim: AutocallsSimulator
) -> None:
    # A loser that reads the ledger between the winner's claim and its outcome fails instead of
    # returning the winner's answer (it sends nothing): a bug of the operator, reproduced on its own
    # in test_racing_late_loser.py; S3's slower reads make that moment frequent here.
    check_single_races(race_location, sim)


def test_a_bulk_send_raced_by_two_tries_on_s3_messages_everyone_once(
    race_location: str, sim: AutocallsSimulator, s3_endpoint: str
) -> None:
    check_bulk_races(race_location, sim, read_report(s3_endpoint))
