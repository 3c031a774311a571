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

from prepflow.errors import ConfigurationError, JobSpecError, ObjectNotFoundError, StorageError
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
    check_job_name,
)
from prepflow.processing.limits import (
    DEFAULT_MAX_DECOMPRESSION_RATIO,
    DEFAULT_MAX_RECORD_BYTES,
    MAX_DECOMPRESSION_RATIO_VARIABLE,
    MAX_RECORD_BYTES_VARIABLE,
)
from prepflow.processing.paths import ARTIFACTS_FILE
from prepflow.settings import Settings
from prepflow.storage.base import ObjectStore, check_key, parse_s3_uri, s3_uri

# Container paths of the reference deployment, kept so its scripts run unchanged.
DATA_LOCAL_PATH = "/opt/ml/processing/input"
CODE_LOCAL_PATH = "/opt/ml/processing/input/code"
OUTPUT_LOCAL_PATH = "/opt/ml/processing/output"
DATA_INPUT_NAME = "data"
CODE_INPUT_NAME = "code"
OUTPUT_NAME = "processed"
SCRIPTS_PREFIX = "scripts/"
RECIPES_PREFIX = "recipes/"
# The built-in step's other outputs and inputs, outside the data folder so they are never data.
RECIPE_INPUT_NAME = "recipe"
RECIPE_LOCAL_PATH = "/opt/ml/processing/recipe"
FITTED_INPUT_NAME = "fitted"
FITTED_LOCAL_PATH = "/opt/ml/processing/fitted"
REJECTED_OUTPUT = ("rejected", "/opt/ml/processing/rejected")
REPORT_OUTPUT = ("report", "/opt/ml/processing/report")
ARTIFACTS_OUTPUT = ("artifacts", "/opt/ml/processing/artifacts")
REJECTED_PREFIX = "rejected/"
REPORTS_PREFIX = "reports/"
ARTIFACTS_PREFIX = "artifacts/"


@dataclass(frozen=True)
class StepTemplate:
    """The container command of every job, and the inputs it needs besides the data."""

    entrypoint: tuple[str, ...]
    arguments: tuple[str, ...] = ()
    extra_inputs: tuple[ProcessingInput, ...] = ()
    environment: Mapping[str, str] = field(default_factory=dict)
    description: str = "built-in step"
    # The built-in step writes rejected rows, a report and fitted parameters besides the data.
    side_outputs: bool = False

    @classmethod
    def built_in(cls, extra_inputs: tuple[ProcessingInput, ...] = ()) -> StepTemplate:
        return cls(
            entrypoint=("python3", "-m", "prepflow.processing"),
            extra_inputs=extra_inputs,
            side_outputs=True,
        )

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


def upload_recipe(store: ObjectStore, settings: Settings, path: Path) -> StepTemplate:
    """Validate a recipe, upload it to the model-artifacts bucket, return the step that uses it.

    Raises RecipeError before anything is uploaded when the recipe is invalid or cannot run
    on PROCESSING_INSTANCE_COUNT instances, and ConfigurationError when the artifacts it
    applies do not exist.
    """
    # Imported here: the recipe model needs PyYAML, which the Lambda handlers never load.
    from prepflow.processing.recipe import check_shardable, load_recipe

    recipe = load_recipe(path)
    check_shardable(recipe, settings.processing_instance_count, source=f"recipe {str(path)!r}")
    content = path.read_bytes()
    digest = hashlib.sha256(content).hexdigest()[:16]
    bucket = settings.buckets.model_artifacts
    folder = f"{RECIPES_PREFIX}{digest}/"
    store.put_object(bucket, folder + "recipe.yaml", content)
    inputs = [
        ProcessingInput(
            input_name=RECIPE_INPUT_NAME,
            s3_input=S3Input(s3_uri=s3_uri(bucket, folder), local_path=RECIPE_LOCAL_PATH),
        )
    ]
    if recipe.artifacts.apply is not None:
        fitted_uri = _deployed_artifacts_uri(settings, recipe.artifacts.apply)
        fitted_bucket, fitted_key = parse_s3_uri(fitted_uri)
        try:
            store.head_object(fitted_bucket, fitted_key)
        except ObjectNotFoundError as error:
            raise ConfigurationError(
                f"the recipe applies artifacts {recipe.artifacts.apply!r}, but {fitted_uri} does "
                "not exist; name a job that fitted parameters, or the S3 URI of its "
                "artifacts.json"
            ) from error
        inputs.append(
            ProcessingInput(
                input_name=FITTED_INPUT_NAME,
                s3_input=S3Input(s3_uri=fitted_uri, local_path=FITTED_LOCAL_PATH),
            )
        )
    return StepTemplate.built_in(extra_inputs=tuple(inputs))


