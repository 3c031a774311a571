"""The orchestrator when SageMaker turns a submission down: capacity, throttling, validation.

The orchestrator runs with the SageMaker backend on a Stubber-backed client, a SQLite job
store and the local folder store. Every SageMaker call is recorded, so a test can assert
exactly which operations ran. The Stubber raises on any call without a queued response.
"""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from prepflow.aws.sagemaker import BACKOFF_BASE_SECONDS, SageMakerBackend
from prepflow.jobs.spec import JobStatus
from prepflow.jobs.template import StepTemplate
from prepflow.jobstore.sqlite import SqliteJobStore
from prepflow.orchestrator import Orchestrator, OutcomeKind
from prepflow.settings import Settings, load_settings
from prepflow.storage.local import LocalObjectStore
from tests.aws.conftest import ACCOUNT, REGION, ROLE_ARN
from tests.helpers import load_case

RAW = "acme-ml-raw"
IMAGE = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/prepflow-processing:1"
JOB_ARN = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:processing-job/prepflow-x"
QUOTA_MESSAGE = load_case("H17-error.json")["Error"]["Message"]
WAITING_FOR_CAPACITY = (
    f"waiting for capacity: ResourceLimitExceeded for ml.m5.xlarge: {QUOTA_MESSAGE}"
)
SUBMIT_ATTEMPTS = 3


