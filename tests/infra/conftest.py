"""Fixtures for the CDK app: one Lambda bundle and one synthesized stack per environment.

Synthesis starts Node and takes seconds, so each environment is synthesized once per test
process. Nothing here calls AWS: synthesis is offline. Without the infra extra
(``pip install -e .[infra]``) the tests in this folder are not collected.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from prepflow.aws.package import build_bundle

if TYPE_CHECKING:
    from aws_cdk.assertions import Template
    from infra.config import DeploymentConfig

if importlib.util.find_spec("aws_cdk") is None:
    collect_ignore_glob = ["test_*.py"]


@pytest.fixture(scope="session")
def lambda_code(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Return the Lambda bundle, built once per session as the deployment builds it."""
    return build_bundle(tmp_path_factory.mktemp("lambda") / "bundle")


@pytest.fixture(scope="session")
def configs() -> dict[str, DeploymentConfig]:
    from infra.app import deployment_config
    from infra.config import ENVIRONMENTS

    return {environment: deployment_config(environment) for environment in ENVIRONMENTS}


@pytest.fixture(scope="session")
def templates(
    lambda_code: Path,
    configs: dict[str, DeploymentConfig],
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Template]:
    """Return the synthesized template of every environment."""
    from aws_cdk.assertions import Template
    from infra.app import add_stack, new_app

    templates = {}
    for environment, config in configs.items():
        app = new_app(tmp_path_factory.mktemp(f"cdk-{environment}"))
        templates[environment] = Template.from_stack(add_stack(app, config, lambda_code))
    return templates
