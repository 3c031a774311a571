"""The DynamoDB job store: table layout, concurrent writers, limits and AWS errors.

The rules every job store follows run on SQLite and DynamoDB alike in
tests/contract/test_jobstore_contract.py; these tests cover what only DynamoDB does.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from botocore.stub import ANY, Stubber

from prepflow.aws import dynamodb
from prepflow.aws.dynamodb import DynamoJobStore, table_definition
from prepflow.errors import JobStoreError
from prepflow.jobs.spec import JobDescription, JobStatus
from prepflow.jobstore.base import MAX_WRITE_ATTEMPTS, JobRecord
from tests.aws.conftest import REGION

TABLE = "prepflow-test-jobs"
NAME = "prepflow-orders-0123456789ab"
KEY = "s3://acme-ml-raw/input/orders.csv#sequencer=0066A1B2C3D4E5F601"


@pytest.fixture
def client(moto_in_process) -> Any:
    dynamodb_client = boto3.client("dynamodb", region_name=REGION)
    dynamodb_client.create_table(**table_definition(TABLE))
    return dynamodb_client


@pytest.fixture
def jobs(client) -> DynamoJobStore:
    return DynamoJobStore(client, TABLE)


def new_record(name: str = NAME, key: str = KEY, **fields: Any) -> JobRecord:
    return JobRecord(job_name=name, idempotency_key=key, **fields)


def increment_attempts(stored: JobRecord) -> dict[str, Any]:
    return {"submit_attempts": stored.submit_attempts + 1}


def raw_item(client: Any, pk: str) -> dict[str, Any] | None:
    item: dict[str, Any] | None = client.get_item(
        TableName=TABLE, Key={"pk": {"S": pk}}, ConsistentRead=True
    ).get("Item")
    return item


# -- table layout -------------------------------------------------------------------------------


def test_table_definition_keys():
    definition = table_definition("acme-jobs")

    assert definition["TableName"] == "acme-jobs"
    assert definition["KeySchema"] == [{"AttributeName": "pk", "KeyType": "HASH"}]
    assert definition["BillingMode"] == "PAY_PER_REQUEST"
    assert {
        (a["AttributeName"], a["AttributeType"]) for a in definition["AttributeDefinitions"]
    } == {
        ("pk", "S"),
        ("kind", "S"),
        ("created_at", "S"),
    }


def test_table_definition_index():
    (index,) = table_definition("acme-jobs")["GlobalSecondaryIndexes"]

    assert index["IndexName"] == "jobs-by-created-at"
    assert index["KeySchema"] == [
        {"AttributeName": "kind", "KeyType": "HASH"},
        {"AttributeName": "created_at", "KeyType": "RANGE"},
    ]
    assert index["Projection"] == {"ProjectionType": "ALL"}


def test_create_writes_job_item(jobs, client):
    created_at = datetime(2024, 6, 4, 10, 0, tzinfo=UTC)
    record, _ = jobs.create(new_record(created_at=created_at))

    item = raw_item(client, f"job#{NAME}")

    assert item is not None
    assert item["kind"] == {"S": "job"}
    assert item["created_at"] == {"S": "2024-06-04T10:00:00.000000+00:00"}
    assert item["job_name"] == {"S": NAME}
    assert item["idempotency_key"] == {"S": KEY}
    assert item["status"] == {"S": "InProgress"}
    assert item["version"] == {"N": "0"}
    assert JobRecord.model_validate_json(item["body"]["S"]) == record


def test_create_writes_key_item(jobs, client):
    jobs.create(new_record())

    item = raw_item(client, f"key#{KEY}")

    assert item == {"pk": {"S": f"key#{KEY}"}, "job_name": {"S": NAME}}


def test_transition_updates_indexed_fields(jobs, client):
    jobs.create(new_record())

    jobs.transition(NAME, JobStatus.FAILED, failure_reason="AlgorithmError: exit 1")

    item = raw_item(client, f"job#{NAME}")
    assert item is not None
    assert item["status"] == {"S": "Failed"}
    assert item["version"] == {"N": "1"}


def test_list_orders_by_utc_instant(jobs, client):
    plus_two = timezone(timedelta(hours=2))
    # 10:30 at UTC+2 is 08:30 UTC, so it is older than 09:00 UTC despite its larger local time.
    jobs.create(
        new_record(
            "prepflow-east", "key-east", created_at=datetime(2024, 6, 4, 10, 30, tzinfo=plus_two)
        )
    )
    jobs.create(
        new_record("prepflow-utc", "key-utc", created_at=datetime(2024, 6, 4, 9, 0, tzinfo=UTC))
    )

    listed = [r.job_name for r in jobs.list_jobs()]

    assert listed == ["prepflow-utc", "prepflow-east"]
    east = raw_item(client, "job#prepflow-east")
    assert east is not None
    assert east["created_at"] == {"S": "2024-06-04T08:30:00.000000+00:00"}


# -- idempotency --------------------------------------------------------------------------------


def test_key_reused_with_other_name(jobs, client):
    first, _ = jobs.create(new_record("prepflow-first-000000000001"))

    stored, created = jobs.create(new_record("prepflow-second-00000000002"))

    assert created is False
    assert stored == first
    assert raw_item(client, "job#prepflow-second-00000000002") is None
    assert jobs.find("prepflow-second-00000000002") is None
    assert [r.job_name for r in jobs.list_jobs()] == ["prepflow-first-000000000001"]


def test_name_reused_with_other_key(jobs, client):
    jobs.create(new_record(key="first-key"))

    stored, created = jobs.create(new_record(key="second-key"))

    assert created is False
    assert stored.idempotency_key == "first-key"
    assert raw_item(client, "key#second-key") is None


# -- concurrent writers -------------------------------------------------------------------------

THREADS = 8
ROUNDS = 20


class OneRequestAtATime:
    """A client that sends one request at a time, from any number of threads.

    DynamoDB applies each write to an item atomically. moto 5.2's in-process backend checks a
    write's condition and stores the item in separate steps without a lock, so two threads can
    both pass the same version check and the test would fail for moto's sake. Threads still
    interleave between requests, between a store's read and its conditional write.
    """

    def __init__(self, client: Any) -> None:
        self._client = client
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._client, name)
        if not callable(attribute):
            return attribute

        def call(**request: Any) -> Any:
            with self._lock:
                return attribute(**request)

        return call


@pytest.fixture
def shared_jobs(client) -> DynamoJobStore:
    """A store that several threads use at once."""
    return DynamoJobStore(OneRequestAtATime(client), TABLE)


def run_together(action: Callable[[int], Any]) -> list[Any]:
    """Run ``action(thread_number)`` on THREADS threads released at once; return the results."""
    barrier = threading.Barrier(THREADS)

    def run(number: int) -> Any:
        barrier.wait(timeout=30)
        return action(number)

    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        return list(pool.map(run, range(THREADS), timeout=60))


def test_threads_never_lose_update(shared_jobs):
    shared_jobs.create(new_record())

    def count(_: int) -> list[str]:
        """Increment ROUNDS times; return the message of each increment that gave up."""
        gave_up = []
        for _ in range(ROUNDS):
            try:
                shared_jobs.modify(NAME, increment_attempts)
            except JobStoreError as error:
                gave_up.append(str(error))
        return gave_up

    gave_up = [message for messages in run_together(count) for message in messages]

    # JobStore retries a lost compare-and-set MAX_WRITE_ATTEMPTS times without a pause, so
    # under this much contention a writer may give up. It must then raise, and every
    # increment that returned must be stored.
    applied = THREADS * ROUNDS - len(gave_up)
    stored = shared_jobs.get(NAME)
    assert all(f"changed {MAX_WRITE_ATTEMPTS} times" in message for message in gave_up)
    assert applied >= ROUNDS
    assert stored.submit_attempts == applied
    assert stored.version == applied


def test_threads_create_one_record(shared_jobs):
    def create(number: int) -> tuple[str, bool]:
        record = new_record(inputs=[f"s3://acme-ml-raw/input/from-thread-{number}.csv"])
        stored, created = shared_jobs.create(record)
        return stored.idempotency_key, created

    results = run_together(create)

    assert [created for _, created in results].count(True) == 1
    assert {key for key, _ in results} == {KEY}
    assert len(shared_jobs.list_jobs()) == 1


def test_threads_one_description_changes(shared_jobs):
    shared_jobs.create(new_record())
    report = JobDescription(job_name=NAME, status=JobStatus.COMPLETED)

    results = run_together(lambda _: shared_jobs.record_description(report)[1])

    assert results.count(True) == 1
    assert shared_jobs.get(NAME).status == JobStatus.COMPLETED


class RacedClient:
    """A client that lets another writer run just before its first request of ``operation``."""

    def __init__(self, client: Any, operation: str, other_writer: Callable[[], Any]) -> None:
        self._client = client
        self._operation = operation
        self._other_writer: Callable[[], Any] | None = other_writer

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._client, name)
        if name != self._operation:
            return attribute

        def call(**request: Any) -> Any:
            if self._other_writer is not None:
                other_writer, self._other_writer = self._other_writer, None
                other_writer()
            return attribute(**request)

        return call


def test_write_after_read_retried(jobs, client):
    jobs.create(new_record())
    other = DynamoJobStore(client, TABLE)
    raced = DynamoJobStore(
        RacedClient(client, "put_item", lambda: other.modify(NAME, increment_attempts)), TABLE
    )
    seen: list[int] = []

    def counting(stored: JobRecord) -> dict[str, Any]:
        seen.append(stored.submit_attempts)
        return increment_attempts(stored)

    updated = raced.modify(NAME, counting)

    assert seen == [0, 1]
    assert updated.submit_attempts == 2
    assert jobs.get(NAME).submit_attempts == 2
    assert jobs.get(NAME).version == 2


def test_description_race_one_change(jobs, client):
    jobs.create(new_record())
    report = JobDescription(job_name=NAME, status=JobStatus.FAILED, failure_reason="exit 1")
    other_changed: list[bool] = []
    other = DynamoJobStore(client, TABLE)
    raced = DynamoJobStore(
        RacedClient(
            client, "put_item", lambda: other_changed.append(other.record_description(report)[1])
        ),
        TABLE,
    )

    record, changed = raced.record_description(report)

    assert other_changed == [True]
    assert changed is False
    assert record.status == JobStatus.FAILED
    assert record.failure_reason == "exit 1"


def test_create_race_returns_winner(jobs, client):
    winner = new_record(inputs=["s3://acme-ml-raw/input/winner.csv"])
    raced = DynamoJobStore(
        RacedClient(client, "transact_write_items", lambda: jobs.create(winner)), TABLE
    )

    stored, created = raced.create(new_record(inputs=["s3://acme-ml-raw/input/loser.csv"]))

    assert created is False
    assert stored == winner


class RepeatedPutClient:
    """A client whose PutItem is sent twice, as botocore does when the first response is lost."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def put_item(self, **request: Any) -> Any:
        self._client.put_item(**request)
        return self._client.put_item(**request)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def test_repeated_put_counts_once(client):
    jobs = DynamoJobStore(RepeatedPutClient(client), TABLE)
    jobs.create(new_record())

    updated = jobs.modify(NAME, increment_attempts)

    assert updated.submit_attempts == 1
    assert jobs.get(NAME).submit_attempts == 1
    assert jobs.get(NAME).version == 1


