"""The job request against boto3's own SageMaker model, through botocore's Stubber (no network)."""

from __future__ import annotations

import boto3
import pytest
from botocore.exceptions import ParamValidationError
from botocore.stub import Stubber
from botocore.validate import validate_parameters

from prepflow.jobs.spec import (
    AppSpecification,
    ClusterConfig,
    ProcessingInput,
    ProcessingJobSpec,
    ProcessingOutput,
    ProcessingOutputConfig,
    ProcessingResources,
    S3Input,
    S3Output,
    StoppingCondition,
    Tag,
    validate_request,
)

JOB_ARN = "arn:aws:sagemaker:eu-west-1:111122223333:processing-job/prepflow-orders-0123456789ab"


@pytest.fixture
def sagemaker():
    # The endpoint points at a closed local port, so a call that slipped past the Stubber fails
    # at once instead of reaching AWS.
    client = boto3.client(
        "sagemaker",
        region_name="eu-west-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        endpoint_url="http://127.0.0.1:9",
    )
    with Stubber(client) as stubber:
        yield client, stubber
        stubber.assert_no_pending_responses()


def full_spec() -> ProcessingJobSpec:
    return ProcessingJobSpec(
        processing_job_name="prepflow-orders-0123456789ab",
        processing_inputs=[
            ProcessingInput(
                input_name="data",
                s3_input=S3Input(
                    s3_uri="s3://acme-ml-artifacts/manifests/prepflow-orders-0123456789ab.manifest",
                    local_path="/opt/ml/processing/input",
                    s3_data_type="ManifestFile",
                    s3_data_distribution_type="ShardedByS3Key",
                ),
            ),
            ProcessingInput(
                input_name="code",
                s3_input=S3Input(
                    s3_uri="s3://acme-ml-artifacts/scripts/abc/",
                    local_path="/opt/ml/processing/input/code",
                ),
            ),
        ],
        processing_output_config=ProcessingOutputConfig(
            outputs=[
                ProcessingOutput(
                    output_name="processed",
                    s3_output=S3Output(
                        s3_uri="s3://acme-ml-processed/output/prepflow-orders-0123456789ab/",
                        local_path="/opt/ml/processing/output",
                    ),
                )
            ],
            kms_key_id="alias/prepflow",
        ),
        processing_resources=ProcessingResources(
            cluster_config=ClusterConfig(
                instance_count=2, instance_type="ml.m5.xlarge", volume_size_in_gb=30
            )
        ),
        stopping_condition=StoppingCondition(max_runtime_in_seconds=3600),
        app_specification=AppSpecification(
            image_uri="111122223333.dkr.ecr.eu-west-1.amazonaws.com/prepflow:1",
            container_entrypoint=["python3", "/opt/ml/processing/input/code/preprocess.py"],
            container_arguments=["--mode", "strict"],
        ),
        environment={"LOG_LEVEL": "INFO"},
        role_arn="arn:aws:iam::111122223333:role/prepflow-processing",
        tags=[Tag(key="project", value="prepflow")],
    )


def test_request_accepted_by_boto3_model(sagemaker):
    client, stubber = sagemaker
    request = full_spec().to_request()
    stubber.add_response("create_processing_job", {"ProcessingJobArn": JOB_ARN}, request)

    response = client.create_processing_job(**request)

    assert response["ProcessingJobArn"] == JOB_ARN


def test_minimal_request_accepted_by_boto3_model(sagemaker):
    client, stubber = sagemaker
    spec = full_spec().model_copy(update={"environment": {}, "tags": []})
    request = spec.to_request()
    stubber.add_response("create_processing_job", {"ProcessingJobArn": JOB_ARN}, request)

    response = client.create_processing_job(**request)

    assert response["ProcessingJobArn"] == JOB_ARN


def test_valid_spec_passes_both_checks(sagemaker):
    client, stubber = sagemaker
    spec = full_spec()
    validate_request(spec)
    stubber.add_response("create_processing_job", {"ProcessingJobArn": JOB_ARN}, spec.to_request())

    client.create_processing_job(**spec.to_request())


def test_snake_case_keys_rejected_by_boto3(sagemaker):
    client, _ = sagemaker
    input_shape = client.meta.service_model.operation_model("CreateProcessingJob").input_shape
    snake_case = full_spec().model_dump(exclude_none=True)

    with pytest.raises(ParamValidationError):
        validate_parameters(snake_case, input_shape)


def test_request_round_trips_through_boto3_shape(sagemaker):
    client, stubber = sagemaker
    request = full_spec().to_request()
    stubber.add_response("create_processing_job", {"ProcessingJobArn": JOB_ARN}, request)
    client.create_processing_job(**request)

    assert ProcessingJobSpec.from_request(request) == full_spec()