def deployed_step(settings: Settings) -> StepTemplate:
    """Return the step a deployment's trigger starts, from its settings.

    ``PREPFLOW_STEP_SCRIPT_URI`` runs that script from its folder, as the reference does;
    otherwise the built-in step runs, with the recipe at ``PREPFLOW_RECIPE_URI`` if set. The
    recipe input's prefix is the object's own key, so only that file is staged.
    """
    if settings.step_script_uri:
        bucket, key = parse_s3_uri(settings.step_script_uri)
        folder, _, file_name = key.rpartition("/")
        return StepTemplate.for_script(s3_uri(bucket, f"{folder}/" if folder else ""), file_name)
    if settings.recipe_uri:
        recipe = ProcessingInput(
            input_name=RECIPE_INPUT_NAME,
            s3_input=S3Input(s3_uri=settings.recipe_uri, local_path=RECIPE_LOCAL_PATH),
        )
        return StepTemplate.built_in(extra_inputs=(recipe,))
    return StepTemplate.built_in()


def artifacts_uri(settings: Settings, reference: str) -> str:
    """Return the artifacts.json URI of a job name, or the URI itself when given one."""
    if reference.startswith("s3://"):
        return reference
    key = f"{ARTIFACTS_PREFIX}{reference}/{ARTIFACTS_FILE}"
    return s3_uri(settings.buckets.model_artifacts, key)


def _deployed_artifacts_uri(settings: Settings, reference: str) -> str:
    """Return the URI ``artifacts.apply`` names; raise unless it lies in the deployment.

    A job reads what the recipe applies, so it must be a job name or an object of the
    model-artifacts bucket, never a path elsewhere.
    """
    bucket = settings.buckets.model_artifacts
    try:
        if not reference.startswith("s3://"):
            check_job_name(reference)
        uri = artifacts_uri(settings, reference)
        uri_bucket, key = parse_s3_uri(uri)
        check_key(key)
    except (JobSpecError, StorageError) as error:
        raise ConfigurationError(
            f"artifacts.apply {reference!r} is invalid: {error}; give the name of a job that "
            f"fitted parameters, or the s3://{bucket}/... URI of its artifacts.json"
        ) from error
    if uri_bucket != bucket:
        raise ConfigurationError(
            f"artifacts.apply {reference!r} is outside the model-artifacts bucket "
            f"s3://{bucket}/; give the name of a job that fitted parameters, or the URI of its "
            "artifacts.json in that bucket"
        )
    return uri


def side_output_uris(settings: Settings, job_name: str) -> dict[str, str]:
    """Return where the built-in step's rejected rows, report and artifacts of a job go."""
    buckets = settings.buckets
    return {
        REJECTED_OUTPUT[0]: s3_uri(buckets.processed, f"{REJECTED_PREFIX}{job_name}/"),
        REPORT_OUTPUT[0]: s3_uri(buckets.logs, f"{REPORTS_PREFIX}{job_name}/"),
        ARTIFACTS_OUTPUT[0]: s3_uri(buckets.model_artifacts, f"{ARTIFACTS_PREFIX}{job_name}/"),
    }


