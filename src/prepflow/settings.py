"""prepflow's settings: one typed object, read once at the edge (CLI or Lambda handler).

Precedence, highest first: a command-line option (passed to ``load_settings`` as an override),
then the environment variable, then the default written below. The first six variables keep
the names of the reference deployment this project grew from, so an existing Lambda
configuration works unchanged. prepflow's own variables start with ``PREPFLOW_``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from prepflow.errors import ConfigurationError, StorageError
from prepflow.jobs.spec import MAX_INSTANCE_COUNT, MAX_RUNTIME_LIMIT_SECONDS, ROLE_ARN_PATTERN
from prepflow.processing.limits import (
    DEFAULT_MAX_DECOMPRESSION_RATIO,
    DEFAULT_MAX_RECORD_BYTES,
    MAX_DECOMPRESSION_RATIO_VARIABLE,
    MAX_RECORD_BYTES_VARIABLE,
)
from prepflow.processing.paths import DATA_SUFFIXES
from prepflow.storage.base import check_bucket_name, check_key, parse_s3_uri

# The local runner never calls AWS, but CreateProcessingJob requires a role ARN; this
# placeholder keeps local job specs identical in shape to the ones sent to SageMaker.
LOCAL_ROLE_ARN = "arn:aws:iam::000000000000:role/prepflow-local-runner"
LOCAL_IMAGE_URI = "prepflow-processing:local"
# Objects of one batch job: DynamoDB writes a job in one transaction of at most 100 items
# (API reference, "TransactWriteItems"): the job item, its idempotency-key item, a marker's
# claim item, and one claim item per object.
MAX_BATCH_OBJECTS = 97


@dataclass(frozen=True)
class Buckets:
    """The deployment's five bucket names."""

    raw: str
    processed: str
    model_artifacts: str
    logs: str
    feature_store: str