def test_stale_version_not_written(jobs):
    jobs.create(new_record())
    stale = jobs.get(NAME)
    jobs.update(NAME, log_uri="s3://acme-logs/first")

    written = jobs._replace_if_version(
        stale.model_copy(update={"log_uri": "s3://acme-logs/stale", "version": 1}), 0
    )

    assert written is False
    assert jobs.get(NAME).log_uri == "s3://acme-logs/first"


# -- listing ------------------------------------------------------------------------------------


@pytest.fixture
def query_limits(client, monkeypatch) -> list[int]:
    """Force pages of two items and return the Limit of every Query the store sends."""
    monkeypatch.setattr(dynamodb, "QUERY_PAGE_SIZE", 2)
    limits: list[int] = []

    def remember(params: dict[str, Any], **_: Any) -> None:
        limits.append(params["Limit"])

    client.meta.events.register("provide-client-params.dynamodb.Query", remember)
    return limits


def create_at_minutes(jobs: DynamoJobStore, minutes: list[int]) -> list[str]:
    base = datetime(2024, 6, 4, 10, 0, tzinfo=UTC)
    names = []
    for minute in minutes:
        name = f"prepflow-minute-{minute:02d}"
        jobs.create(new_record(name, f"key-{minute}", created_at=base + timedelta(minutes=minute)))
        names.append(name)
    return names