class Harness:
    """An orchestrator wired to a stubbed SageMaker client, with what each part recorded."""

    def __init__(self, tmp_path, *, submit_attempts: int = SUBMIT_ATTEMPTS) -> None:
        self.settings: Settings = load_settings(
            home=tmp_path / "home",
            raw_bucket=RAW,
            processed_bucket="acme-ml-processed",
            model_artifacts_bucket="acme-ml-artifacts",
            logs_bucket="acme-ml-logs",
            feature_store_bucket="acme-ml-features",
            region=REGION,
            processing_instance_type="ml.m5.xlarge",
            sagemaker_role_arn=ROLE_ARN,
            processing_image_uri=IMAGE,
            submit_attempts=submit_attempts,
        )
        self.store = LocalObjectStore(tmp_path / "home", region=REGION)
        self.jobs = SqliteJobStore(tmp_path / "jobs.db")
        self.client = boto3.client("sagemaker", region_name=REGION)
        self.stubber = Stubber(self.client)
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.client.meta.events.register("provide-client-params.sagemaker", self._record)
        self.sleeps: list[float] = []
        self.backend = SageMakerBackend(self.client, sleep=self.sleeps.append, throttle_retries=2)
        self.orchestrator = Orchestrator(
            settings=self.settings,
            store=self.store,
            backend=self.backend,
            jobs=self.jobs,
            step=StepTemplate.built_in(),
        )

    def _record(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        self.calls.append((model.name, dict(params)))

    @property
    def operations(self) -> list[str]:
        return [name for name, _ in self.calls]

    def submitted_names(self) -> list[str]:
        return [params["ProcessingJobName"] for _, params in self.calls]

    def upload(self, count: int) -> list[dict[str, Any]]:
        """Put ``count`` objects in the raw bucket; return the S3 notifications they sent."""
        sent: list[dict[str, Any]] = []
        self.store.subscribe(RAW, sent.append)
        for index in range(count):
            self.store.put_object(RAW, f"input/orders_{index:02d}.csv", b"id,value\n1,a\n")
        return sent

    def accept(self) -> None:
        self.stubber.add_response("create_processing_job", {"ProcessingJobArn": JOB_ARN})

    def reject(self, case: str) -> None:
        shape = load_case(case)
        self.stubber.add_client_error(
            "create_processing_job",
            service_error_code=shape["Error"]["Code"],
            service_message=shape["Error"]["Message"],
            http_status_code=shape["ResponseMetadata"]["HTTPStatusCode"],
            response_meta={"RequestId": shape["ResponseMetadata"]["RequestId"]},
        )

    def handle(self, batch: dict[str, Any]):
        with self.stubber:
            result = self.orchestrator.handle(batch)
        self.stubber.assert_no_pending_responses()
        return result


def message_id(index: int) -> str:
    return f"00000000-0000-4000-8000-{index:012d}"


def sqs_batch(notifications: list[dict[str, Any]], indexes: list[int] | None = None) -> dict:
    """Wrap each notification in one SQS message, as an S3 -> SQS -> Lambda batch arrives."""
    chosen = range(len(notifications)) if indexes is None else indexes
    return {
        "Records": [
            {
                "messageId": message_id(index),
                "receiptHandle": f"EXAMPLE-RECEIPT-{index}",
                "body": json.dumps(notifications[index]),
                "attributes": {"ApproximateReceiveCount": "1"},
                "messageAttributes": {},
                "md5OfBody": "0" * 32,
                "eventSource": "aws:sqs",
                "eventSourceARN": f"arn:aws:sqs:{REGION}:{ACCOUNT}:raw-input-events",
                "awsRegion": REGION,
            }
            for index in chosen
        ]
    }


@pytest.fixture
def harness(tmp_path) -> Harness:
    return Harness(tmp_path)


# -- ResourceLimitExceeded --------------------------------------------------------------------


def quota_of_two(harness: Harness) -> tuple[list[dict[str, Any]], Any]:
    """Send 10 uploads in one batch while the quota allows 2 jobs; return events and result."""
    events = harness.upload(10)
    harness.accept()
    harness.accept()
    for _ in range(8):
        harness.reject("H17-error.json")
    return events, harness.handle(sqs_batch(events))


def test_capacity_two_started_eight_failed(harness):
    _, result = quota_of_two(harness)

    kinds = [outcome.kind for outcome in result.outcomes]
    assert kinds == [OutcomeKind.STARTED] * 2 + [OutcomeKind.FAILED] * 8


def test_capacity_three_of_ten_reported(harness):
    # Messages 1, 4 and 8 hit the quota; the other seven start their jobs.
    events = harness.upload(10)
    limited = {1, 4, 8}
    for index in range(10):
        if index in limited:
            harness.reject("H17-error.json")
        else:
            harness.accept()

    result = harness.handle(sqs_batch(events))

    assert result.failed_message_ids == [message_id(index) for index in sorted(limited)]
    kinds = [outcome.kind for outcome in result.outcomes]
    assert kinds.count(OutcomeKind.STARTED) == 7


def test_capacity_reports_waiting_message_ids(harness):
    _, result = quota_of_two(harness)

    assert result.failed_message_ids == [message_id(index) for index in range(2, 10)]


def test_capacity_records_name_instance_type(harness):
    _, result = quota_of_two(harness)

    waiting = [r for r in harness.jobs.list_jobs() if r.submitted_at is None]
    assert len(waiting) == 8
    for record in waiting:
        assert record.status == JobStatus.IN_PROGRESS
        assert record.waiting_reason == WAITING_FOR_CAPACITY
        assert record.submit_attempts == 1
    assert {o.reason for o in result.failures} == {WAITING_FOR_CAPACITY}


def test_capacity_no_input_lost(harness):
    quota_of_two(harness)

    records = harness.jobs.list_jobs()
    inputs = sorted(uri for record in records for uri in record.inputs)
    assert inputs == [f"s3://{RAW}/input/orders_{index:02d}.csv" for index in range(10)]
    assert sorted(harness.submitted_names()) == sorted(r.job_name for r in records)


def test_capacity_started_records_not_waiting(harness):
    _, result = quota_of_two(harness)

    for name in result.job_names:
        record = harness.jobs.get(name)
        assert record.submitted_at is not None
        assert record.waiting_reason is None
        assert record.submit_attempts == 0


def test_capacity_not_retried_in_call(harness):
    quota_of_two(harness)

    assert harness.operations == ["CreateProcessingJob"] * 10
    assert harness.sleeps == []


def test_capacity_redelivered_job_starts_when_free(harness):
    events, _ = quota_of_two(harness)
    harness.accept()

    result = harness.handle(sqs_batch(events, [2]))

    (outcome,) = result.outcomes
    assert outcome.kind == OutcomeKind.STARTED
    record = harness.jobs.get(outcome.job_name)
    assert record.submitted_at is not None
    assert record.waiting_reason is None
    assert record.submit_attempts == 1


def redeliver_until_bound(harness: Harness, events: list[dict[str, Any]]) -> list[Any]:
    """Deliver the 8 waiting messages again until the attempts reach the bound."""
    results = []
    for _ in range(SUBMIT_ATTEMPTS - 1):
        for _ in range(8):
            harness.reject("H17-error.json")
        results.append(harness.handle(sqs_batch(events, list(range(2, 10)))))
    return results


def test_capacity_reported_until_bound(harness):
    events, _ = quota_of_two(harness)

    second, third = redeliver_until_bound(harness, events)

    assert second.failed_message_ids == [message_id(index) for index in range(2, 10)]
    assert third.failed_message_ids == []
    assert [o.kind for o in third.outcomes] == [OutcomeKind.FAILED] * 8
    assert [o.retry for o in third.outcomes] == [False] * 8


def test_capacity_failed_after_bound(harness):
    events, _ = quota_of_two(harness)

    redeliver_until_bound(harness, events)

    failed = harness.jobs.list_jobs(status=JobStatus.FAILED)
    assert len(failed) == 8
    for record in failed:
        assert record.submit_attempts == SUBMIT_ATTEMPTS
        assert record.submitted_at is None
        assert record.waiting_reason is None
        assert record.ended_at is not None
        assert record.failure_reason.startswith(
            f"ResourceLimitExceeded for ml.m5.xlarge: {QUOTA_MESSAGE}. Not started after 3 "
            "attempts (PREPFLOW_SUBMIT_ATTEMPTS=3)"
        )


def test_capacity_failed_job_never_submitted_again(harness):
    events, _ = quota_of_two(harness)
    redeliver_until_bound(harness, events)
    calls_before = len(harness.calls)

    result = harness.handle(sqs_batch(events))

    assert [o.kind for o in result.outcomes] == [OutcomeKind.DUPLICATE] * 10
    assert result.failed_message_ids == []
    assert len(harness.calls) == calls_before
    assert result.outcomes[2].reason.startswith("job already Failed: ResourceLimitExceeded")


# -- ThrottlingException -----------------------------------------------------------------------


def throttled_batch(harness: Harness) -> tuple[list[dict[str, Any]], Any]:
    """Send 6 uploads in one batch; messages 2 and 4 stay throttled on all 3 attempts."""
    events = harness.upload(6)
    harness.accept()
    harness.reject("H18-error.json")
    harness.reject("H18-error.json")
    harness.accept()
    for stays_throttled in (2, 4):
        for _ in range(3):
            harness.reject("H18-error.json")
        if stays_throttled == 2:
            harness.accept()
    harness.accept()
    return events, harness.handle(sqs_batch(events))


def test_throttled_reports_those_ids_only(harness):
    _, result = throttled_batch(harness)

    assert result.failed_message_ids == [message_id(2), message_id(4)]


def test_throttled_others_started(harness):
    _, result = throttled_batch(harness)

    kinds = {outcome.message_id: outcome.kind for outcome in result.outcomes}
    assert kinds == {
        message_id(0): OutcomeKind.STARTED,
        message_id(1): OutcomeKind.STARTED,
        message_id(2): OutcomeKind.FAILED,
        message_id(3): OutcomeKind.STARTED,
        message_id(4): OutcomeKind.FAILED,
        message_id(5): OutcomeKind.STARTED,
    }


def test_throttled_no_list_jobs_call(harness):
    throttled_batch(harness)

    assert harness.operations == ["CreateProcessingJob"] * 12


def test_throttled_backoff_sleeps_injected(harness):
    throttled_batch(harness)

    bounds = [BACKOFF_BASE_SECONDS, BACKOFF_BASE_SECONDS * 2] * 3
    assert len(harness.sleeps) == 6
    for delay, bound in zip(harness.sleeps, bounds, strict=True):
        assert 0 <= delay <= bound


def test_throttled_records_waiting(harness):
    throttled_batch(harness)

    waiting = [r for r in harness.jobs.list_jobs() if r.submitted_at is None]
    assert sorted(r.inputs[0] for r in waiting) == [
        f"s3://{RAW}/input/orders_02.csv",
        f"s3://{RAW}/input/orders_04.csv",
    ]
    for record in waiting:
        assert record.submit_attempts == 1
        assert record.waiting_reason == (
            "throttled by SageMaker: CreateProcessingJob throttled on all 3 attempts: "
            "FAKE: rate exceeded"
        )


def test_throttled_redelivery_starts_the_rest(harness):
    events, _ = throttled_batch(harness)
    harness.accept()
    harness.accept()

    result = harness.handle(sqs_batch(events, [2, 4]))

    assert [o.kind for o in result.outcomes] == [OutcomeKind.STARTED] * 2
    assert result.failed_message_ids == []
    assert len(harness.jobs.list_jobs()) == 6
    assert all(r.submitted_at is not None for r in harness.jobs.list_jobs())


def test_throttled_failed_after_bound(tmp_path):
    harness = Harness(tmp_path, submit_attempts=1)
    events = harness.upload(1)
    for _ in range(3):
        harness.reject("H18-error.json")

    result = harness.handle(sqs_batch(events))

    assert result.failed_message_ids == []
    (record,) = harness.jobs.list_jobs()
    assert record.status == JobStatus.FAILED
    assert record.failure_reason.startswith(
        "CreateProcessingJob throttled on all 3 attempts: FAKE: rate exceeded. Not started "
        "after 1 attempts"
    )


# -- ValidationException -------------------------------------------------------------------------


def test_validation_error_recorded_not_redelivered(harness):
    events = harness.upload(1)
    harness.stubber.add_client_error(
        "create_processing_job",
        service_error_code="ValidationException",
        service_message="1 validation error detected: Value 'x' at 'roleArn' failed to satisfy "
        "constraint",
        http_status_code=400,
    )

    result = harness.handle(sqs_batch(events))

    (outcome,) = result.outcomes
    assert outcome.kind == OutcomeKind.FAILED
    assert result.failed_message_ids == []
    (record,) = harness.jobs.list_jobs()
    assert record.status == JobStatus.FAILED
    assert record.failure_reason.startswith("ValidationException: CreateProcessingJob rejected")
    assert "at 'roleArn' failed to satisfy constraint" in record.failure_reason


def test_validation_failed_job_not_resubmitted(harness):
    events = harness.upload(1)
    harness.stubber.add_client_error(
        "create_processing_job", service_error_code="ValidationException", service_message="bad"
    )
    harness.handle(sqs_batch(events))

    result = harness.handle(sqs_batch(events))

    (outcome,) = result.outcomes
    assert outcome.kind == OutcomeKind.DUPLICATE
    assert harness.operations == ["CreateProcessingJob"]
