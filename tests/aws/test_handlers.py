"""The Lambda entry points, with local pieces on the orchestrator's side and moto for the rest.

Objects live in the local folder store and job records in SQLite. The SageMaker backend is a
fake that accepts each job name once, as SageMaker returns ResourceInUse to a second create,
and "runs" an accepted job by copying its manifest's objects to its output. SNS, SQS and
CloudWatch Logs are moto's, in-process. One test wires the real adapters on moto.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError
from botocore.stub import Stubber

from prepflow.aws import handlers
from prepflow.aws.handlers import (
    Runtime,
    build_runtime,
    handle_job_state,
    handle_trigger,
    job_state_handler,
    trigger_handler,
)
from prepflow.aws.logs import LOG_GROUP, log_tail
from prepflow.aws.notify import (
    MAX_SUBJECT_LENGTH,
    JobNotifier,
    subject,
)
from prepflow.errors import (
    ConfigurationError,
    EventError,
    JobError,
    JobExistsError,
    JobNotFoundError,
    JobSpecError,
    NotificationError,
    TriggerFailedError,
)
from prepflow.events import build_s3_notification
from prepflow.jobs.backend import JobBackend
from prepflow.jobs.spec import JobDescription, JobStatus, ProcessingJobSpec
from prepflow.jobs.template import StepTemplate
from prepflow.jobstore.base import JobRecord
from prepflow.jobstore.sqlite import SqliteJobStore
from prepflow.naming import readable_part
from prepflow.orchestrator import Orchestrator
from prepflow.settings import Settings, load_settings
from prepflow.storage.base import ObjectInfo, parse_s3_uri
from prepflow.storage.local import LocalObjectStore
from tests.aws.conftest import ACCOUNT, REGION, ROLE_ARN
from tests.helpers import load_case

RAW = "acme-ml-raw"
PROCESSED = "acme-ml-processed"
ARTIFACTS = "acme-ml-artifacts"
LOGS_BUCKET = "acme-ml-logs"
TOPIC_NAME = "prepflow-jobs"
TOPIC_ARN = f"arn:aws:sns:{REGION}:{ACCOUNT}:{TOPIC_NAME}"
CSV = b"id,name\n1,Ada\n2,Grace\n"


class FakeSageMaker(JobBackend):
    """Accepts each job name once; an accepted job copies its manifest's objects to its output.

    ``crash_before_accept`` and ``crash_after_accept`` make the next submissions raise before
    or after the job is accepted, as a Lambda that dies before CreateProcessingJob is sent, or
    between its response and recording the submission. Keys listed in ``rejected_keys`` get the
    ValidationException that SageMaker returns for a request it will never run.
    """

    def __init__(self, store: LocalObjectStore) -> None:
        self.store = store
        self.accepted: dict[str, ProcessingJobSpec] = {}
        self.attempts: list[str] = []
        self.crash_before_accept = 0
        self.crash_after_accept = 0
        self.rejected_keys: set[str] = set()

    def submit(self, spec: ProcessingJobSpec) -> None:
        self.attempts.append(spec.name)
        if self.crash_before_accept:
            self.crash_before_accept -= 1
            raise ConnectionResetError("connection reset before CreateProcessingJob was sent")
        if spec.name in self.accepted:
            raise JobExistsError(spec.name)
        if any(readable_part(key) in spec.name for key in self.rejected_keys):
            raise JobSpecError(f"invalid processing job request {spec.name!r}: rejected")
        self.accepted[spec.name] = spec
        self._run(spec)
        if self.crash_after_accept:
            self.crash_after_accept -= 1
            raise ConnectionResetError("connection reset after CreateProcessingJob succeeded")

    def describe(self, job_name: str) -> JobDescription:
        if job_name not in self.accepted:
            raise JobNotFoundError(job_name)
        return JobDescription(job_name=job_name, status=JobStatus.COMPLETED)

    def stop(self, job_name: str) -> None:
        if job_name not in self.accepted:
            raise JobNotFoundError(job_name)

    def _run(self, spec: ProcessingJobSpec) -> None:
        data = spec.input_named("data")
        assert data is not None
        prefix_uri, keys = self.store.read_manifest(*parse_s3_uri(data.s3_input.s3_uri))
        source_bucket, source_prefix = parse_s3_uri(prefix_uri)
        output = spec.processing_output_config.outputs[0].s3_output.s3_uri
        output_bucket, output_prefix = parse_s3_uri(output)
        for key in keys:
            body = self.store.get_object(source_bucket, source_prefix + key)
            self.store.put_object(output_bucket, output_prefix + key, body)


@dataclass
class LambdaContext:
    """The attributes of Lambda's context object that Powertools reads."""

    function_name: str = "prepflow-trigger"
    memory_limit_in_mb: int = 256
    invoked_function_arn: str = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:prepflow-trigger"
    aws_request_id: str = "00000000-0000-4000-8000-00000000abcd"
    remaining_ms: int = 600_000

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


