"""The copies of the example scripts and recipes to the model-artifacts bucket."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from aws_cdk.assertions import Template
from infra.app import add_stack, new_app
from infra.artifacts import EXAMPLE_RECIPES_PREFIX, EXAMPLE_SCRIPTS_PREFIX, EXAMPLES_DIR
from infra.config import ENVIRONMENTS, DeploymentConfig

from prepflow.jobs.template import ARTIFACTS_PREFIX
from tests.infra.policy import PARTITION, PolicyEvaluator

DEPLOYMENT_TYPE = "Custom::CDKBucketDeployment"
EXPECTED_FOLDERS = {
    EXAMPLE_SCRIPTS_PREFIX: EXAMPLES_DIR / "scripts",
    EXAMPLE_RECIPES_PREFIX: EXAMPLES_DIR / "recipes",
}
# The write actions CDK's grant_read_write gives the copy function on the whole bucket.
WRITE_ACTIONS = ("s3:PutObject", "s3:DeleteObject", "s3:DeleteObjectVersion", "s3:PutObjectTagging")


def deployments(template: Template) -> dict[str, dict[str, Any]]:
    """Return the BucketDeployment custom resources by destination prefix."""
    found = template.find_resources(DEPLOYMENT_TYPE)
    by_prefix = {r["Properties"]["DestinationBucketKeyPrefix"]: r for r in found.values()}
    assert len(by_prefix) == len(found), "two copies share a destination prefix"
    return by_prefix


def bucket_id(template: Template, name: str) -> str:
    found = template.find_resources("AWS::S3::Bucket", {"Properties": {"BucketName": name}})
    assert len(found) == 1, f"expected one bucket named {name}, found {list(found)}"
    return next(iter(found))


def copy_function_role(evaluator: PolicyEvaluator, template: Template) -> str:
    """Return the role of the function that serves the BucketDeployment custom resources."""
    tokens = {
        json.dumps(r["Properties"]["ServiceToken"])
        for r in template.find_resources(DEPLOYMENT_TYPE).values()
    }
    assert len(tokens) == 1, f"expected one copy function, found {tokens}"
    function_id = json.loads(tokens.pop())["Fn::GetAtt"][0]
    function = evaluator.resources[function_id]["Properties"]
    return str(function["Role"]["Fn::GetAtt"][0])


def object_arn(bucket: str, key: str) -> str:
    return f"arn:{PARTITION}:s3:::{bucket}/{key}"


@pytest.fixture(scope="module")
def dev_assembly(
    lambda_code: Path,
    configs: dict[str, DeploymentConfig],
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, dict[str, Any]]:
    """Return the folder and template of a dev synthesis, for the staged example files."""
    outdir = tmp_path_factory.mktemp("examples")
    app = new_app(outdir)
    stack = add_stack(app, configs["dev"], lambda_code)
    app.synth()
    return outdir, json.loads((outdir / stack.template_file).read_text())


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_examples_copied_to_artifacts_bucket(
    environment: str, templates: dict[str, Template], configs: dict[str, DeploymentConfig]
) -> None:
    template = templates[environment]
    artifacts_id = bucket_id(template, configs[environment].settings.buckets.model_artifacts)
    found = deployments(template)

    assert set(found) == set(EXPECTED_FOLDERS)
    for prefix, resource in found.items():
        assert resource["Properties"]["DestinationBucketName"] == {"Ref": artifacts_id}, prefix


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_copies_never_prune(environment: str, templates: dict[str, Template]) -> None:
    for prefix, resource in deployments(templates[environment]).items():
        assert resource["Properties"]["Prune"] is False, prefix


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_copies_kept_with_data(
    environment: str, templates: dict[str, Template], configs: dict[str, DeploymentConfig]
) -> None:
    retain = configs[environment].retain_data
    assert retain is (environment == "prod")
    for prefix, resource in deployments(templates[environment]).items():
        assert resource["Properties"]["RetainOnDelete"] is retain, prefix


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_copy_function_writes_only_examples(
    environment: str, templates: dict[str, Template], configs: dict[str, DeploymentConfig]
) -> None:
    template = templates[environment]
    bucket = configs[environment].settings.buckets.model_artifacts
    evaluator = PolicyEvaluator(template.to_json())
    role = copy_function_role(evaluator, template)

    for prefix in EXPECTED_FOLDERS:
        example = object_arn(bucket, f"{prefix}example.txt")
        for action in WRITE_ACTIONS:
            assert evaluator.allows(role, action, example), f"{action} on {example}"
    for key in (f"{ARTIFACTS_PREFIX}job/artifacts.json", "scripts/0123456789abcdef/user.py"):
        for action in WRITE_ACTIONS:
            assert not evaluator.allows(role, action, object_arn(bucket, key)), f"{action} {key}"
    other_bucket = configs[environment].settings.buckets.raw
    assert not evaluator.allows(role, "s3:PutObject", object_arn(other_bucket, "input/x.csv"))


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_copy_logs_follow_retention(
    environment: str, templates: dict[str, Template], configs: dict[str, DeploymentConfig]
) -> None:
    template = templates[environment]
    evaluator = PolicyEvaluator(template.to_json())
    role = copy_function_role(evaluator, template)
    functions = template.find_resources(
        "AWS::Lambda::Function", {"Properties": {"Role": {"Fn::GetAtt": [role, "Arn"]}}}
    )
    assert len(functions) == 1
    log_group_id = next(iter(functions.values()))["Properties"]["LoggingConfig"]["LogGroup"]["Ref"]
    log_group = template.to_json()["Resources"][log_group_id]

    assert "RetentionInDays" in log_group["Properties"]
    expected = "Retain" if configs[environment].retain_data else "Delete"
    assert log_group["DeletionPolicy"] == expected


def test_staged_sources_are_examples(dev_assembly: tuple[Path, dict[str, Any]]) -> None:
    outdir, template = dev_assembly
    resources = template["Resources"].values()
    copies = [r["Properties"] for r in resources if r["Type"] == DEPLOYMENT_TYPE]
    assert len(copies) == len(EXPECTED_FOLDERS)
    for copy in copies:
        (key,) = copy["SourceObjectKeys"]
        staged = outdir / f"asset.{key.removesuffix('.zip')}"
        folder = EXPECTED_FOLDERS[copy["DestinationBucketKeyPrefix"]]
        expected = {p.name for p in folder.iterdir() if p.is_file() and p.suffix != ".pyc"}
        assert expected, f"{folder} has no files"
        assert {p.name for p in staged.iterdir()} == expected
