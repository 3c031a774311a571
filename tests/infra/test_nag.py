"""cdk-nag's AwsSolutions pack on every environment: no finding without an acknowledgement."""

from __future__ import annotations

from pathlib import Path

import pytest
from aws_cdk import aws_s3 as s3
from infra.app import add_stack, deployment_config, new_app
from infra.config import ENVIRONMENTS
from infra.synth import synthesize

from infra import nag
from prepflow.errors import ConfigurationError


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_no_unacknowledged_finding(environment: str, lambda_code: Path, tmp_path: Path) -> None:
    app = new_app(tmp_path)
    add_stack(app, deployment_config(environment), lambda_code)

    synthesize(app, tmp_path)

    assert nag.findings_text(tmp_path) == ""


def test_synthesis_new_finding_named(lambda_code: Path, tmp_path: Path) -> None:
    app = new_app(tmp_path)
    stack = add_stack(app, deployment_config("dev"), lambda_code)
    # A bucket without access logs or a TLS-only policy: findings no acknowledgement covers.
    s3.Bucket(stack, "Careless")

    with pytest.raises(ConfigurationError) as caught:
        synthesize(app, tmp_path)

    message = str(caught.value)
    assert "AwsSolutions-S1 on prepflow-dev/Careless/Resource" in message
    assert "AwsSolutions-S10 on prepflow-dev/Careless/Resource" in message
    # Only the new bucket is reported: everything else stays acknowledged.
    assert {
        line.split(" on ")[1].split("/")[1] for line in message.splitlines() if " on " in line
    } == {"Careless"}


def test_acknowledge_rejects_vague_input(lambda_code: Path, tmp_path: Path) -> None:
    app = new_app(tmp_path)
    stack = add_stack(app, deployment_config("dev"), lambda_code)

    with pytest.raises(ValueError, match="expected an id starting with AwsSolutions-"):
        nag.acknowledge(stack, "IAM5", "a reason long enough to pass the check")
    with pytest.raises(ValueError, match="needs a reason in a sentence"):
        nag.acknowledge(stack, "AwsSolutions-L1", "legacy")


def test_resource_pattern_bucket_arn(lambda_code: Path, tmp_path: Path) -> None:
    app = new_app(tmp_path)
    stack = add_stack(app, deployment_config("dev"), lambda_code)

    pattern = nag.resource_pattern(stack.storage.raw, "/input/*")

    assert pattern.startswith("<StorageRaw")
    assert pattern.endswith(".Arn>/input/*")