@dataclass
class Deployment:
    runtime: Runtime
    store: LocalObjectStore
    jobs: SqliteJobStore
    backend: FakeSageMaker
    sqs: Any
    queue_url: str
    logs: Any

    def put(self, key: str, body: bytes = CSV) -> ObjectInfo:
        return self.store.put_object(RAW, key, body)

    def notification(self, info: ObjectInfo) -> dict[str, Any]:
        """Return the S3 notification that S3 would send for ``info``."""
        return build_s3_notification(
            bucket=info.bucket,
            key=info.key,
            size=info.size,
            etag=info.etag,
            sequencer=info.sequencer or "",
            region=REGION,
            version_id=info.version_id,
        )

    def published(self) -> list[dict[str, Any]]:
        """Return the SNS notifications delivered to the test queue so far, oldest first."""
        messages = []
        while True:
            batch = self.sqs.receive_message(
                QueueUrl=self.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0
            ).get("Messages", [])
            if not batch:
                return messages
            for message in batch:
                messages.append(json.loads(message["Body"]))
                self.sqs.delete_message(
                    QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"]
                )


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "home": tmp_path / "home",
        "raw_bucket": RAW,
        "processed_bucket": PROCESSED,
        "model_artifacts_bucket": ARTIFACTS,
        "logs_bucket": LOGS_BUCKET,
        "feature_store_bucket": "acme-ml-features",
        "region": REGION,
        "sagemaker_role_arn": ROLE_ARN,
        "topic_arn": TOPIC_ARN,
    }
    values.update(overrides)
    return load_settings(**values)


def make_deployment(tmp_path: Path, store: LocalObjectStore | None = None) -> Deployment:
    settings = make_settings(tmp_path)
    store = store or LocalObjectStore(tmp_path / "home", region=REGION)
    jobs = SqliteJobStore(tmp_path / "jobs.db")
    backend = FakeSageMaker(store)
    orchestrator = Orchestrator(
        settings=settings, store=store, backend=backend, jobs=jobs, step=StepTemplate.built_in()
    )

    sns = boto3.client("sns", region_name=REGION)
    sqs = boto3.client("sqs", region_name=REGION)
    topic_arn = sns.create_topic(Name=TOPIC_NAME)["TopicArn"]
    queue_url = sqs.create_queue(QueueName="notifications")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn)
    logs = boto3.client("logs", region_name=REGION)

    runtime = Runtime(
        settings=settings,
        orchestrator=orchestrator,
        jobs=jobs,
        backend=backend,
        notifier=JobNotifier(sns, topic_arn),
        logs=logs,
    )
    return Deployment(runtime, store, jobs, backend, sqs, queue_url, logs)


@pytest.fixture
def deployment(tmp_path: Path, moto_in_process: None) -> Deployment:
    return make_deployment(tmp_path)


@pytest.fixture(autouse=True)
def fresh_metrics() -> Iterator[None]:
    """Start and end each test with no metrics waiting to be flushed."""
    handlers.metrics.clear_metrics()
    yield
    handlers.metrics.clear_metrics()


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    """Collect what Powertools' Logger writes, in place of the process's standard output."""
    buffer = io.StringIO()
    handler = handlers.logger.registered_handler
    previous = handler.setStream(buffer)
    try:
        yield buffer
    finally:
        handler.setStream(previous)


def sqs_record(message_id: str, body: dict[str, Any] | str) -> dict[str, Any]:
    return {
        "messageId": message_id,
        "receiptHandle": f"receipt-{message_id}",
        "body": body if isinstance(body, str) else json.dumps(body),
        "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "1717496100123"},
        "messageAttributes": {},
        "md5OfBody": "0" * 32,
        "eventSource": "aws:sqs",
        "eventSourceARN": f"arn:aws:sqs:{REGION}:{ACCOUNT}:raw-input-events",
        "awsRegion": REGION,
    }


def state_event(name: str, status: str, **detail: Any) -> dict[str, Any]:
    """Return an EventBridge "SageMaker Processing Job State Change" event for one job."""
    created = datetime(2024, 6, 4, 10, 15, tzinfo=UTC)
    fields: dict[str, Any] = {
        "ProcessingJobName": name,
        "ProcessingJobArn": f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:processing-job/{name}",
        "ProcessingJobStatus": status,
        "CreationTime": int(created.timestamp() * 1000),
        "ProcessingStartTime": int((created + timedelta(minutes=2)).timestamp() * 1000),
        "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
    }
    if status != "InProgress":
        fields["ProcessingEndTime"] = int((created + timedelta(minutes=9)).timestamp() * 1000)
    fields.update(detail)
    return {
        "version": "0",
        "id": "7d2c4bd8-2a5e-4b8e-a1f4-0e9c36a1f2b7",
        "detail-type": "SageMaker Processing Job State Change",
        "source": "aws.sagemaker",
        "account": ACCOUNT,
        "time": "2024-06-04T10:24:00Z",
        "region": REGION,
        "resources": [fields["ProcessingJobArn"]],
        "detail": fields,
    }


