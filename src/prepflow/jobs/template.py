"""The step that every job runs, and the assembly of one job's request.

The step is the seam where prepflow's built-in step and a user script differ: its command
and its extra inputs (the script's code folder). Everything else in a job request, the data
input, the output, resources and limits, comes from settings and is the same for both.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from prepflow.errors import ConfigurationError
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
)
from prepflow.settings import Settings
from prepflow.storage.base import ObjectStore, s3_uri

# Container paths of the reference deployment, kept so its scripts run unchanged.
DATA_LOCAL_PATH = "/opt/ml/processing/input"
CODE_LOCAL_PATH = "/opt/ml/processing/input/code"
OUTPUT_LOCAL_PATH = "/opt/ml/processing/output"
DATA_INPUT_NAME = "data"
CODE_INPUT_NAME = "code"
OUTPUT_NAME = "processed"
SCRIPTS_PREFIX = "scripts/"


@dataclass(frozen=True)
class StepTemplate:
    """The container command of every job, and the inputs it needs besides the data."""

    entrypoint: tuple[str, ...]
    arguments: tuple[str, ...] = ()
    extra_inputs: tuple[ProcessingInput, ...] = ()
    environment: Mapping[str, str] = field(default_factory=dict)
    description: str = "built-in step"

    @classmethod
    def built_in(cls) -> StepTemplate:
        return cls(entrypoint=("python3", "-m", "prepflow.processing"))

    @classmethod
    def for_script(cls, code_uri: str, file_name: str) -> StepTemplate:
        """Run ``file_name`` from the code folder at ``code_uri``, mounted as SageMaker does."""
        code = ProcessingInput(
            input_name=CODE_INPUT_NAME,
            s3_input=S3Input(s3_uri=code_uri, local_path=CODE_LOCAL_PATH),
        )
        return cls(
            entrypoint=("python3", f"{CODE_LOCAL_PATH}/{file_name}"),
            extra_inputs=(code,),
            description=f"user script {file_name}",
        )


def upload_script(store: ObjectStore, settings: Settings, path: Path) -> StepTemplate:
    """Upload a user script to the model-artifacts bucket and return the step that runs it.

    The folder is named after the script's content hash, so jobs that run different versions
    of a script never share a code folder.
    """
    try:
        content = path.read_bytes()
    except OSError as error:
        raise ConfigurationError(f"cannot read script {str(path)!r}: {error.strerror}") from error
    digest = hashlib.sha256(content).hexdigest()[:16]
    bucket = settings.buckets.model_artifacts
    folder = f"{SCRIPTS_PREFIX}{digest}/"
    store.put_object(bucket, folder + path.name, content)
    return StepTemplate.for_script(s3_uri(bucket, folder), path.name)


def build_spec(
    settings: Settings, step: StepTemplate, *, name: str, manifest_uri: str, output_uri: str
) -> ProcessingJobSpec:
    """Return the CreateProcessingJob request of one job reading exactly the manifest's objects."""
    data = ProcessingInput(
        input_name=DATA_INPUT_NAME,
        s3_input=S3Input(
            s3_uri=manifest_uri, local_path=DATA_LOCAL_PATH, s3_data_type="ManifestFile"
        ),
    )
    output = ProcessingOutput(
        output_name=OUTPUT_NAME,
        s3_output=S3Output(s3_uri=output_uri, local_path=OUTPUT_LOCAL_PATH),
    )
    cluster = ClusterConfig(
        instance_count=settings.processing_instance_count,
        instance_type=settings.processing_instance_type,
        volume_size_in_gb=settings.volume_size_gb,
    )
    return ProcessingJobSpec(
        processing_job_name=name,
        processing_inputs=[data, *step.extra_inputs],
        processing_output_config=ProcessingOutputConfig(outputs=[output]),
        processing_resources=ProcessingResources(cluster_config=cluster),
        stopping_condition=StoppingCondition(max_runtime_in_seconds=settings.max_runtime_seconds),
        app_specification=AppSpecification(
            image_uri=settings.image_uri,
            container_entrypoint=list(step.entrypoint),
            container_arguments=list(step.arguments) or None,
        ),
        environment=dict(step.environment),
        role_arn=settings.role_arn,
    )
