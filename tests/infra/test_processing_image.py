"""The processing image asset and the processing role's grants, in the synthesized assembly.

The assembly is read from disk (template and asset manifest), because the Docker image asset
appears in the asset manifest, not in the template.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from infra.app import add_stack, new_app
from infra.config import ENVIRONMENTS, DeploymentConfig, deployment_settings, env_name
from infra.processing import DOCKERFILE, FEATURES_PREFIX

from tests.infra.policy import PARTITION, PolicyEvaluator

ROOT = Path(__file__).resolve().parents[2]
# What an ECR push needs; the processing role must have none of them.
ECR_PUSH_ACTIONS = (
    "ecr:PutImage",
    "ecr:InitiateLayerUpload",
    "ecr:UploadLayerPart",
    "ecr:CompleteLayerUpload",
    "ecr:BatchDeleteImage",
)
ECR_PULL_ACTIONS = {
    "ecr:BatchCheckLayerAvailability",
    "ecr:GetDownloadUrlForLayer",
    "ecr:BatchGetImage",
}
USER_IMAGE_URI = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/own-processing:1.0"


@dataclasses.dataclass(frozen=True)
class Assembly:
    """One synthesized stack: its folder, template and asset manifest."""

    directory: Path
    template: dict[str, Any]
    assets: dict[str, Any]
    config: DeploymentConfig

    @property
    def resources(self) -> dict[str, dict[str, Any]]:
        return dict(self.template["Resources"])

    def of_type(self, resource_type: str) -> dict[str, dict[str, Any]]:
        return {k: v for k, v in self.resources.items() if v["Type"] == resource_type}


def synthesize(config: DeploymentConfig, code: Path, outdir: Path) -> Assembly:
    app = new_app(outdir)
    stack = add_stack(app, config, code)
    app.synth()
    return Assembly(
        directory=outdir,
        template=json.loads((outdir / stack.template_file).read_text()),
        assets=json.loads((outdir / f"{stack.artifact_id}.assets.json").read_text()),
        config=config,
    )


@pytest.fixture(scope="module")
def assemblies(
    lambda_code: Path,
    configs: dict[str, DeploymentConfig],
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Assembly]:
    return {
        environment: synthesize(config, lambda_code, tmp_path_factory.mktemp(environment))
        for environment, config in configs.items()
    }


def with_settings(config: DeploymentConfig, **variables: str) -> DeploymentConfig:
    settings = deployment_settings({"APP_PREFIX": config.app_prefix, **variables})
    return dataclasses.replace(config, settings=settings)


def logical_id_of(assembly: Assembly, resource_type: str, name_key: str, name: str) -> str:
    found = [
        logical_id
        for logical_id, resource in assembly.of_type(resource_type).items()
        if resource["Properties"].get(name_key) == name
    ]
    assert len(found) == 1, f"expected one {resource_type} named {name}, found {found}"
    return found[0]


def processing_role(assembly: Assembly) -> tuple[PolicyEvaluator, str]:
    """Return an evaluator of the template and the processing role's logical id."""
    evaluator = PolicyEvaluator(assembly.template)
    return evaluator, evaluator.role_named(f"{assembly.config.app_prefix}-processing")


def asset_repository_arn(evaluator: PolicyEvaluator, image: dict[str, Any]) -> str:
    """Return the ARN of the CDK bootstrap repository that the image asset is published to."""
    repository = next(iter(image["destinations"].values()))["repositoryName"]
    arn = "arn:${AWS::Partition}:ecr:${AWS::Region}:${AWS::AccountId}:repository/" + repository
    return evaluator.resolve({"Fn::Sub": arn})


def object_arn(bucket: str, key: str) -> str:
    return f"arn:{PARTITION}:s3:::{bucket}/{key}"


def function_images(assembly: Assembly) -> dict[str, Any]:
    """Return PROCESSING_IMAGE_URI of both prepflow functions, by function name."""
    prefix = assembly.config.app_prefix
    names = (assembly.config.settings.trigger_function, f"{prefix}-job-state")
    images = {}
    for name in names:
        function_id = logical_id_of(assembly, "AWS::Lambda::Function", "FunctionName", name)
        function = assembly.resources[function_id]["Properties"]
        images[name] = function["Environment"]["Variables"].get(env_name("processing_image_uri"))
    return images


def docker_images(assembly: Assembly) -> dict[str, Any]:
    return dict(assembly.assets.get("dockerImages", {}))


