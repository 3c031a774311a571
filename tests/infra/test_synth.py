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
        if r["Type"] == "AWS::Lambda::Function"
    }
    assert set(functions) == {"prepflow-dev-trigger", "prepflow-dev-job-state"}
    for function in functions.values():
        asset_hash = function["Properties"]["Code"]["S3Key"].removesuffix(".zip")
        asset = tmp_path / "out" / f"asset.{asset_hash}"
        assert (asset / "prepflow" / "aws" / "handlers.py").is_file()
        assert (asset / "aws_lambda_powertools").is_dir()