def build_spec(
    settings: Settings, step: StepTemplate, *, name: str, manifest_uri: str, output_uri: str
) -> ProcessingJobSpec:
    """Return the CreateProcessingJob request of one job reading exactly the manifest's objects.

    On several instances the data input is ShardedByS3Key, so each instance reads its share
    of the objects; the other inputs (code, recipe, fitted parameters) reach every instance.
    """
    sharded = settings.processing_instance_count > 1
    data = ProcessingInput(
        input_name=DATA_INPUT_NAME,
        s3_input=S3Input(
            s3_uri=manifest_uri,
            local_path=DATA_LOCAL_PATH,
            s3_data_type="ManifestFile",
            s3_data_distribution_type="ShardedByS3Key" if sharded else "FullyReplicated",
        ),
    )
    outputs = [
        ProcessingOutput(
            output_name=OUTPUT_NAME,
            s3_output=S3Output(s3_uri=output_uri, local_path=OUTPUT_LOCAL_PATH),
        )
    ]
    if step.side_outputs:
        uris = side_output_uris(settings, name)
        outputs += [
            ProcessingOutput(
                output_name=output_name,
                s3_output=S3Output(s3_uri=uris[output_name], local_path=local_path),
            )
            for output_name, local_path in (REJECTED_OUTPUT, REPORT_OUTPUT, ARTIFACTS_OUTPUT)
        ]
    cluster = ClusterConfig(
        instance_count=settings.processing_instance_count,
        instance_type=settings.processing_instance_type,
        volume_size_in_gb=settings.volume_size_gb,
    )
    return ProcessingJobSpec(
        processing_job_name=name,
        processing_inputs=[data, *step.extra_inputs],
        processing_output_config=ProcessingOutputConfig(outputs=outputs),
        processing_resources=ProcessingResources(cluster_config=cluster),
        stopping_condition=StoppingCondition(max_runtime_in_seconds=settings.max_runtime_seconds),
        app_specification=AppSpecification(
            image_uri=settings.image_uri,
            container_entrypoint=list(step.entrypoint),
            container_arguments=list(step.arguments) or None,
        ),
        environment=_environment(settings, step),
        role_arn=settings.role_arn,
    )


def _environment(settings: Settings, step: StepTemplate) -> dict[str, str]:
    """Return the job's environment: the step's own, plus the built-in step's read limits.

    A limit left at its default is not written, since the step applies the same default.
    """
    environment = dict(step.environment)
    if step.side_outputs:
        limits = {
            MAX_RECORD_BYTES_VARIABLE: (settings.max_record_bytes, DEFAULT_MAX_RECORD_BYTES),
            MAX_DECOMPRESSION_RATIO_VARIABLE: (
                settings.max_decompression_ratio,
                DEFAULT_MAX_DECOMPRESSION_RATIO,
            ),
        }
        environment |= {
            name: str(value) for name, (value, default) in limits.items() if value != default
        }
    return environment


def renamed_spec(spec: ProcessingJobSpec, name: str, manifest_uri: str) -> ProcessingJobSpec:
    """Return ``spec`` as a new job ``name`` reading the manifest at ``manifest_uri``.

    Everything else (command, recipe, resources, limits) stays as it was. Outputs whose S3
    prefix ends in the old job's name (``output/<job-name>/`` and the built-in step's side
    outputs) move to the new name, so two attempts never write to one place. An output
    chosen by a manual request keeps its URI.
    """
    old_suffix = f"/{spec.name}/"
    inputs = []
    for item in spec.processing_inputs:
        if item.s3_input.s3_data_type == "ManifestFile":
            s3_input = item.s3_input.model_copy(update={"s3_uri": manifest_uri})
            item = item.model_copy(update={"s3_input": s3_input})
        inputs.append(item)
    outputs = []
    for output in spec.processing_output_config.outputs:
        uri = output.s3_output.s3_uri
        if uri.endswith(old_suffix):
            uri = uri[: -len(old_suffix)] + f"/{name}/"
        s3_output = output.s3_output.model_copy(update={"s3_uri": uri})
        outputs.append(output.model_copy(update={"s3_output": s3_output}))
    return spec.model_copy(
        update={
            "processing_job_name": name,
            "processing_inputs": inputs,
            "processing_output_config": ProcessingOutputConfig(outputs=outputs),
        }
    )