def start_job(deployment: Deployment, key: str = "input/orders.csv") -> str:
    """Upload ``key``, deliver its S3 notification, and return the started job's name."""
    info = deployment.put(key)
    summary = handle_trigger(deployment.notification(info), deployment.runtime)
    assert len(summary["started"]) == 1
    return str(summary["started"][0])


def write_log(deployment: Deployment, stream: str, lines: list[str]) -> None:
    logs = deployment.logs
    with contextlib.suppress(logs.exceptions.ResourceAlreadyExistsException):
        logs.create_log_group(logGroupName=LOG_GROUP)
    logs.create_log_stream(logGroupName=LOG_GROUP, logStreamName=stream)
    # CloudWatch Logs rejects events older than 14 days, so the lines are from just now.
    now = int(datetime.now(UTC).timestamp() * 1000) - len(lines)
    events = [{"timestamp": now + i, "message": line} for i, line in enumerate(lines)]
    logs.put_log_events(logGroupName=LOG_GROUP, logStreamName=stream, logEvents=events)


def raw_objects(deployment: Deployment) -> dict[str, bytes]:
    return {
        info.key: deployment.store.get_object(RAW, info.key)
        for info in deployment.store.list_objects(RAW)
    }


# -- SQS batches -------------------------------------------------------------------------------


def test_sqs_batch_reports_malformed_message_only(deployment: Deployment) -> None:
    # Message 1 is an S3 event, message 2 the same event inside SNS, message 3 is not JSON.
    deployment.put("input/weekly summary.csv")
    event = load_case("H13-event-sqs.json")

    response = handle_trigger(event, deployment.runtime)

    assert response == {"batchItemFailures": [{"itemIdentifier": event["Records"][2]["messageId"]}]}
    assert len(deployment.backend.accepted) == 1


def test_sqs_batch_reports_missing_object_only(deployment: Deployment) -> None:
    first = deployment.put("input/a.csv")
    third = deployment.put("input/c.csv")
    missing = ObjectInfo(RAW, "input/b.csv", len(CSV), first.etag, first.last_modified, "0B")
    event = {
        "Records": [
            sqs_record("m-1", deployment.notification(first)),
            sqs_record("m-2", deployment.notification(missing)),
            sqs_record("m-3", deployment.notification(third)),
        ]
    }

    response = handle_trigger(event, deployment.runtime)

    assert response == {"batchItemFailures": [{"itemIdentifier": "m-2"}]}
    names = list(deployment.backend.accepted)
    assert len(names) == 2
    assert all("-b-" not in name for name in names)


def test_sqs_batch_acknowledges_rejected_request(deployment: Deployment) -> None:
    # SageMaker rejects the request of a.csv for good; b.csv is missing and may appear.
    deployment.backend.rejected_keys.add("input/a.csv")
    rejected = deployment.put("input/a.csv")
    missing = ObjectInfo(RAW, "input/b.csv", len(CSV), rejected.etag, rejected.last_modified, "0B")
    event = {
        "Records": [
            sqs_record("m-1", deployment.notification(rejected)),
            sqs_record("m-2", deployment.notification(missing)),
        ]
    }

    response = handle_trigger(event, deployment.runtime)

    assert response == {"batchItemFailures": [{"itemIdentifier": "m-2"}]}
    (record,) = deployment.jobs.list_jobs()
    assert record.status == JobStatus.FAILED


def test_sqs_batch_all_failed_raises(deployment: Deployment) -> None:
    event = {"Records": [sqs_record("m-1", "not json"), sqs_record("m-2", "{}")]}

    with pytest.raises(BatchProcessingError):
        handle_trigger(event, deployment.runtime)


# -- direct events -----------------------------------------------------------------------------


def test_direct_event_deleted_object_raises(deployment: Deployment) -> None:
    # The object was deleted before its event was handled: the invocation must fail.
    event = load_case("H26-event.json")

    with pytest.raises(TriggerFailedError) as raised:
        handle_trigger(event, deployment.runtime)

    assert "s3://acme-ml-raw/input/already_deleted.csv" in str(raised.value)
    assert "not found" in str(raised.value)
    assert deployment.backend.attempts == []
    assert deployment.jobs.list_jobs() == []


def test_direct_event_names_only_failed_record(deployment: Deployment) -> None:
    # Three records, and the second object is missing: the other two still start jobs.
    deployment.put("input/orders_01.csv")
    deployment.put("input/orders_03.csv")

    with pytest.raises(TriggerFailedError) as raised:
        handle_trigger(load_case("H06-event.json"), deployment.runtime)

    assert len(raised.value.failures) == 1
    assert raised.value.failures[0].subject == "s3://acme-ml-raw/input/orders_02.csv"
    assert len(deployment.backend.accepted) == 2


def test_direct_event_returns_summary(deployment: Deployment) -> None:
    info = deployment.put("input/orders.csv")

    first = handle_trigger(deployment.notification(info), deployment.runtime)
    second = handle_trigger(deployment.notification(info), deployment.runtime)

    assert len(first["started"]) == 1
    assert first["duplicate"] == []
    assert second["started"] == []
    assert second["duplicate"] == first["started"]