def test_list_reads_only_needed_pages(jobs, query_limits):
    names = create_at_minutes(jobs, [1, 2, 3, 4, 5, 6, 7])

    listed = jobs.list_jobs(limit=5)

    assert [r.job_name for r in listed] == names[::-1][:5]
    assert query_limits == [2, 2, 1]


def test_list_pages_until_status_found(jobs, query_limits):
    names = create_at_minutes(jobs, [1, 2, 3, 4, 5, 6, 7])
    for name in (names[0], names[1], names[4]):
        jobs.transition(name, JobStatus.FAILED)

    listed = jobs.list_jobs(status=JobStatus.FAILED, limit=2)

    assert [r.job_name for r in listed] == [names[4], names[1]]
    assert len(query_limits) == 3


def test_list_pages_to_the_end(jobs, query_limits):
    names = create_at_minutes(jobs, [1, 2, 3, 4, 5])
    jobs.transition(names[0], JobStatus.COMPLETED)

    listed = jobs.list_jobs(status=JobStatus.COMPLETED, limit=10)

    assert [r.job_name for r in listed] == [names[0]]


def test_list_limit_zero_sends_nothing(jobs, query_limits):
    create_at_minutes(jobs, [1])

    assert jobs.list_jobs(limit=0) == []
    assert query_limits == []


