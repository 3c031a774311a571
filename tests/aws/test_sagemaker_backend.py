"""SageMakerBackend against botocore's Stubber: each SageMaker response and error it maps.

moto accepts a duplicate job name and never throttles, so these responses come from a
Stubber, with the error codes and response shapes of the SageMaker API reference. The error
messages are examples.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber

from prepflow.aws.sagemaker import (
    BACKOFF_BASE_SECONDS,
    SageMakerBackend,
    description_from_response,
)
from prepflow.errors import (
    CapacityError,
    JobError,
    JobExistsError,
    JobNotFoundError,
    JobSpecError,
    ThrottledError,
)
from prepflow.jobs.spec import JobStatus, ProcessingJobSpec
from prepflow.jobs.template import StepTemplate, build_spec
from prepflow.settings import load_settings
from tests.aws.conftest import ACCOUNT, REGION, ROLE_ARN
from tests.helpers import load_case

JOB = "prepflow-orders-0123456789abcdef"
JOB_ARN = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:processing-job/{JOB}"
IMAGE = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/prepflow-processing:1"
CREATED = datetime(2024, 6, 4, 10, 15, tzinfo=UTC)
STARTED = datetime(2024, 6, 4, 10, 18, tzinfo=UTC)


def make_spec(name: str = JOB) -> ProcessingJobSpec:
    settings = load_settings(
        region=REGION,
        processing_instance_type="ml.m5.xlarge",
        sagemaker_role_arn=ROLE_ARN,
        processing_image_uri=IMAGE,
        raw_bucket="acme-ml-raw",
    )
    return build_spec(
        settings,
        StepTemplate.built_in(),
        name=name,
        manifest_uri=f"s3://acme-ml-artifacts/manifests/{name}.manifest",
        output_uri=f"s3://acme-ml-processed/output/{name}/",
    )


def describe_response(status: str, **fields) -> dict:
    """A DescribeProcessingJob response with the fields the API marks as required."""
    return {
        "ProcessingJobName": JOB,
        "ProcessingJobArn": JOB_ARN,
        "ProcessingJobStatus": status,
        "CreationTime": CREATED,
        "ProcessingResources": {
            "ClusterConfig": {
                "InstanceCount": 1,
                "InstanceType": "ml.m5.xlarge",
                "VolumeSizeInGB": 30,
            }
        },
        "AppSpecification": {"ImageUri": IMAGE},
        "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
        **fields,
    }


def add_case_error(stubber: Stubber, method: str, case: str, expected_params=None) -> None:
    """Queue the error response stored in a case file (its code, message and metadata)."""
    shape = load_case(case)
    stubber.add_client_error(
        method,
        service_error_code=shape["Error"]["Code"],
        service_message=shape["Error"]["Message"],
        http_status_code=shape["ResponseMetadata"]["HTTPStatusCode"],
        response_meta={"RequestId": shape["ResponseMetadata"]["RequestId"]},
        expected_params=expected_params,
    )


@pytest.fixture
def client():
    return boto3.client("sagemaker", region_name=REGION)


@pytest.fixture
def stubber(client):
    with Stubber(client) as stub:
        yield stub
        stub.assert_no_pending_responses()


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def backend(client, sleeps) -> SageMakerBackend:
    return SageMakerBackend(client, sleep=sleeps.append, throttle_retries=4)


# -- submit ------------------------------------------------------------------------------------


def test_submit_sends_whole_request(backend, stubber):
    spec = make_spec()
    stubber.add_response(
        "create_processing_job", {"ProcessingJobArn": JOB_ARN}, expected_params=spec.to_request()
    )

    backend.submit(spec)


def test_submit_request_names_instance_type(backend, stubber):
    spec = make_spec()
    request = spec.to_request()
    stubber.add_response("create_processing_job", {"ProcessingJobArn": JOB_ARN}, request)

    backend.submit(spec)

    assert request["ProcessingResources"]["ClusterConfig"]["InstanceType"] == "ml.m5.xlarge"
    assert request["AppSpecification"]["ImageUri"] == IMAGE


def test_submit_shards_data_input_only(backend, stubber):
    settings = load_settings(
        region=REGION,
        processing_instance_count=3,
        sagemaker_role_arn=ROLE_ARN,
        processing_image_uri=IMAGE,
    )
    step = StepTemplate.for_script("s3://acme-ml-artifacts/scripts/0123/", "clean.py")
    spec = build_spec(
        settings,
        step,
        name=JOB,
        manifest_uri=f"s3://acme-ml-artifacts/manifests/{JOB}.manifest",
        output_uri=f"s3://acme-ml-processed/output/{JOB}/",
    )
    request = spec.to_request()
    stubber.add_response("create_processing_job", {"ProcessingJobArn": JOB_ARN}, request)

    backend.submit(spec)

    assert request["ProcessingResources"]["ClusterConfig"]["InstanceCount"] == 3
    distribution = {
        item["InputName"]: item["S3Input"]["S3DataDistributionType"]
        for item in request["ProcessingInputs"]
    }
    assert distribution == {"data": "ShardedByS3Key", "code": "FullyReplicated"}


def test_submit_resource_in_use_is_exists(backend, stubber):
    stubber.add_client_error(
        "create_processing_job",
        service_error_code="ResourceInUse",
        service_message=f"Processing job name {JOB} is already in use",
        http_status_code=400,
    )

    with pytest.raises(JobExistsError) as caught:
        backend.submit(make_spec())

    assert caught.value.job_name == JOB
    assert isinstance(caught.value.__cause__, ClientError)


def test_submit_validation_error_keeps_message(backend, stubber):
    message = (
        "1 validation error detected: Value 'ml.bogus' at 'processingResources.clusterConfig."
        "instanceType' failed to satisfy constraint: Member must satisfy enum value set"
    )
    stubber.add_client_error(
        "create_processing_job",
        service_error_code="ValidationException",
        service_message=message,
        http_status_code=400,
    )

    with pytest.raises(JobSpecError) as caught:
        backend.submit(make_spec())

    assert message in str(caught.value)
    assert JOB in str(caught.value)


def test_submit_validation_error_not_retried(backend, stubber, sleeps):
    stubber.add_client_error(
        "create_processing_job", service_error_code="ValidationException", service_message="bad"
    )

    with pytest.raises(JobSpecError):
        backend.submit(make_spec())

    assert sleeps == []


def test_submit_throttled_then_accepted(backend, stubber, sleeps):
    add_case_error(stubber, "create_processing_job", "H18-error.json")
    add_case_error(stubber, "create_processing_job", "H18-error.json")
    stubber.add_response("create_processing_job", {"ProcessingJobArn": JOB_ARN})

    backend.submit(make_spec())

    assert len(sleeps) == 2


def test_submit_backoff_grows_with_jitter(backend, stubber, sleeps):
    for _ in range(4):
        add_case_error(stubber, "create_processing_job", "H18-error.json")
    stubber.add_response("create_processing_job", {"ProcessingJobArn": JOB_ARN})

    backend.submit(make_spec())

    bounds = [BACKOFF_BASE_SECONDS * 2**attempt for attempt in range(4)]
    assert len(sleeps) == 4
    for delay, bound in zip(sleeps, bounds, strict=True):
        assert 0 <= delay <= bound


def test_submit_throttled_until_exhausted(client, stubber, sleeps):
    backend = SageMakerBackend(client, sleep=sleeps.append, throttle_retries=2)
    for _ in range(3):
        add_case_error(stubber, "create_processing_job", "H18-error.json")

    with pytest.raises(ThrottledError) as caught:
        backend.submit(make_spec())

    assert caught.value.attempts == 3
    assert caught.value.operation == "CreateProcessingJob"
    assert caught.value.message == "FAKE: rate exceeded"
    assert len(sleeps) == 2


def test_submit_throttled_keeps_cause(client, stubber):
    backend = SageMakerBackend(client, sleep=lambda _: None, throttle_retries=0)
    add_case_error(stubber, "create_processing_job", "H18-error.json")

    with pytest.raises(ThrottledError) as caught:
        backend.submit(make_spec())

    cause = caught.value.__cause__
    assert isinstance(cause, ClientError)
    assert cause.response["ResponseMetadata"]["RequestId"] == "EXAMPLE-REQ-18"


def test_submit_limit_exceeded_is_capacity(backend, stubber, sleeps):
    add_case_error(stubber, "create_processing_job", "H17-error.json")

    with pytest.raises(CapacityError) as caught:
        backend.submit(make_spec())

    assert caught.value.instance_type == "ml.m5.xlarge"
    assert caught.value.message == load_case("H17-error.json")["Error"]["Message"]
    assert str(caught.value).startswith("ResourceLimitExceeded for ml.m5.xlarge: FAKE: account")
    assert sleeps == []


def test_submit_other_error_is_job_error(backend, stubber):
    stubber.add_client_error(
        "create_processing_job",
        service_error_code="AccessDeniedException",
        service_message="not authorized to perform: sagemaker:CreateProcessingJob",
        http_status_code=400,
    )

    with pytest.raises(JobError) as caught:
        backend.submit(make_spec())

    assert type(caught.value) is JobError
    assert "AccessDeniedException" in str(caught.value)
    assert JOB in str(caught.value)


# -- describe ----------------------------------------------------------------------------------


def test_describe_completed_job(backend, stubber):
    ended = datetime(2024, 6, 4, 10, 30, tzinfo=UTC)
    stubber.add_response(
        "describe_processing_job",
        describe_response(
            "Completed",
            ProcessingStartTime=STARTED,
            ProcessingEndTime=ended,
            ExitMessage='{"rows_in": 3, "rows_out": 2, "rows_rejected": 1}',
        ),
        {"ProcessingJobName": JOB},
    )

    description = backend.describe(JOB)

    assert description.job_name == JOB
    assert description.status == JobStatus.COMPLETED
    assert description.exit_message == '{"rows_in": 3, "rows_out": 2, "rows_rejected": 1}'
    assert description.failure_reason is None
    assert description.creation_time == CREATED
    assert description.start_time == STARTED
    assert description.end_time == ended


def test_describe_failed_keeps_reason(backend, stubber):
    failed = load_case("H24-describe.json")[0]
    response = describe_response(
        "Failed", FailureReason=failed["FailureReason"], ExitMessage=failed["ExitMessage"]
    )
    stubber.add_response("describe_processing_job", response)

    description = backend.describe(JOB)

    assert description.status == JobStatus.FAILED
    assert description.failure_reason == "AlgorithmError: exit code: 1"
    assert description.exit_message is None


def test_describe_stopped_at_runtime_limit(backend, stubber):
    ended = datetime(2024, 6, 4, 11, 18, 2, tzinfo=UTC)
    response = describe_response("Stopped", ProcessingStartTime=STARTED, ProcessingEndTime=ended)
    stubber.add_response("describe_processing_job", response)

    description = backend.describe(JOB)

    assert description.status == JobStatus.STOPPED
    assert description.failure_reason.startswith("stopped at the runtime limit")
    assert "ran 3602 s, MaxRuntimeInSeconds is 3600" in description.failure_reason


def test_describe_not_found(backend, stubber):
    stubber.add_client_error(
        "describe_processing_job",
        service_error_code="ResourceNotFound",
        service_message=f"Processing job {JOB} does not exist",
        http_status_code=400,
    )

    with pytest.raises(JobNotFoundError) as caught:
        backend.describe(JOB)

    assert caught.value.job_name == JOB


def test_describe_could_not_find_is_not_found(backend, stubber):
    stubber.add_client_error(
        "describe_processing_job",
        service_error_code="ValidationException",
        service_message=f"Could not find processing job '{JOB_ARN}'.",
        http_status_code=400,
    )

    with pytest.raises(JobNotFoundError):
        backend.describe(JOB)


def test_describe_throttled_then_answered(backend, stubber, sleeps):
    add_case_error(stubber, "describe_processing_job", "H18-error.json")
    stubber.add_response("describe_processing_job", describe_response("InProgress"))

    description = backend.describe(JOB)

    assert description.status == JobStatus.IN_PROGRESS
    assert len(sleeps) == 1


# -- description_from_response -------------------------------------------------------------------


def test_description_failed_keeps_reason():
    description = description_from_response(load_case("H24-describe.json")[0])

    assert description.job_name == "prep-orders-0003"
    assert description.status == JobStatus.FAILED
    assert description.failure_reason == "AlgorithmError: exit code: 1"


def test_description_stopped_without_times():
    description = description_from_response(load_case("H24-describe.json")[1])

    assert description.job_name == "prep-orders-0004"
    assert description.status == JobStatus.STOPPED
    assert description.failure_reason.startswith("stopped, but without its start and end")
    assert "runtime limit (MaxRuntimeInSeconds 3600)" in description.failure_reason


def test_description_stopped_on_request():
    response = describe_response(
        "Stopped",
        ProcessingStartTime=STARTED,
        ProcessingEndTime=datetime(2024, 6, 4, 10, 28, tzinfo=UTC),
    )

    description = description_from_response(response)

    assert description.failure_reason.startswith("stopped on request (StopProcessingJob)")
    assert "after 600 s" in description.failure_reason


def test_description_stopped_keeps_sagemaker_reason():
    response = describe_response(
        "Stopped",
        ProcessingStartTime=STARTED,
        ProcessingEndTime=datetime(2024, 6, 4, 11, 18, tzinfo=UTC),
        FailureReason="Job stopped: MaxRuntimeExceeded",
    )

    description = description_from_response(response)

    assert description.failure_reason.startswith("stopped at the runtime limit")
    assert description.failure_reason.endswith(". FailureReason: Job stopped: MaxRuntimeExceeded")


def test_description_stopped_without_limit():
    response = describe_response("Stopped")
    del response["StoppingCondition"]

    description = description_from_response(response)

    assert description.failure_reason == "stopped (the response names no MaxRuntimeInSeconds)"


def test_description_eventbridge_epoch_milliseconds():
    # EventBridge serializes the times of a state-change event as JSON numbers.
    detail = json.loads(
        json.dumps(
            {
                "ProcessingJobName": JOB,
                "ProcessingJobStatus": "Stopped",
                "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
                "CreationTime": 1717496100000,
                "ProcessingStartTime": 1717496280000,
                "ProcessingEndTime": 1717499880000,
            }
        )
    )

    description = description_from_response(detail)

    assert description.creation_time == CREATED
    assert description.start_time == STARTED
    assert description.end_time == datetime(2024, 6, 4, 11, 18, tzinfo=UTC)
    assert description.failure_reason.startswith("stopped at the runtime limit: ran 3600 s")


def test_description_iso_times():
    detail = {
        "ProcessingJobName": JOB,
        "ProcessingJobStatus": "InProgress",
        "CreationTime": "2024-06-04T10:15:00Z",
        "ProcessingStartTime": "2024-06-04T12:18:00+02:00",
    }

    description = description_from_response(detail)

    assert description.creation_time == CREATED
    assert description.start_time == STARTED


def test_description_unknown_status_rejected():
    with pytest.raises(JobError, match="'Pending'"):
        description_from_response({"ProcessingJobName": JOB, "ProcessingJobStatus": "Pending"})


def test_description_missing_name_rejected():
    with pytest.raises(JobError, match="ProcessingJobName is missing"):
        description_from_response({"ProcessingJobStatus": "Completed"})


# -- stop --------------------------------------------------------------------------------------


def test_stop_running_job(backend, stubber):
    stubber.add_response("stop_processing_job", {}, {"ProcessingJobName": JOB})

    backend.stop(JOB)


def test_stop_ended_job_left_alone(backend, stubber):
    stubber.add_client_error(
        "stop_processing_job",
        service_error_code="ValidationException",
        service_message=f"The processing job {JOB} is not in progress and cannot be stopped.",
        http_status_code=400,
    )
    stubber.add_response("describe_processing_job", describe_response("Completed"))

    backend.stop(JOB)


def test_stop_rejected_while_running_raises(backend, stubber):
    stubber.add_client_error(
        "stop_processing_job",
        service_error_code="ValidationException",
        service_message="the request was rejected",
        http_status_code=400,
    )
    stubber.add_response("describe_processing_job", describe_response("InProgress"))

    with pytest.raises(JobError, match="StopProcessingJob failed"):
        backend.stop(JOB)


def test_stop_unknown_job(backend, stubber):
    stubber.add_client_error(
        "stop_processing_job",
        service_error_code="ResourceNotFound",
        service_message=f"Processing job {JOB} does not exist",
        http_status_code=400,
    )

    with pytest.raises(JobNotFoundError):
        backend.stop(JOB)


# -- list_jobs ---------------------------------------------------------------------------------


def summary(name: str, status: str = "Completed") -> dict:
    return {
        "ProcessingJobName": name,
        "ProcessingJobArn": f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:processing-job/{name}",
        "CreationTime": CREATED,
        "ProcessingJobStatus": status,
    }


def list_params(**extra) -> dict:
    return {
        "NameContains": "prepflow",
        "SortBy": "CreationTime",
        "SortOrder": "Descending",
        "MaxResults": 100,
        **extra,
    }


def test_list_jobs_reads_every_page(backend, stubber):
    stubber.add_response(
        "list_processing_jobs",
        {
            "ProcessingJobSummaries": [summary("prepflow-a-1"), summary("prepflow-b-2")],
            "NextToken": "page-2",
        },
        list_params(),
    )
    stubber.add_response(
        "list_processing_jobs",
        {"ProcessingJobSummaries": [summary("prepflow-c-3", "Failed")]},
        list_params(NextToken="page-2"),
    )

    jobs = backend.list_jobs("prepflow")

    assert [job.job_name for job in jobs] == ["prepflow-a-1", "prepflow-b-2", "prepflow-c-3"]
    assert jobs[2].status == JobStatus.FAILED


def test_list_jobs_keeps_prefix_matches_only(backend, stubber):
    stubber.add_response(
        "list_processing_jobs",
        {"ProcessingJobSummaries": [summary("prepflow-a-1"), summary("other-prepflow-x")]},
        list_params(),
    )

    jobs = backend.list_jobs("prepflow")

    assert [job.job_name for job in jobs] == ["prepflow-a-1"]


def test_list_jobs_filters_status(backend, stubber):
    stubber.add_response(
        "list_processing_jobs",
        {"ProcessingJobSummaries": [summary("prepflow-a-1", "InProgress")]},
        list_params(StatusEquals="InProgress"),
    )

    jobs = backend.list_jobs("prepflow", JobStatus.IN_PROGRESS)

    assert [job.status for job in jobs] == [JobStatus.IN_PROGRESS]