def test_unknown_event_shape_raises(deployment: Deployment) -> None:
    with pytest.raises(EventError):
        handle_trigger({"hello": "world"}, deployment.runtime)


# -- retries after a crash ---------------------------------------------------------------------


def test_retries_after_crash_start_one_job(deployment: Deployment) -> None:
    case = load_case("H25-scenario.json")
    event = case["event"]
    deployment.put("input/orders_25.csv")
    before = raw_objects(deployment)
    deployment.backend.crash_after_accept = 1

    with pytest.raises(ConnectionResetError):
        handle_trigger(event, deployment.runtime)
    retries = [handle_trigger(event, deployment.runtime) for _ in case["deliveries"][1:]]

    assert len(deployment.backend.accepted) == 1
    (name,) = deployment.backend.accepted
    assert [retry["duplicate"] for retry in retries] == [[name], [name]]
    assert deployment.jobs.get(name).submitted_at is not None
    assert raw_objects(deployment) == before
    outputs = list(deployment.store.list_objects(PROCESSED))
    assert [info.key for info in outputs] == [f"output/{name}/orders_25.csv"]
    assert deployment.store.get_object(PROCESSED, outputs[0].key) == CSV


# -- manual requests ---------------------------------------------------------------------------


def test_manual_request_response(deployment: Deployment) -> None:
    deployment.put("input/a.csv")
    uri = f"s3://{RAW}/input/a.csv"

    response = handle_trigger({"input_data_path": uri}, deployment.runtime)

    assert response["statusCode"] == 200
    body = json.loads(response["body"])
    assert set(body) == {
        "message",
        "job_name",
        "job_arn",
        "input_path",
        "output_path",
        "console_url",
    }
    name = body["job_name"]
    assert list(deployment.backend.accepted) == [name]
    assert body["message"] == "processing job started"
    assert body["job_arn"] == f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:processing-job/{name}"
    assert body["input_path"] == uri
    assert body["output_path"] == f"s3://{PROCESSED}/output/{name}/"
    assert body["console_url"] == (
        f"https://{REGION}.console.aws.amazon.com/sagemaker/home?region={REGION}"
        f"#/processing-jobs/{name}"
    )


def test_manual_request_repeated_finds_job(deployment: Deployment) -> None:
    deployment.put("input/a.csv")
    request = {"input_data_path": f"s3://{RAW}/input/a.csv"}

    first = json.loads(handle_trigger(request, deployment.runtime)["body"])
    second = json.loads(handle_trigger(request, deployment.runtime)["body"])

    assert second["job_name"] == first["job_name"]
    assert second["message"] == "processing job already started for this request"
    assert len(deployment.backend.accepted) == 1


def test_manual_request_after_rejection_raises(deployment: Deployment) -> None:
    deployment.put("input/a.csv")
    deployment.backend.rejected_keys.add("input/a.csv")
    request = {"input_data_path": f"s3://{RAW}/input/a.csv"}

    with pytest.raises(TriggerFailedError):
        handle_trigger(request, deployment.runtime)
    with pytest.raises(TriggerFailedError) as raised:
        handle_trigger(request, deployment.runtime)

    assert "job already Failed" in str(raised.value)
    assert deployment.backend.accepted == {}


def test_manual_request_outside_raw_bucket_rejected(deployment: Deployment) -> None:
    deployment.store.put_object("someone-elses-bucket", "data.csv", CSV)
    request = {"input_data_path": "s3://someone-elses-bucket/data.csv"}

    with pytest.raises(TriggerFailedError) as raised:
        handle_trigger(request, deployment.runtime)

    assert "outside the raw-data bucket" in str(raised.value)
    assert f"s3://{RAW}/" in str(raised.value)
    assert deployment.backend.attempts == []


# -- scheduled reconcile -----------------------------------------------------------------------


def test_reconcile_starts_only_missing_jobs(deployment: Deployment) -> None:
    existing = start_job(deployment, "input/a.csv")
    deployment.put("input/b.csv")
    deployment.put("input/c.csv")
    request = {"reconcile": True, "min_age_minutes": 0}

    first = handle_trigger(request, deployment.runtime)
    second = handle_trigger(request, deployment.runtime)

    assert len(first["started"]) == 2
    assert existing not in first["started"]
    assert first["with_job"] == 1
    assert second["started"] == []
    assert second["with_job"] == 3
    assert len(deployment.backend.accepted) == 3


def test_reconcile_submits_unsubmitted_record(deployment: Deployment) -> None:
    # The only delivery crashed after recording the job and before the backend accepted it.
    info = deployment.put("input/a.csv")
    deployment.backend.crash_before_accept = 1
    with pytest.raises(ConnectionResetError):
        handle_trigger(deployment.notification(info), deployment.runtime)

    summary = handle_trigger({"reconcile": True, "min_age_minutes": 0}, deployment.runtime)

    (record,) = deployment.jobs.list_jobs()
    assert summary["started"] == [record.job_name]
    assert record.submitted_at is not None
    assert list(deployment.backend.accepted) == [record.job_name]


