"""Where the step finds its input and writes its output, under the container contract.

The job's ``/opt/ml/config/processingjobconfig.json`` names each input and output with its
LocalPath. The step reads the input named ``data`` and writes the output named ``processed``.
Without a config file (a plain container, or a run by hand) it uses SageMaker's usual folders.
Under the local runner without a mount namespace, ``PREPFLOW_ML_ROOT`` replaces /opt/ml.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

# Suffixes of the data files the built-in step reads (compared in lower case); the
# orchestrator skips other uploads before any job starts.
DATA_SUFFIXES = (".csv",)
CONTAINER_ML_ROOT = "/opt/ml"
ML_ROOT_VARIABLE = "PREPFLOW_ML_ROOT"
DATA_INPUT_NAME = "data"
PROCESSED_OUTPUT_NAME = "processed"
DEFAULT_INPUT = "/opt/ml/processing/input"
DEFAULT_OUTPUT = "/opt/ml/processing/output"


@dataclass(frozen=True)
class StepPaths:
    input_dir: Path
    output_dir: Path
    # Folders of other inputs that lie inside input_dir (the code input, for one): not data.
    excluded: tuple[Path, ...] = field(default_factory=tuple)
    # Where the ExitMessage goes; None when running outside a job.
    message_file: Path | None = None


def container_paths(environ: dict[str, str] | None = None) -> StepPaths:
    """Resolve the step's folders from the job config, or SageMaker's defaults without one."""
    environ = dict(os.environ) if environ is None else environ
    ml_root = Path(environ.get(ML_ROOT_VARIABLE, CONTAINER_ML_ROOT))
    config_file = ml_root / "config" / "processingjobconfig.json"
    inputs: dict[str, str] = {}
    outputs: dict[str, str] = {}
    if config_file.is_file():
        request = json.loads(config_file.read_text())
        inputs = {
            item["InputName"]: item["S3Input"]["LocalPath"]
            for item in request.get("ProcessingInputs", [])
            if "S3Input" in item
        }
        outputs = {
            item["OutputName"]: item["S3Output"]["LocalPath"]
            for item in request.get("ProcessingOutputConfig", {}).get("Outputs", [])
        }
    data = inputs.get(DATA_INPUT_NAME, DEFAULT_INPUT)
    others = [path for name, path in inputs.items() if name != DATA_INPUT_NAME]
    return StepPaths(
        input_dir=_on_host(ml_root, data),
        output_dir=_on_host(ml_root, outputs.get(PROCESSED_OUTPUT_NAME, DEFAULT_OUTPUT)),
        excluded=tuple(_on_host(ml_root, path) for path in others),
        message_file=ml_root / "output" / "message",
    )


def _on_host(ml_root: Path, container_path: str) -> Path:
    if container_path.startswith(CONTAINER_ML_ROOT + "/"):
        return ml_root / container_path[len(CONTAINER_ML_ROOT) + 1 :]
    return Path(container_path)
