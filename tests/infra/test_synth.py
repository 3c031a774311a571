"""infra.synth: the cloud assembly on disk, with the Lambda code asset in it."""

from __future__ import annotations

import json
from pathlib import Path

from infra.synth import synth


def test_synth_writes_template_and_code(lambda_code: Path, tmp_path: Path) -> None:
    template_path = synth("dev", tmp_path / "out", code=lambda_code)

    assert template_path.is_file()
    template = json.loads(template_path.read_text())
    functions = {
        r["Properties"]["FunctionName"]: r
        for r in template["Resources"].values()
        # Functions that CDK adds itself (the examples' BucketDeployment) have generated names.
        if r["Type"] == "AWS::Lambda::Function" and "FunctionName" in r["Properties"]
    }
    assert set(functions) == {"prepflow-dev-trigger", "prepflow-dev-job-state"}
    for function in functions.values():
        asset_hash = function["Properties"]["Code"]["S3Key"].removesuffix(".zip")
        asset = tmp_path / "out" / f"asset.{asset_hash}"
        assert (asset / "prepflow" / "aws" / "handlers.py").is_file()
        assert (asset / "aws_lambda_powertools").is_dir()


def test_prepflow_synth_command(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    environment = {**os.environ, "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "prepflow",
            "synth",
            "--json",
            "--env",
            "staging",
            "--output",
            "out",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=environment,
        timeout=300,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    # With --json, stdout contains the JSON document alone, and no log line may precede it.
    template_path = tmp_path / json.loads(done.stdout)["template"]
    template = json.loads(template_path.read_text())
    names = {
        resource["Properties"].get("FunctionName")
        for resource in template["Resources"].values()
        if resource["Type"] == "AWS::Lambda::Function"
    }
    assert "prepflow-staging-trigger" in names


def test_prepflow_synth_unknown_environment(tmp_path: Path) -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "prepflow", "synth", "--env", "qa", "--output", "out"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
        check=False,
    )

    assert done.returncode == 2
    assert "qa" in done.stderr