def test_reconcile_skips_other_objects(deployment: Deployment) -> None:
    deployment.put("input/a.csv")
    deployment.put("input/picture.png")
    deployment.put("input/empty.csv", b"")

    summary = handle_trigger({"reconcile": True, "min_age_minutes": 0}, deployment.runtime)

    assert len(summary["started"]) == 1
    assert summary["skipped"] == 2


def test_reconcile_stops_at_max_jobs(deployment: Deployment) -> None:
    for name in ("a", "b", "c"):
        deployment.put(f"input/{name}.csv")
    request = {"reconcile": True, "min_age_minutes": 0, "max_jobs": 2}

    first = handle_trigger(request, deployment.runtime)
    second = handle_trigger(request, deployment.runtime)

    assert len(first["started"]) == 2
    assert first["truncated"] is True
    assert len(second["started"]) == 1
    assert second["truncated"] is False


def test_reconcile_stops_before_timeout(deployment: Deployment) -> None:
    deployment.put("input/a.csv")
    request = {"reconcile": True, "min_age_minutes": 0}

    summary = handle_trigger(request, deployment.runtime, LambdaContext(remaining_ms=20_000))

    assert summary["started"] == []
    assert summary["truncated"] is True


def test_reconcile_prefix_limits_listing(deployment: Deployment) -> None:
    deployment.put("input/2024/a.csv")
    deployment.put("input/2025/b.csv")
    request = {"reconcile": True, "min_age_minutes": 0, "prefix": "input/2025/"}

    summary = handle_trigger(request, deployment.runtime)

    (name,) = summary["started"]
    assert "-b-" in name


def test_scheduled_event_leaves_recent_objects(deployment: Deployment) -> None:
    deployment.put("input/a.csv")
    event = {
        "version": "0",
        "id": "53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa",
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": ACCOUNT,
        "time": "2024-06-04T10:30:00Z",
        "region": REGION,
        "resources": [f"arn:aws:events:{REGION}:{ACCOUNT}:rule/prepflow-reconcile"],
        "detail": {},
    }

    summary = handle_trigger(event, deployment.runtime)

    assert summary["started"] == []
    assert summary["too_recent"] == 1
    assert deployment.backend.attempts == []


@pytest.mark.parametrize(
    ("request_fields", "expected"),
    [
        ({"prefix": "output/"}, "outside the input prefix"),
        ({"prefix": "input/../secret/"}, "invalid"),
        ({"max_jobs": 0}, "'max_jobs'"),
        ({"max_jobs": "10"}, "'max_jobs'"),
        ({"min_age_minutes": -1}, "'min_age_minutes'"),
        ({"bucket": "other"}, "unknown fields ['bucket']"),
    ],
)
def test_reconcile_request_rejected(
    deployment: Deployment, request_fields: dict[str, Any], expected: str
) -> None:
    with pytest.raises(EventError) as raised:
        handle_trigger({"reconcile": True, **request_fields}, deployment.runtime)

    assert expected in str(raised.value)


class UnversionedStore(LocalObjectStore):
    """The local store, responding as an unversioned S3 bucket: no version id, no sequencer."""

    def head_object(self, bucket: str, key: str) -> ObjectInfo:
        return _without_identity(super().head_object(bucket, key))

    def list_objects(self, bucket: str, prefix: str = "") -> Iterator[ObjectInfo]:
        return (_without_identity(info) for info in super().list_objects(bucket, prefix))


def _without_identity(info: ObjectInfo) -> ObjectInfo:
    return ObjectInfo(
        bucket=info.bucket,
        key=info.key,
        size=info.size,
        etag=f'"{info.etag}"',
        last_modified=info.last_modified,
    )


def test_reconcile_unversioned_matches_by_etag(tmp_path: Path, moto_in_process: None) -> None:
    store = UnversionedStore(tmp_path / "home", region=REGION)
    deployment = make_deployment(tmp_path, store)
    # The event path: S3's notification carries a sequencer, which no listing returns.
    info = LocalObjectStore.head_object(store, RAW, deployment.put("input/a.csv").key)
    handle_trigger(deployment.notification(info), deployment.runtime)
    deployment.put("input/b.csv")
    request = {"reconcile": True, "min_age_minutes": 0}

    first = handle_trigger(request, deployment.runtime)
    second = handle_trigger(request, deployment.runtime)

    assert len(first["started"]) == 1
    assert "-b-" in first["started"][0]
    assert first["with_job"] == 1
    assert second["started"] == []
    assert second["with_job"] == 2
    assert len(deployment.backend.accepted) == 2


