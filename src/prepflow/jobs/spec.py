"""The processing-job request (``CreateProcessingJob``), the job lifecycle and SageMaker's limits.

One typed request serves both backends: ``ProcessingJobSpec.to_request()`` is the keyword
arguments of boto3's ``sagemaker.create_processing_job``, and the local runner executes the
same object. Limits and patterns come from the SageMaker API reference pages
``API_CreateProcessingJob``, ``API_ProcessingS3Input``, ``API_ProcessingS3Output``,
``API_ProcessingClusterConfig`` and ``API_AppSpecification``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_pascal

from prepflow.errors import JobSpecError

# ProcessingJobName: 1 to 63 characters; unique per account and region.
JOB_NAME_PATTERN = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
JOB_NAME_MAX_LENGTH = 63
# StoppingCondition.MaxRuntimeInSeconds for processing jobs: 1 second to 9 days.
MAX_RUNTIME_LIMIT_SECONDS = 777_600
# ProcessingClusterConfig.InstanceCount.
MAX_INSTANCE_COUNT = 100
MAX_INPUTS = 10
MAX_OUTPUTS = 10
MAX_ENVIRONMENT_ENTRIES = 100
MAX_ENVIRONMENT_VALUE_LENGTH = 256
MAX_ENTRYPOINT_ITEMS = 100
MAX_ARGUMENT_ITEMS = 256
MAX_ARGUMENT_LENGTH = 256
MAX_S3_URI_LENGTH = 1024
MAX_LOCAL_PATH_LENGTH = 256
# FailureReason and ExitMessage are cut to 1 KB by SageMaker.
MAX_REASON_LENGTH = 1024
# Every input and output LocalPath must begin with this folder.
PROCESSING_ROOT = "/opt/ml/processing/"
ENV_KEY_PATTERN = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
S3_URI_PATTERN = re.compile(r"^(https|s3)://([^/]+)/?(.*)$")
ROLE_ARN_PATTERN = re.compile(r"^arn:aws[a-z\-]*:iam::\d{12}:role/?[a-zA-Z_0-9+=,.@\-_/]+$")


class JobStatus(StrEnum):
    """ProcessingJobStatus, exactly as DescribeProcessingJob returns it."""

    IN_PROGRESS = "InProgress"
    COMPLETED = "Completed"
    FAILED = "Failed"
    STOPPING = "Stopping"
    STOPPED = "Stopped"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.STOPPED})

# The only status changes a job may make; a terminal status never changes again. A job asked
# to stop may still end Completed or Failed: SageMaker reports whichever came first.
LEGAL_TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.IN_PROGRESS: frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.STOPPING}),
    JobStatus.STOPPING: frozenset({JobStatus.STOPPED, JobStatus.COMPLETED, JobStatus.FAILED}),
    JobStatus.COMPLETED: frozenset(),
    JobStatus.FAILED: frozenset(),
    JobStatus.STOPPED: frozenset(),
}


class _RequestModel(BaseModel):
    """A part of the CreateProcessingJob request; field aliases are the API's PascalCase names."""

    model_config = ConfigDict(
        alias_generator=to_pascal, populate_by_name=True, frozen=True, extra="forbid"
    )


class S3Input(_RequestModel):
    s3_uri: str
    local_path: str
    s3_data_type: Literal["S3Prefix", "ManifestFile"] = "S3Prefix"
    s3_input_mode: Literal["File", "Pipe"] = "File"
    s3_data_distribution_type: Literal["FullyReplicated", "ShardedByS3Key"] = "FullyReplicated"
    s3_compression_type: Literal["None", "Gzip"] = "None"


class ProcessingInput(_RequestModel):
    input_name: str
    s3_input: S3Input
    app_managed: bool = False


class S3Output(_RequestModel):
    s3_uri: str
    local_path: str
    s3_upload_mode: Literal["EndOfJob", "Continuous"] = "EndOfJob"


class ProcessingOutput(_RequestModel):
    output_name: str
    s3_output: S3Output
    app_managed: bool = False


