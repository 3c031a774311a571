"""The CreateProcessingJob request: SageMaker's validation rules and the boto3 request shape."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from prepflow.errors import JobSpecError
from prepflow.jobs.spec import (
    JobStatus,
    ProcessingJobSpec,
    check_job_name,
    validate_request,
)


def request(**changes: Any) -> dict[str, Any]:
    """Return a valid CreateProcessingJob request (boto3's PascalCase) updated with ``changes``."""
    body: dict[str, Any] = {
        "ProcessingJobName": "prepflow-orders-0123456789ab",
        "ProcessingInputs": [
            {
                "InputName": "data",
                "S3Input": {
                    "S3Uri": "s3://acme-ml-artifacts/manifests/prepflow-orders.manifest",
                    "LocalPath": "/opt/ml/processing/input",
                    "S3DataType": "ManifestFile",
                    "S3InputMode": "File",
                    "S3DataDistributionType": "FullyReplicated",
                    "S3CompressionType": "None",
                },
            },
            {
                "InputName": "code",
                "S3Input": {
                    "S3Uri": "s3://acme-ml-artifacts/scripts/abc/",
                    "LocalPath": "/opt/ml/processing/input/code",
                },
            },
        ],
        "ProcessingOutputConfig": {
            "Outputs": [
                {
                    "OutputName": "processed",
                    "S3Output": {
                        "S3Uri": "s3://acme-ml-processed/output/prepflow-orders/",
                        "LocalPath": "/opt/ml/processing/output",
                        "S3UploadMode": "EndOfJob",
                    },
                },
                {
                    "OutputName": "rejected",
                    "S3Output": {
                        "S3Uri": "s3://acme-ml-processed/rejected/prepflow-orders/",
                        "LocalPath": "/opt/ml/processing/rejected",
                    },
                },
            ]
        },
        "ProcessingResources": {
            "ClusterConfig": {
                "InstanceCount": 2,
                "InstanceType": "ml.m5.xlarge",
                "VolumeSizeInGB": 30,
            }
        },
        "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
        "AppSpecification": {
            "ImageUri": "111122223333.dkr.ecr.eu-west-1.amazonaws.com/prepflow:1",
            "ContainerEntrypoint": ["python3", "-m", "prepflow.processing"],
        },
        "Environment": {"LOG_LEVEL": "INFO", "_PRIVATE_1": "x"},
        "RoleArn": "arn:aws:iam::111122223333:role/prepflow-processing",
        "Tags": [{"Key": "project", "Value": "prepflow"}],
    }
    body.update(changes)
    return body


def spec(**changes: Any) -> ProcessingJobSpec:
    return ProcessingJobSpec.from_request(request(**changes))


def problems_of(job: ProcessingJobSpec) -> str:
    with pytest.raises(JobSpecError) as caught:
        validate_request(job)
    return str(caught.value)


def with_input_path(index: int, local_path: str) -> ProcessingJobSpec:
    body = request()
    body["ProcessingInputs"][index]["S3Input"]["LocalPath"] = local_path
    return ProcessingJobSpec.from_request(body)


def with_output_path(index: int, local_path: str) -> ProcessingJobSpec:
    body = request()
    body["ProcessingOutputConfig"]["Outputs"][index]["S3Output"]["LocalPath"] = local_path
    return ProcessingJobSpec.from_request(body)


# -- validate_request ---------------------------------------------------------------------------


def test_validate_accepts_valid_request():
    validate_request(spec())


@pytest.mark.parametrize(
    "name",
    ["", "-leading", "trailing-", "under_score", "dot.name", "space name", "x" * 64, "ü"],
)
def test_validate_rejects_invalid_name(name):
    message = problems_of(spec(ProcessingJobName=name))

    assert "ProcessingJobName" in message
    assert repr(name) in message


@pytest.mark.parametrize("name", ["a", "A1", "a--b", "x" * 63, "0-9"])
def test_check_job_name_accepts(name):
    check_job_name(name)


def test_check_job_name_rejects_64_characters():
    with pytest.raises(JobSpecError, match="1 to 63"):
        check_job_name("x" * 64)


def test_validate_rejects_duplicate_input_names():
    body = request()
    body["ProcessingInputs"][1]["InputName"] = "data"

    message = problems_of(ProcessingJobSpec.from_request(body))

    assert "InputName 'data' is used by more than one input" in message


def test_validate_rejects_duplicate_output_names():
    body = request()
    body["ProcessingOutputConfig"]["Outputs"][1]["OutputName"] = "processed"

    message = problems_of(ProcessingJobSpec.from_request(body))

    assert "OutputName 'processed' is used by more than one output" in message


def test_validate_rejects_duplicate_input_local_paths():
    message = problems_of(with_input_path(1, "/opt/ml/processing/input"))

    assert "LocalPath '/opt/ml/processing/input' is used by more than one input" in message


def test_validate_rejects_duplicate_output_local_paths():
    message = problems_of(with_output_path(1, "/opt/ml/processing/output"))

    assert "LocalPath '/opt/ml/processing/output' is used by more than one output" in message


@pytest.mark.parametrize(
    "local_path",
    [
        "/opt/ml/input",
        "/tmp/data",
        "opt/ml/processing/input",
        "/opt/ml/processing",
        "/opt/ml/processing/",
        "/opt/ml/processingfoo",
        "/opt/ml/processing/../config",
        "/opt/ml/processing/./input",
    ],
)
def test_validate_rejects_local_path_outside_root(local_path):
    message = problems_of(with_input_path(0, local_path))

    assert f"LocalPath {local_path!r}" in message


def test_validate_rejects_output_path_outside_root():
    message = problems_of(with_output_path(0, "/opt/ml/model"))

    assert "LocalPath '/opt/ml/model' must be a folder under /opt/ml/processing/" in message


def test_validate_rejects_long_local_path():
    local_path = "/opt/ml/processing/" + "a" * 240

    assert f"LocalPath {local_path!r}" in problems_of(with_input_path(0, local_path))


@pytest.mark.parametrize("runtime", [0, -1, 777_601])
def test_validate_rejects_runtime_out_of_range(runtime):
    message = problems_of(spec(StoppingCondition={"MaxRuntimeInSeconds": runtime}))

    assert f"MaxRuntimeInSeconds {runtime} must be from 1 to 777600" in message


@pytest.mark.parametrize("runtime", [1, 777_600])
def test_validate_accepts_runtime_limits(runtime):
    validate_request(spec(StoppingCondition={"MaxRuntimeInSeconds": runtime}))


@pytest.mark.parametrize("key", ["1STARTS_WITH_DIGIT", "HAS-HYPHEN", "HAS SPACE", "", "ÜML"])
def test_validate_rejects_bad_environment_key(key):
    message = problems_of(spec(Environment={key: "value"}))

    assert f"Environment key {key!r}" in message


def test_validate_rejects_long_environment_value():
    message = problems_of(spec(Environment={"TOO_LONG": "v" * 257}))

    assert "Environment value of 'TOO_LONG'" in message


def test_validate_rejects_too_many_environment_entries():
    environment = {f"VAR_{index}": "v" for index in range(101)}

    assert "Environment has 101 entries" in problems_of(spec(Environment=environment))


@pytest.mark.parametrize("count", [0, 101])
def test_validate_rejects_instance_count(count):
    cluster = {"InstanceCount": count, "InstanceType": "ml.m5.xlarge", "VolumeSizeInGB": 30}

    message = problems_of(spec(ProcessingResources={"ClusterConfig": cluster}))

    assert f"InstanceCount {count}" in message


def test_validate_rejects_zero_volume():
    cluster = {"InstanceCount": 1, "InstanceType": "ml.m5.xlarge", "VolumeSizeInGB": 0}

    assert "VolumeSizeInGB 0" in problems_of(spec(ProcessingResources={"ClusterConfig": cluster}))


def test_validate_rejects_bad_role_arn():
    message = problems_of(spec(RoleArn="arn:aws:iam::12345:user/someone"))

    assert "RoleArn 'arn:aws:iam::12345:user/someone' is not an IAM role ARN" in message


def test_validate_rejects_bad_s3_uri():
    body = request()
    body["ProcessingInputs"][0]["S3Input"]["S3Uri"] = "/local/folder"

    message = problems_of(ProcessingJobSpec.from_request(body))

    assert "input 'data' S3Uri '/local/folder'" in message


def test_validate_rejects_too_many_inputs():
    body = request()
    body["ProcessingInputs"] = [
        {
            "InputName": f"in{index}",
            "S3Input": {"S3Uri": "s3://b/k", "LocalPath": f"/opt/ml/processing/in{index}"},
        }
        for index in range(11)
    ]

    assert "ProcessingInputs has 11 items" in problems_of(ProcessingJobSpec.from_request(body))


def test_validate_rejects_empty_entrypoint():
    app = {"ImageUri": "img:1", "ContainerEntrypoint": []}

    assert "ContainerEntrypoint" in problems_of(spec(AppSpecification=app))


def test_validate_lists_every_problem():
    message = problems_of(
        spec(
            ProcessingJobName="bad_name",
            StoppingCondition={"MaxRuntimeInSeconds": 0},
            Environment={"BAD-KEY": "v"},
        )
    )

    assert "ProcessingJobName 'bad_name'" in message
    assert "MaxRuntimeInSeconds 0" in message
    assert "Environment key 'BAD-KEY'" in message


# -- request shape ------------------------------------------------------------------------------


def test_to_request_pascal_case_keys():
    produced = spec().to_request()

    assert set(produced) == {
        "ProcessingJobName",
        "ProcessingInputs",
        "ProcessingOutputConfig",
        "ProcessingResources",
        "StoppingCondition",
        "AppSpecification",
        "Environment",
        "RoleArn",
        "Tags",
    }


def test_to_request_volume_size_in_gb():
    cluster = spec().to_request()["ProcessingResources"]["ClusterConfig"]

    assert cluster == {"InstanceCount": 2, "InstanceType": "ml.m5.xlarge", "VolumeSizeInGB": 30}


def test_to_request_s3_input_keys():
    s3_input = spec().to_request()["ProcessingInputs"][0]["S3Input"]

    assert set(s3_input) == {
        "S3Uri",
        "LocalPath",
        "S3DataType",
        "S3InputMode",
        "S3DataDistributionType",
        "S3CompressionType",
    }


def test_to_request_fills_input_defaults():
    s3_input = spec().to_request()["ProcessingInputs"][1]["S3Input"]

    assert s3_input["S3DataType"] == "S3Prefix"
    assert s3_input["S3InputMode"] == "File"
    assert s3_input["S3DataDistributionType"] == "FullyReplicated"
    assert s3_input["S3CompressionType"] == "None"


def test_to_request_leaves_out_unset_fields():
    produced = spec().to_request()

    assert "KmsKeyId" not in produced["ProcessingOutputConfig"]
    assert "ContainerArguments" not in produced["AppSpecification"]


def test_to_request_keeps_environment_keys():
    assert spec().to_request()["Environment"] == {"LOG_LEVEL": "INFO", "_PRIVATE_1": "x"}


def test_to_request_tags():
    assert spec().to_request()["Tags"] == [{"Key": "project", "Value": "prepflow"}]


def test_request_round_trip():
    original = spec()

    assert ProcessingJobSpec.from_request(original.to_request()) == original


def test_request_round_trip_is_stable():
    produced = spec().to_request()

    assert ProcessingJobSpec.from_request(produced).to_request() == produced


def test_from_request_rejects_unknown_field():
    with pytest.raises(ValidationError):
        ProcessingJobSpec.from_request(request(NetworkConfg={}))


def test_from_request_rejects_bad_data_type():
    body = request()
    body["ProcessingInputs"][0]["S3Input"]["S3DataType"] = "Folder"

    with pytest.raises(ValidationError):
        ProcessingJobSpec.from_request(body)


def test_input_named():
    job = spec()

    assert job.input_named("code").s3_input.local_path == "/opt/ml/processing/input/code"
    assert job.input_named("missing") is None


# -- job lifecycle ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "terminal"),
    [
        (JobStatus.IN_PROGRESS, False),
        (JobStatus.STOPPING, False),
        (JobStatus.COMPLETED, True),
        (JobStatus.FAILED, True),
        (JobStatus.STOPPED, True),
    ],
)
def test_status_terminal(status, terminal):
    assert status.is_terminal is terminal


def test_status_values_match_sagemaker():
    assert [s.value for s in JobStatus] == [
        "InProgress",
        "Completed",
        "Failed",
        "Stopping",
        "Stopped",
    ]