def test_reconcile_unversioned_beyond_record_limit(
    tmp_path: Path, moto_in_process: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = UnversionedStore(tmp_path / "home", region=REGION)
    deployment = make_deployment(tmp_path, store)
    start_job(deployment, "input/a.csv")
    deployment.put("input/b.csv")
    monkeypatch.setattr(handlers, "RECONCILE_RECORD_LIMIT", 1)

    summary = handle_trigger({"reconcile": True, "min_age_minutes": 0}, deployment.runtime)

    assert summary["started"] == []
    assert summary["with_job"] == 1
    assert summary["undecided"] == 1


# -- job-state events --------------------------------------------------------------------------


def test_state_events_out_of_order(deployment: Deployment) -> None:
    name = start_job(deployment)

    completed = handle_job_state(state_event(name, "Completed"), deployment.runtime)
    late = handle_job_state(state_event(name, "InProgress"), deployment.runtime)
    repeated = handle_job_state(state_event(name, "Completed"), deployment.runtime)

    assert completed["action"] == "notified"
    assert late["action"] == "unchanged"
    assert repeated["action"] == "unchanged"
    assert deployment.jobs.get(name).status == JobStatus.COMPLETED
    messages = deployment.published()
    assert len(messages) == 1
    assert messages[0]["Subject"] == f"prepflow job Completed: {name}"


def test_completed_message_fields(deployment: Deployment) -> None:
    name = start_job(deployment)

    handle_job_state(state_event(name, "Completed"), deployment.runtime)

    (notification,) = deployment.published()
    message = json.loads(notification["Message"])
    assert message["job_name"] == name
    assert message["status"] == "Completed"
    assert message["failure_reason"] is None
    assert message["inputs"] == [f"s3://{RAW}/input/orders.csv"]
    assert message["outputs"] == [f"s3://{PROCESSED}/output/{name}/"]
    assert message["report"] == f"s3://{LOGS_BUCKET}/reports/{name}/report.html"
    assert message["console_url"].endswith(f"#/processing-jobs/{name}")
    assert message["ended_at"] == "2024-06-04T10:24:00+00:00"
    assert notification["MessageAttributes"]["status"]["Value"] == "Completed"


def test_failed_event_stores_log_tail(deployment: Deployment) -> None:
    name = start_job(deployment)
    lines = [f"line {i}" for i in range(80)] + ["ValueError: column 'id' is missing"]
    write_log(deployment, f"{name}/algo-1-1717496100", lines)
    event = state_event(name, "Failed", FailureReason="AlgorithmError: exit code: 1")

    handle_job_state(event, deployment.runtime)

    record = deployment.jobs.get(name)
    assert record.status == JobStatus.FAILED
    assert record.failure_reason == "AlgorithmError: exit code: 1"
    assert record.log_tail is not None
    assert record.log_tail.splitlines() == lines[-50:]
    (notification,) = deployment.published()
    message = json.loads(notification["Message"])
    assert message["failure_reason"] == "AlgorithmError: exit code: 1"
    assert message["log_tail"] == record.log_tail
    assert message["report"] is None


def test_stopped_event_names_runtime_limit(deployment: Deployment) -> None:
    # A job stopped when its runtime reached MaxRuntimeInSeconds, and no log group exists.
    name = start_job(deployment)
    detail = load_case("H24-describe.json")[1]
    event = state_event(
        name,
        "Stopped",
        StoppingCondition=detail["StoppingCondition"],
        ProcessingStartTime=1717496100000,
        ProcessingEndTime=1717496100000 + 3600 * 1000,
    )

    handle_job_state(event, deployment.runtime)

    record = deployment.jobs.get(name)
    assert record.status == JobStatus.STOPPED
    assert record.failure_reason is not None
    assert "runtime limit" in record.failure_reason
    assert record.log_tail is None
    assert len(deployment.published()) == 1


def test_stopping_event_publishes_nothing(deployment: Deployment) -> None:
    name = start_job(deployment)

    result = handle_job_state(state_event(name, "Stopping"), deployment.runtime)

    assert result["action"] == "recorded"
    assert deployment.jobs.get(name).status == JobStatus.STOPPING
    assert deployment.published() == []


def test_foreign_job_skipped(deployment: Deployment) -> None:
    name = start_job(deployment)

    results = [
        handle_job_state(state_event("other-app-orders-1", "Failed"), deployment.runtime),
        handle_job_state(state_event("prepflowx-orders-1", "Failed"), deployment.runtime),
    ]

    assert [result["action"] for result in results] == ["ignored", "ignored"]
    assert deployment.jobs.get(name).status == JobStatus.IN_PROGRESS
    assert deployment.published() == []


def test_unknown_job_skipped(deployment: Deployment) -> None:
    result = handle_job_state(
        state_event("prepflow-orders-000000000000", "Completed"), deployment.runtime
    )

    assert result["action"] == "unknown job"
    assert deployment.published() == []


def test_state_handler_rejects_other_events(deployment: Deployment) -> None:
    event = {**state_event("prepflow-a-1", "Completed"), "detail-type": "Object Created"}

    with pytest.raises(EventError):
        handle_job_state(event, deployment.runtime)


def test_state_handler_without_topic_raises(deployment: Deployment) -> None:
    name = start_job(deployment)
    deployment.runtime.notifier = None

    with pytest.raises(ConfigurationError):
        handle_job_state(state_event(name, "Completed"), deployment.runtime)

    assert deployment.jobs.get(name).status == JobStatus.IN_PROGRESS


def test_publish_failure_raises_with_cause(deployment: Deployment) -> None:
    name = start_job(deployment)
    sns = boto3.client("sns", region_name=REGION)
    sns.delete_topic(TopicArn=TOPIC_ARN)

    with pytest.raises(NotificationError) as raised:
        handle_job_state(state_event(name, "Completed"), deployment.runtime)

    assert TOPIC_ARN in str(raised.value)
    assert raised.value.__cause__ is not None


def test_publish_retried_after_failure(deployment: Deployment) -> None:
    name = start_job(deployment)
    sns = boto3.client("sns", region_name=REGION)
    sns.delete_topic(TopicArn=TOPIC_ARN)
    with pytest.raises(NotificationError):
        handle_job_state(state_event(name, "Completed"), deployment.runtime)
    assert deployment.jobs.get(name).notified_at is None
    # The topic is back (same name, same ARN): EventBridge's retry of the event announces it.
    topic = sns.create_topic(Name=TOPIC_NAME)["TopicArn"]
    queue_arn = deployment.sqs.get_queue_attributes(
        QueueUrl=deployment.queue_url, AttributeNames=["QueueArn"]
    )["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)

    first = handle_job_state(state_event(name, "Completed"), deployment.runtime)
    second = handle_job_state(state_event(name, "Completed"), deployment.runtime)

    assert first["action"] == "notified"
    assert second["action"] == "unchanged"
    statuses = [json.loads(n["Message"])["status"] for n in deployment.published()]
    assert statuses == ["Completed"]
    assert deployment.jobs.get(name).notified_at is not None


def test_rejected_request_announced_once(deployment: Deployment) -> None:
    # SageMaker never runs a rejected request, so no state-change event will announce it.
    deployment.backend.rejected_keys.add("input/a.csv")
    info = deployment.put("input/a.csv")
    event = {"Records": [sqs_record("m-1", deployment.notification(info))]}

    handle_trigger(event, deployment.runtime)
    handle_trigger(event, deployment.runtime)

    (notification,) = deployment.published()
    message = json.loads(notification["Message"])
    assert message["status"] == "Failed"
    assert "rejected" in message["failure_reason"]


# -- entry points: JSON logs and EMF metrics ---------------------------------------------------


def test_trigger_handler_logs_json_with_keys(
    deployment: Deployment,
    json_logs: io.StringIO,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(handlers, "_RUNTIME", deployment.runtime)
    info = deployment.put("input/sales report.csv")

    trigger_handler(deployment.notification(info), LambdaContext())

    lines = [json.loads(line) for line in json_logs.getvalue().splitlines()]
    # The orchestrator logs through the stdlib; its lines carry the handler's keys.
    started = [line for line in lines if line["message"].startswith("started job ")]
    assert len(started) == 1
    assert started[0]["object_key"] == "input/sales report.csv"
    assert started[0]["bucket"] == RAW
    assert started[0]["function_request_id"] == LambdaContext.aws_request_id
    emf = emf_documents(capsys.readouterr().out)
    assert emf["JobsStarted"] == [1.0]


def test_job_state_handler_counts_failures(
    deployment: Deployment,
    json_logs: io.StringIO,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(handlers, "_RUNTIME", deployment.runtime)
    name = start_job(deployment)
    handlers.metrics.clear_metrics()
    event = state_event(name, "Failed", FailureReason="AlgorithmError: exit code: 1")

    job_state_handler(event, LambdaContext(function_name="prepflow-job-state"))
    job_state_handler(event, LambdaContext(function_name="prepflow-job-state"))

    lines = [json.loads(line) for line in json_logs.getvalue().splitlines()]
    assert {line["job_name"] for line in lines if "job_name" in line} == {name}
    emf = emf_documents(capsys.readouterr().out)
    assert emf["JobsFailed"] == [1.0]
    assert emf["DuplicateEvents"] == [1.0]
    assert len(deployment.published()) == 1


def emf_documents(output: str) -> dict[str, list[float]]:
    """Return every metric in the EMF documents of ``output``, with its values in order."""
    values: dict[str, list[float]] = {}
    for line in output.splitlines():
        document = json.loads(line)
        if "_aws" not in document:
            continue
        assert document["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "prepflow"
        for metric in document["_aws"]["CloudWatchMetrics"][0]["Metrics"]:
            value = document[metric["Name"]]
            values.setdefault(metric["Name"], []).extend(
                value if isinstance(value, list) else [value]
            )
    return values


# -- the real adapters on moto -----------------------------------------------------------------


def test_build_runtime_requires_role(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, sagemaker_role_arn=None)

    with pytest.raises(ConfigurationError) as raised:
        build_runtime(settings)

    assert "SAGEMAKER_ROLE_ARN" in str(raised.value)


def test_build_runtime_on_moto_starts_one_job(tmp_path: Path, moto_in_process: None) -> None:
    from prepflow.aws.clients import aws_clients
    from prepflow.aws.dynamodb import table_definition

    # The reference's set-up: the prebuilt scikit-learn image runs a script from S3.
    script_uri = f"s3://{ARTIFACTS}/scripts/preprocessing_script.py"
    settings = make_settings(tmp_path, step_script_uri=script_uri)
    runtime = build_runtime(settings, aws_clients(settings))
    s3 = boto3.client("s3", region_name=REGION)
    for bucket in (RAW, PROCESSED, ARTIFACTS, LOGS_BUCKET):
        s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    boto3.client("dynamodb", region_name=REGION).create_table(
        **table_definition(settings.table_name)
    )
    s3.put_object(Bucket=RAW, Key="input/a b.csv", Body=CSV)
    event = {
        "Records": [
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "awsRegion": REGION,
                "eventName": "ObjectCreated:Put",
                "s3": {
                    "bucket": {"name": RAW},
                    "object": {"key": "input/a+b.csv", "size": len(CSV), "sequencer": "0A1"},
                },
            }
        ]
    }

    first = handle_trigger(event, runtime)
    second = handle_trigger(event, runtime)

    (name,) = first["started"]
    assert second["duplicate"] == [name]
    sagemaker = boto3.client("sagemaker", region_name=REGION)
    jobs = sagemaker.list_processing_jobs()["ProcessingJobSummaries"]
    assert [job["ProcessingJobName"] for job in jobs] == [name]
    described = sagemaker.describe_processing_job(ProcessingJobName=name)
    assert described["AppSpecification"]["ImageUri"] == runtime.settings.image_uri
    assert "sagemaker-scikit-learn" in runtime.settings.image_uri
    manifest_uri = described["ProcessingInputs"][0]["S3Input"]["S3Uri"]
    bucket, key = parse_s3_uri(manifest_uri)
    manifest = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    assert manifest == [{"prefix": f"s3://{RAW}/input/"}, "a b.csv"]
    assert runtime.jobs.get(name).submitted_at is not None
    code = described["ProcessingInputs"][1]["S3Input"]["S3Uri"]
    assert code == f"s3://{ARTIFACTS}/scripts/"
    assert described["AppSpecification"]["ContainerEntrypoint"] == [
        "python3",
        "/opt/ml/processing/input/code/preprocessing_script.py",
    ]


def test_build_runtime_requires_image_or_script(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)

    with pytest.raises(ConfigurationError) as raised:
        build_runtime(settings)

    assert "PROCESSING_IMAGE_URI" in str(raised.value)
    assert "PREPFLOW_STEP_SCRIPT_URI" in str(raised.value)


# -- CloudWatch Logs tail ----------------------------------------------------------------------


def test_log_tail_last_lines(deployment: Deployment) -> None:
    write_log(deployment, "job-1/algo-1-1717496100", [f"line {i}" for i in range(30)])

    tail = log_tail(deployment.logs, "job-1", lines=5)

    assert tail == "line 25\nline 26\nline 27\nline 28\nline 29"


def test_log_tail_labels_streams(deployment: Deployment) -> None:
    write_log(deployment, "job-1/algo-1-1717496100", ["one"])
    write_log(deployment, "job-1/algo-2-1717496100", ["two"])
    write_log(deployment, "job-10/algo-1-1717496100", ["another job"])

    tail = log_tail(deployment.logs, "job-1")

    assert tail is not None
    assert sorted(tail.splitlines()) == ["[algo-1-1717496100] one", "[algo-2-1717496100] two"]


def test_log_tail_cut_to_max_chars(deployment: Deployment) -> None:
    write_log(deployment, "job-1/algo-1-1717496100", ["a" * 100, "b" * 100])

    tail = log_tail(deployment.logs, "job-1", max_chars=50)

    assert tail == "b" * 50


def test_log_tail_missing_group_or_stream(deployment: Deployment) -> None:
    assert log_tail(deployment.logs, "job-1") is None
    write_log(deployment, "job-2/algo-1-1717496100", ["line"])
    assert log_tail(deployment.logs, "job-1") is None


def test_log_tail_access_denied_raises() -> None:
    client = boto3.client("logs", region_name=REGION)
    with Stubber(client) as stubber:
        stubber.add_client_error(
            "describe_log_streams",
            service_error_code="AccessDeniedException",
            service_message="User is not authorized to perform: logs:DescribeLogStreams",
            http_status_code=400,
        )
        with pytest.raises(JobError) as raised:
            log_tail(client, "job-1")

    assert "logs:DescribeLogStreams" in str(raised.value)
    assert raised.value.__cause__ is not None


# -- SNS notifier ------------------------------------------------------------------------------


def test_subject_names_status_and_job() -> None:
    record = JobRecord(job_name="p" * 63, idempotency_key="k", status=JobStatus.FAILED)

    assert subject(record) == f"prepflow job Failed: {'p' * 63}"


def test_subject_within_sns_limit() -> None:
    record = JobRecord(job_name="job-\n" + "p" * 120, idempotency_key="k")

    text = subject(record)

    assert len(text) < 100
    assert len(text) == MAX_SUBJECT_LENGTH
    assert "\n" not in text


def test_notifier_rejects_bad_topic_arn() -> None:
    with pytest.raises(ConfigurationError):
        JobNotifier(boto3.client("sns", region_name=REGION), "prepflow-jobs")