class ProcessingOutputConfig(_RequestModel):
    outputs: list[ProcessingOutput]
    kms_key_id: str | None = None


class ClusterConfig(_RequestModel):
    instance_count: int
    instance_type: str
    volume_size_in_gb: int = Field(alias="VolumeSizeInGB")


class ProcessingResources(_RequestModel):
    cluster_config: ClusterConfig


class StoppingCondition(_RequestModel):
    max_runtime_in_seconds: int


class AppSpecification(_RequestModel):
    image_uri: str
    container_entrypoint: list[str] | None = None
    container_arguments: list[str] | None = None


class Tag(_RequestModel):
    key: str
    value: str


class ProcessingJobSpec(_RequestModel):
    """The whole CreateProcessingJob request."""

    processing_job_name: str
    processing_inputs: list[ProcessingInput]
    processing_output_config: ProcessingOutputConfig
    processing_resources: ProcessingResources
    stopping_condition: StoppingCondition
    app_specification: AppSpecification
    role_arn: str
    environment: dict[str, str] = Field(default_factory=dict)
    tags: list[Tag] = Field(default_factory=list)

    def to_request(self) -> dict[str, Any]:
        """Return the keyword arguments of boto3's ``create_processing_job``."""
        return self.model_dump(by_alias=True, exclude_none=True)

    @classmethod
    def from_request(cls, request: dict[str, Any]) -> ProcessingJobSpec:
        return cls.model_validate(request)

    @property
    def name(self) -> str:
        return self.processing_job_name

    def input_named(self, name: str) -> ProcessingInput | None:
        return next((i for i in self.processing_inputs if i.input_name == name), None)


class JobDescription(BaseModel):
    """A backend's report on one job, shaped like the DescribeProcessingJob response."""

    model_config = ConfigDict(frozen=True)

    job_name: str
    status: JobStatus
    failure_reason: str | None = None
    exit_message: str | None = None
    creation_time: datetime | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None


def validate_request(spec: ProcessingJobSpec) -> None:
    """Raise JobSpecError listing every rule of SageMaker's that the request breaks."""
    problems = [
        *_name_problems(spec.processing_job_name),
        *_input_problems(spec.processing_inputs),
        *_output_problems(spec.processing_output_config.outputs),
        *_local_path_problems(spec),
        *_resource_problems(spec),
        *_app_problems(spec.app_specification),
        *_environment_problems(spec.environment),
    ]
    if not ROLE_ARN_PATTERN.match(spec.role_arn):
        problems.append(f"RoleArn {spec.role_arn!r} is not an IAM role ARN")
    if problems:
        raise JobSpecError(
            f"invalid processing job request {spec.processing_job_name!r}: " + "; ".join(problems)
        )


def check_job_name(name: str) -> None:
    """Raise JobSpecError when SageMaker would reject ``name`` as a ProcessingJobName."""
    problems = list(_name_problems(name))
    if problems:
        raise JobSpecError("; ".join(problems))


def _name_problems(name: str) -> Iterable[str]:
    if not JOB_NAME_PATTERN.match(name):
        yield (
            f"ProcessingJobName {name!r} must be 1 to {JOB_NAME_MAX_LENGTH} letters, digits or "
            "hyphens, starting and ending with a letter or digit"
        )


def _duplicates(values: Iterable[str]) -> list[str]:
    seen: set[str] = set()
    repeated: list[str] = []
    for value in values:
        if value in seen and value not in repeated:
            repeated.append(value)
        seen.add(value)
    return repeated


def _uri_problems(field: str, uri: str) -> Iterable[str]:
    if len(uri) > MAX_S3_URI_LENGTH or not S3_URI_PATTERN.match(uri):
        yield f"{field} {uri!r} is not an S3 URI of at most {MAX_S3_URI_LENGTH} characters"