def only_image(assembly: Assembly) -> tuple[str, dict[str, Any]]:
    images = docker_images(assembly)
    assert len(images) == 1, f"expected one Docker image asset, found {list(images)}"
    return next(iter(images.items()))


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_image_asset_built_from_dockerfile(
    environment: str, assemblies: dict[str, Assembly]
) -> None:
    assembly = assemblies[environment]
    _, image = only_image(assembly)
    assert image["source"]["dockerFile"] == DOCKERFILE
    assert image["source"]["platform"] == "linux/amd64"
    destinations = list(image["destinations"].values())
    assert len(destinations) == 1
    assert "container-assets" in destinations[0]["repositoryName"]

    context = assembly.directory / image["source"]["directory"]
    assert (context / DOCKERFILE).read_bytes() == (ROOT / DOCKERFILE).read_bytes()
    assert (context / "pyproject.toml").is_file()
    assert (context / "src" / "prepflow" / "processing" / "__main__.py").is_file()


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_image_context_excludes_local_files(
    environment: str, assemblies: dict[str, Assembly]
) -> None:
    assembly = assemblies[environment]
    _, image = only_image(assembly)
    context = assembly.directory / image["source"]["directory"]
    for name in (".git", ".venv", "tests", "examples", "bench", "docs", "infra"):
        assert not (context / name).exists(), f"{name} is in the image's build context"
    assert not list(context.rglob("__pycache__"))


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_functions_use_asset_image(environment: str, assemblies: dict[str, Assembly]) -> None:
    assembly = assemblies[environment]
    asset_hash, image = only_image(assembly)
    destination = next(iter(image["destinations"].values()))
    assert destination["imageTag"] == asset_hash
    expected = (
        "${AWS::AccountId}.dkr.ecr.${AWS::Region}.${AWS::URLSuffix}/"
        f"{destination['repositoryName']}:{asset_hash}"
    )
    for name, image_uri in function_images(assembly).items():
        assert image_uri == {"Fn::Sub": expected}, name


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_processing_role_pulls_asset(environment: str, assemblies: dict[str, Assembly]) -> None:
    assembly = assemblies[environment]
    _, image = only_image(assembly)
    evaluator, role = processing_role(assembly)
    repository = asset_repository_arn(evaluator, image)
    assert "container-assets" in repository
    for action in sorted(ECR_PULL_ACTIONS):
        assert evaluator.allows(role, action, repository), action
    assert evaluator.allows(role, "ecr:GetAuthorizationToken", "*")


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_processing_role_cannot_push(environment: str, assemblies: dict[str, Assembly]) -> None:
    assembly = assemblies[environment]
    _, image = only_image(assembly)
    evaluator, role = processing_role(assembly)
    # The evaluator leaves managed policies out, so the role must have none.
    assert evaluator.managed_policy_arns(role) == []
    own_repository = evaluator.resolve(
        {"Fn::GetAtt": [next(iter(evaluator.of_type("AWS::ECR::Repository"))), "Arn"]}
    )
    for repository in (asset_repository_arn(evaluator, image), own_repository):
        for action in ECR_PUSH_ACTIONS:
            assert not evaluator.allows(role, action, repository), f"{action} on {repository}"


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_feature_store_write_scoped(environment: str, assemblies: dict[str, Assembly]) -> None:
    assembly = assemblies[environment]
    bucket = assembly.config.settings.buckets.feature_store
    evaluator, role = processing_role(assembly)
    features = object_arn(bucket, f"{FEATURES_PREFIX}job/features.parquet")
    elsewhere = object_arn(bucket, "other/features.parquet")

    assert evaluator.allows(role, "s3:PutObject", features)
    assert not evaluator.allows(role, "s3:PutObject", elsewhere)
    for action in ("s3:GetObject", "s3:DeleteObject", "s3:PutObjectAcl"):
        assert not evaluator.allows(role, action, features), action
    assert not evaluator.allows(role, "s3:ListBucket", f"arn:{PARTITION}:s3:::{bucket}")


@pytest.mark.parametrize(
    "variables",
    [
        {"PROCESSING_IMAGE_URI": USER_IMAGE_URI},
        {
            "PREPFLOW_STEP_SCRIPT_URI": (
                "s3://prepflow-dev-model-artifacts-bucket/scripts/examples/preprocessing_script.py"
            )
        },
    ],
    ids=["image-uri", "step-script"],
)
def test_configured_image_skips_asset(
    variables: dict[str, str],
    configs: dict[str, DeploymentConfig],
    lambda_code: Path,
    tmp_path: Path,
) -> None:
    config = with_settings(configs["dev"], **variables)
    assembly = synthesize(config, lambda_code, tmp_path)

    assert docker_images(assembly) == {}
    assert not list(tmp_path.glob(f"asset.*/{DOCKERFILE}"))
    expected = variables.get("PROCESSING_IMAGE_URI")
    for name, image_uri in function_images(assembly).items():
        assert image_uri == expected, name
    evaluator, role = processing_role(assembly)
    assert "container-assets" not in json.dumps(evaluator.statements(role))