# -- item size ----------------------------------------------------------------------------------


def test_oversized_record_rejected(jobs):
    inputs = [f"s3://acme-ml-raw/input/batch/{'x' * 200}-{index:05d}.csv" for index in range(2500)]
    record = new_record(inputs=inputs)

    with pytest.raises(JobStoreError) as caught:
        jobs.create(record)

    message = str(caught.value)
    assert NAME in message
    assert "inputs" in message
    assert "409,600" in message
    assert jobs.find(NAME) is None
    assert jobs.find_by_key(KEY) is None


def test_oversized_update_keeps_record(jobs):
    jobs.create(new_record())

    with pytest.raises(JobStoreError, match="log_tail"):
        jobs.update(NAME, log_tail="x" * 420_000)

    stored = jobs.get(NAME)
    assert stored.log_tail is None
    assert stored.version == 0


def test_long_idempotency_key_rejected(jobs):
    long_key = "manual:" + "a" * 64 + "->s3://acme-ml-processed/" + "b" * 2000

    with pytest.raises(JobStoreError, match=r"idempotency key .* too long") as caught:
        jobs.create(new_record(key=long_key))

    assert "2,048" in str(caught.value)
    assert jobs.find(NAME) is None
    assert jobs.find_by_key(long_key) is None


def test_large_record_under_limit_stored(jobs):
    record = new_record(log_tail="x" * 300_000)

    jobs.create(record)

    assert jobs.get(NAME).log_tail == record.log_tail


# -- AWS errors ---------------------------------------------------------------------------------


@pytest.fixture
def stubbed() -> Iterator[tuple[Stubber, DynamoJobStore, list[float]]]:
    """A store on a Stubber-backed client, and the delays it sleeps."""
    stub_client = boto3.client("dynamodb", region_name=REGION)
    sleeps: list[float] = []
    with Stubber(stub_client) as stubber:
        yield stubber, DynamoJobStore(stub_client, TABLE, sleep=sleeps.append), sleeps
        stubber.assert_no_pending_responses()


def test_throughput_exceeded_translated(stubbed):
    stubber, jobs, _ = stubbed
    stubber.add_client_error(
        "get_item",
        service_error_code="ProvisionedThroughputExceededException",
        service_message="The level of configured provisioned throughput for the table was exceeded",
        http_status_code=400,
    )

    with pytest.raises(JobStoreError) as caught:
        jobs.get(NAME)

    message = str(caught.value)
    assert TABLE in message
    assert "ProvisionedThroughputExceededException" in message
    assert "throttled" in message
    assert isinstance(caught.value.__cause__, ClientError)


def test_missing_table_stubbed(stubbed):
    stubber, jobs, _ = stubbed
    stubber.add_client_error(
        "get_item",
        service_error_code="ResourceNotFoundException",
        service_message="Requested resource not found",
        http_status_code=400,
    )

    with pytest.raises(JobStoreError) as caught:
        jobs.find(NAME)

    message = str(caught.value)
    assert f"table {TABLE!r} not found" in message
    assert "PREPFLOW_JOBS_TABLE" in message
    assert REGION in message
    assert isinstance(caught.value.__cause__, ClientError)


def test_missing_table_moto(moto_in_process):
    jobs = DynamoJobStore(boto3.client("dynamodb", region_name=REGION), "prepflow-absent-jobs")

    with pytest.raises(JobStoreError) as caught:
        jobs.create(new_record())

    message = str(caught.value)
    assert "'prepflow-absent-jobs' not found" in message
    assert "PREPFLOW_JOBS_TABLE" in message