def _input_problems(inputs: list[ProcessingInput]) -> Iterable[str]:
    if len(inputs) > MAX_INPUTS:
        yield f"ProcessingInputs has {len(inputs)} items, at most {MAX_INPUTS} are allowed"
    for name in _duplicates(i.input_name for i in inputs):
        yield f"InputName {name!r} is used by more than one input"
    for item in inputs:
        yield from _uri_problems(f"input {item.input_name!r} S3Uri", item.s3_input.s3_uri)


def _output_problems(outputs: list[ProcessingOutput]) -> Iterable[str]:
    if len(outputs) > MAX_OUTPUTS:
        yield f"ProcessingOutputs has {len(outputs)} items, at most {MAX_OUTPUTS} are allowed"
    for name in _duplicates(o.output_name for o in outputs):
        yield f"OutputName {name!r} is used by more than one output"
    for item in outputs:
        yield from _uri_problems(f"output {item.output_name!r} S3Uri", item.s3_output.s3_uri)


def _local_path_problems(spec: ProcessingJobSpec) -> Iterable[str]:
    input_paths = [i.s3_input.local_path for i in spec.processing_inputs]
    output_paths = [o.s3_output.local_path for o in spec.processing_output_config.outputs]
    for path in _duplicates(input_paths):
        yield f"LocalPath {path!r} is used by more than one input"
    for path in _duplicates(output_paths):
        yield f"LocalPath {path!r} is used by more than one output"
    for path in input_paths + output_paths:
        normalized = path.rstrip("/") + "/"
        if not normalized.startswith(PROCESSING_ROOT) or normalized == PROCESSING_ROOT:
            yield f"LocalPath {path!r} must be a folder under {PROCESSING_ROOT}"
        elif "/../" in normalized or "/./" in normalized or len(path) > MAX_LOCAL_PATH_LENGTH:
            yield f"LocalPath {path!r} must be a plain absolute path of at most 256 characters"


def _resource_problems(spec: ProcessingJobSpec) -> Iterable[str]:
    cluster = spec.processing_resources.cluster_config
    if not 1 <= cluster.instance_count <= MAX_INSTANCE_COUNT:
        yield f"InstanceCount {cluster.instance_count} must be from 1 to {MAX_INSTANCE_COUNT}"
    if cluster.volume_size_in_gb < 1:
        yield f"VolumeSizeInGB {cluster.volume_size_in_gb} must be at least 1"
    runtime = spec.stopping_condition.max_runtime_in_seconds
    if not 1 <= runtime <= MAX_RUNTIME_LIMIT_SECONDS:
        yield f"MaxRuntimeInSeconds {runtime} must be from 1 to {MAX_RUNTIME_LIMIT_SECONDS}"


def _app_problems(app: AppSpecification) -> Iterable[str]:
    entrypoint = app.container_entrypoint or []
    arguments = app.container_arguments or []
    if app.container_entrypoint is not None and not 1 <= len(entrypoint) <= MAX_ENTRYPOINT_ITEMS:
        yield f"ContainerEntrypoint must have 1 to {MAX_ENTRYPOINT_ITEMS} items"
    if app.container_arguments is not None and not 1 <= len(arguments) <= MAX_ARGUMENT_ITEMS:
        yield f"ContainerArguments must have 1 to {MAX_ARGUMENT_ITEMS} items"
    for item in entrypoint + arguments:
        if len(item) > MAX_ARGUMENT_LENGTH:
            yield f"container argument {item[:40]!r}... is longer than {MAX_ARGUMENT_LENGTH}"


def _environment_problems(environment: dict[str, str]) -> Iterable[str]:
    if len(environment) > MAX_ENVIRONMENT_ENTRIES:
        yield f"Environment has {len(environment)} entries, at most 100 are allowed"
    for key, value in environment.items():
        if not ENV_KEY_PATTERN.match(key) or len(key) > MAX_ENVIRONMENT_VALUE_LENGTH:
            yield f"Environment key {key!r} must match [a-zA-Z_][a-zA-Z0-9_]*"
        if len(value) > MAX_ENVIRONMENT_VALUE_LENGTH:
            yield f"Environment value of {key!r} is longer than {MAX_ENVIRONMENT_VALUE_LENGTH}"