class Settings(BaseSettings):
    """Everything prepflow reads from its environment."""

    # Fields are read from their aliases only: with populate_by_name, pydantic-settings would
    # also read a variable named like the field, so HOME would become the prepflow home.
    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="forbid")

    # Names every bucket: "<app_prefix>-raw-data-bucket" and so on.
    app_prefix: str = Field(
        "mlops-lambda-preprocessing-pipeline", validation_alias="APP_PREFIX", min_length=3
    )
    # SageMaker instance type of each processing job; the local runner records it only.
    processing_instance_type: str = Field(
        "ml.t3.medium",
        validation_alias="PROCESSING_INSTANCE_TYPE",
        pattern=r"^ml\.[a-z0-9]+\.[a-z0-9]+$",
    )
    processing_instance_count: int = Field(
        1, validation_alias="PROCESSING_INSTANCE_COUNT", ge=1, le=MAX_INSTANCE_COUNT
    )
    # Version of the prebuilt scikit-learn processing image used when no image URI is set.
    sklearn_version: str = Field("1.2-1", validation_alias="SKLEARN_VERSION")
    # Role that SageMaker assumes for the job; locally a placeholder (LOCAL_ROLE_ARN).
    sagemaker_role_arn: str | None = Field(None, validation_alias="SAGEMAKER_ROLE_ARN")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = Field(
        "INFO", validation_alias="LOG_LEVEL"
    )

    # Root folder of the local mode: buckets, job folders and databases live under it.
    home: Path = Field(Path(".prepflow"), validation_alias="PREPFLOW_HOME")
    region: str = Field(
        "us-east-1", validation_alias=AliasChoices("AWS_REGION", "AWS_DEFAULT_REGION")
    )
    processing_image_uri: str | None = Field(None, validation_alias="PROCESSING_IMAGE_URI")
    # Objects under this prefix of the raw-data bucket start jobs, if their name ends with
    # one of the suffixes (compared in lower case).
    input_prefix: str = Field("input/", validation_alias="PREPFLOW_INPUT_PREFIX")
    input_suffixes: Annotated[tuple[str, ...], NoDecode] = Field(
        DATA_SUFFIXES, validation_alias="PREPFLOW_INPUT_SUFFIXES", min_length=1
    )
    # Seconds over which new objects are collected into one job; 0 starts one job per
    # object. Locally the watcher waits this long after the first settled file. On AWS the
    # SQS event source's batching window collects, and any value above 0 makes the trigger
    # function start one job per SQS batch.
    batch_window_seconds: float = Field(
        0.0, validation_alias="PREPFLOW_BATCH_WINDOW_SECONDS", ge=0, le=3600
    )
    # Objects per batch job; a larger batch is split into several jobs.
    batch_max_objects: int = Field(
        MAX_BATCH_OBJECTS, validation_alias="PREPFLOW_BATCH_MAX_OBJECTS", ge=1, le=MAX_BATCH_OBJECTS
    )
    # File name of the marker object (usually _SUCCESS) that starts one job over the data
    # objects of its folder; data objects alone then start nothing. Empty turns marker mode off.
    marker: str = Field("", validation_alias="PREPFLOW_MARKER", pattern=r"^[^/]*$", max_length=255)
    # Processed data goes under this prefix of the processed-data bucket, one folder per job.
    output_prefix: str = Field("output/", validation_alias="PREPFLOW_OUTPUT_PREFIX")
    # Readable start of every job name; SageMaker permissions are scoped to "<prefix>-*".
    job_name_prefix: str = Field(
        "prepflow", validation_alias="PREPFLOW_JOB_NAME_PREFIX", pattern=r"^[a-zA-Z0-9]{1,20}$"
    )
    max_runtime_seconds: int = Field(
        3600, validation_alias="PREPFLOW_MAX_RUNTIME_SECONDS", ge=1, le=MAX_RUNTIME_LIMIT_SECONDS
    )
    # Jobs the local runner runs at once, across every prepflow process sharing one home;
    # the others wait for a free slot. Unset means one per CPU.
    max_concurrent_jobs: int = Field(
        default_factory=lambda: os.cpu_count() or 1,
        validation_alias="PREPFLOW_MAX_CONCURRENT_JOBS",
        ge=1,
        le=256,
    )
    # Isolation of a job's command: "namespace" (private mount and PID namespaces, Linux only,
    # so scripts find /opt/ml unmodified), "none" (a plain process that finds its folder in
    # PREPFLOW_ML_ROOT), or "auto" (namespace where possible, else none for the built-in step).
    isolation: Literal["auto", "namespace", "none"] = Field(
        "auto", validation_alias="PREPFLOW_ISOLATION"
    )
    # Jobs started for one object, the first included, when a job fails for a reason a new
    # attempt may not meet: its local runner process died, or its command was killed by a
    # signal. Each new attempt is a new job with a name of its own; 1 turns re-drives off.
    job_attempts: int = Field(3, validation_alias="PREPFLOW_JOB_ATTEMPTS", ge=1, le=20)
    # The built-in step rejects a record (a CSV row or a JSON line) longer than this many
    # bytes, and a gzip input that expands more than this many times its compressed size.
    # Both reach the job through its Environment.
    max_record_bytes: int = Field(
        DEFAULT_MAX_RECORD_BYTES, validation_alias=MAX_RECORD_BYTES_VARIABLE, ge=1
    )
    max_decompression_ratio: int = Field(
        DEFAULT_MAX_DECOMPRESSION_RATIO, validation_alias=MAX_DECOMPRESSION_RATIO_VARIABLE, ge=1
    )
    # ProcessingClusterConfig.VolumeSizeInGB: 1 to 16,384.
    volume_size_gb: int = Field(30, validation_alias="PREPFLOW_VOLUME_SIZE_GB", ge=1, le=16384)
    # Seconds a write to a local SQLite database (jobs.db, store.db) waits for a lock that
    # another process holds, retrying with backoff, before it fails and names the file.
    db_lock_wait_seconds: float = Field(
        60.0, validation_alias="PREPFLOW_DB_LOCK_WAIT_SECONDS", gt=0, le=3600
    )

    # AWS deployment: the DynamoDB table of job records (default "<APP_PREFIX>-jobs"), the SNS
    # topic for terminal job states, and how often a submission turned down for capacity
    # (ResourceLimitExceeded) or throttling is tried before the job is marked Failed.
    jobs_table: str | None = Field(None, validation_alias="PREPFLOW_JOBS_TABLE")
    topic_arn: str | None = Field(None, validation_alias="PREPFLOW_TOPIC_ARN")
    submit_attempts: int = Field(8, validation_alias="PREPFLOW_SUBMIT_ATTEMPTS", ge=1, le=100)

    # The step a deployment's trigger starts. A script (s3:// URI of a .py file) runs under the
    # container contract, as the reference does on the prebuilt scikit-learn image. Without
    # one, the built-in step runs: it needs prepflow's image (PROCESSING_IMAGE_URI), and reads
    # the recipe at PREPFLOW_RECIPE_URI when one is set.
    # The deployment's trigger Lambda, which `prepflow doctor --target aws` inspects.
    trigger_function_name: str | None = Field(None, validation_alias="PREPFLOW_TRIGGER_FUNCTION")
    step_script_uri: str | None = Field(None, validation_alias="PREPFLOW_STEP_SCRIPT_URI")
    recipe_uri: str | None = Field(None, validation_alias="PREPFLOW_RECIPE_URI")

    raw_bucket: str | None = Field(None, validation_alias="PREPFLOW_RAW_BUCKET")
    processed_bucket: str | None = Field(None, validation_alias="PREPFLOW_PROCESSED_BUCKET")
    model_artifacts_bucket: str | None = Field(
        None, validation_alias="PREPFLOW_MODEL_ARTIFACTS_BUCKET"
    )
    logs_bucket: str | None = Field(None, validation_alias="PREPFLOW_LOGS_BUCKET")
    feature_store_bucket: str | None = Field(None, validation_alias="PREPFLOW_FEATURE_STORE_BUCKET")

    @field_validator("input_prefix", "output_prefix")
    @classmethod
    def _prefix_is_folder(cls, value: str) -> str:
        folder = value if value == "" or value.endswith("/") else value + "/"
        if folder:
            try:
                check_key(folder)
            except StorageError as error:
                raise ValueError(
                    "must be a relative S3 prefix without empty, '.' or '..' segments, "
                    "for example input/ or output/"
                ) from error
        return folder

    @field_validator(
        "raw_bucket",
        "processed_bucket",
        "model_artifacts_bucket",
        "logs_bucket",
        "feature_store_bucket",
    )
    @classmethod
    def _valid_bucket(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                check_bucket_name(value)
            except StorageError as error:
                raise ValueError(str(error)) from error
        return value

    @field_validator("step_script_uri", "recipe_uri")
    @classmethod
    def _object_uri(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                key = parse_s3_uri(value)[1]
                check_key(key)
            except StorageError as error:
                raise ValueError(f"expected the s3:// URI of one object: {error}") from error
            if key.endswith("/"):
                raise ValueError("expected the s3:// URI of one object, not of a folder")
        return value

    @field_validator("sagemaker_role_arn")
    @classmethod
    def _valid_role(cls, value: str | None) -> str | None:
        if value is not None and not ROLE_ARN_PATTERN.match(value):
            raise ValueError(
                "expected an IAM role ARN: arn:aws:iam::<12-digit account>:role/<name>"
            )
        return value

    @field_validator("home", mode="before")
    @classmethod
    def _home_given(cls, value: Any) -> Any:
        if str(value).strip() == "" or Path(str(value)).resolve() == Path("/"):
            raise ValueError("must name a folder other than '' or '/', e.g. ./.prepflow")
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _derived_buckets_valid(self) -> Settings:
        for name in vars(self.buckets).values():
            try:
                check_bucket_name(name)
            except StorageError as error:
                raise ValueError(
                    f"APP_PREFIX {self.app_prefix!r} gives {error}; use at most 40 lowercase "
                    "letters, digits and hyphens"
                ) from error
        return self

    @field_validator("input_suffixes", mode="before")
    @classmethod
    def _split_suffixes(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, list | tuple):
            return tuple(s.lower() if s.startswith(".") else "." + s.lower() for s in value)
        return value

    @property
    def buckets(self) -> Buckets:
        prefix = self.app_prefix
        return Buckets(
            raw=self.raw_bucket or f"{prefix}-raw-data-bucket",
            processed=self.processed_bucket or f"{prefix}-processed-data-bucket",
            model_artifacts=self.model_artifacts_bucket or f"{prefix}-model-artifacts-bucket",
            logs=self.logs_bucket or f"{prefix}-logs-bucket",
            feature_store=self.feature_store_bucket or f"{prefix}-feature-store-bucket",
        )

    @property
    def trigger_function(self) -> str:
        return self.trigger_function_name or f"{self.app_prefix}-trigger"

    @property
    def table_name(self) -> str:
        return self.jobs_table or f"{self.app_prefix}-jobs"

    @property
    def role_arn(self) -> str:
        return self.sagemaker_role_arn or LOCAL_ROLE_ARN

    @property
    def image_uri(self) -> str:
        return self.processing_image_uri or LOCAL_IMAGE_URI


def load_settings(**overrides: Any) -> Settings:
    """Build Settings from command-line overrides (None means 'not given') and the environment.

    Overrides are keyed by field name. Raises ConfigurationError naming the variable, the
    bad value and what is allowed.
    """
    unknown = sorted(set(overrides) - set(Settings.model_fields))
    if unknown:
        raise ConfigurationError(f"unknown settings {unknown}; known: {sorted(_ENV_NAMES)}")
    values = {_ENV_NAMES[name]: value for name, value in overrides.items() if value is not None}
    try:
        return Settings(**values)
    except ValidationError as error:
        raise ConfigurationError(_describe_validation_error(error)) from error


def _describe_validation_error(error: ValidationError) -> str:
    lines = []
    for problem in error.errors():
        message = problem["msg"].removeprefix("Value error, ")
        if not problem["loc"]:
            lines.append(message)
            continue
        field = ".".join(str(part) for part in problem["loc"])
        env_name = _ENV_NAMES.get(field, field)
        lines.append(f"{env_name}={problem.get('input')!r}: {message}")
    lines.append("fix the variable or the command-line option and run again")
    return "invalid configuration: " + "; ".join(lines)


def _env_name(field_name: str) -> str:
    alias = Settings.model_fields[field_name].validation_alias
    if isinstance(alias, AliasChoices):
        return str(alias.choices[0])
    return str(alias or field_name)


_ENV_NAMES = {name: _env_name(name) for name in Settings.model_fields}