def test_other_error_keeps_message(stubbed):
    stubber, jobs, _ = stubbed
    stubber.add_client_error(
        "query",
        service_error_code="ValidationException",
        service_message="The table does not have the specified index: jobs-by-created-at",
        http_status_code=400,
    )

    with pytest.raises(JobStoreError) as caught:
        jobs.list_jobs()

    assert "does not have the specified index" in str(caught.value)
    assert "ValidationException" in str(caught.value)


def transaction_conflict(stubber: Stubber) -> None:
    stubber.add_client_error(
        "transact_write_items",
        service_error_code="TransactionCanceledException",
        service_message="Transaction cancelled, please refer cancellation reasons for specific "
        "reasons [TransactionConflict, None]",
        http_status_code=400,
        modeled_fields={
            "Message": "Transaction cancelled",
            "CancellationReasons": [
                {"Code": "TransactionConflict", "Message": "Transaction is ongoing for the item"},
                {"Code": "None"},
            ],
        },
    )


def test_transaction_conflict_retried(stubbed):
    stubber, jobs, sleeps = stubbed
    transaction_conflict(stubber)
    stubber.add_response(
        "transact_write_items", {}, {"TransactItems": ANY, "ClientRequestToken": ANY}
    )

    record, created = jobs.create(new_record())

    assert created is True
    assert record.job_name == NAME
    assert len(sleeps) == 1
    assert 0 <= sleeps[0] <= dynamodb.TRANSACTION_BACKOFF_S * 2


def test_transaction_conflict_gives_up(stubbed):
    stubber, jobs, sleeps = stubbed
    for _ in range(dynamodb.TRANSACTION_ATTEMPTS):
        transaction_conflict(stubber)

    with pytest.raises(JobStoreError, match="TransactionConflict") as caught:
        jobs.create(new_record())

    assert len(sleeps) == dynamodb.TRANSACTION_ATTEMPTS - 1
    assert isinstance(caught.value.__cause__, ClientError)


def test_condition_failure_is_not_error(stubbed):
    stubber, jobs, _ = stubbed
    stubber.add_client_error(
        "transact_write_items",
        service_error_code="TransactionCanceledException",
        service_message="Transaction cancelled, please refer cancellation reasons for specific "
        "reasons [ConditionalCheckFailed, None]",
        http_status_code=400,
        modeled_fields={
            "Message": "Transaction cancelled",
            "CancellationReasons": [
                {"Code": "ConditionalCheckFailed", "Message": "The conditional request failed"},
                {"Code": "None"},
            ],
        },
    )

    assert jobs._insert_if_absent(new_record()) is False


def closed_port() -> int:
    """Return a port on 127.0.0.1 that nothing listens on (it was free a moment ago)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def test_connection_error_translated():
    unreachable = boto3.client(
        "dynamodb",
        region_name=REGION,
        endpoint_url=f"http://127.0.0.1:{closed_port()}",
        config=Config(retries={"max_attempts": 1}, connect_timeout=2),
    )
    jobs = DynamoJobStore(unreachable, TABLE)

    with pytest.raises(JobStoreError, match="check the network") as caught:
        jobs.get(NAME)

    assert isinstance(caught.value.__cause__, BotoCoreError)


# -- claims -------------------------------------------------------------------------------------


def claims_of(count: int) -> list[str]:
    return [f"s3://acme-ml-raw/input/part-{i}.csv#sequencer=0A" for i in range(count)]


def test_claim_items_written(client, jobs):
    jobs.create_claiming(new_record(key="batch:abc", claims=claims_of(2)))

    for claim in claims_of(2):
        item = raw_item(client, f"key#{claim}")
        assert item is not None
        assert item["job_name"]["S"] == NAME
        assert "kind" not in item


def test_claims_fill_one_transaction(jobs):
    most = dynamodb.MAX_TRANSACTION_ITEMS - 2

    result = jobs.create_claiming(new_record(key="batch:abc", claims=claims_of(most)))

    assert result.created is True


def test_too_many_claims_rejected(client, jobs):
    too_many = dynamodb.MAX_TRANSACTION_ITEMS - 1

    with pytest.raises(JobStoreError, match="PREPFLOW_BATCH_MAX_OBJECTS"):
        jobs.create_claiming(new_record(key="batch:abc", claims=claims_of(too_many)))

    assert raw_item(client, f"job#{NAME}") is None
