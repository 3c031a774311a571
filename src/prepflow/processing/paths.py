"""Where the step finds its inputs and writes its outputs, under the container contract.

The job's ``/opt/ml/config/processingjobconfig.json`` names each input and output with its
LocalPath. The step reads the input named ``data`` (and ``recipe`` and ``fitted`` when present)
and writes the outputs named ``processed``, ``rejected``, ``report`` and ``artifacts``. Without a
config file (a plain container, or a run by hand) it uses SageMaker's usual folders. Under the
local runner without a mount namespace, ``PREPFLOW_ML_ROOT`` replaces /opt/ml.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Suffixes of the data files the built-in step reads (compared in lower case); the
# orchestrator skips other uploads before any job starts.
# A ".gz" file is read when its content is one of the formats below.
DATA_SUFFIXES = (".csv", ".parquet", ".jsonl", ".ndjson", ".json", ".gz")
CONTAINER_ML_ROOT = "/opt/ml"
ML_ROOT_VARIABLE = "PREPFLOW_ML_ROOT"
DATA_INPUT_NAME = "data"
RECIPE_INPUT_NAME = "recipe"
FITTED_INPUT_NAME = "fitted"
PROCESSED_OUTPUT_NAME = "processed"
REJECTED_OUTPUT_NAME = "rejected"
REPORT_OUTPUT_NAME = "report"
ARTIFACTS_OUTPUT_NAME = "artifacts"
# File names inside the rejected and report outputs.
REJECTED_FILE = "rejected.csv"
REPORT_JSON = "report.json"
REPORT_HTML = "report.html"
ARTIFACTS_FILE = "artifacts.json"
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
    recipe_file: Path | None = None
    fitted_file: Path | None = None
    rejected_dir: Path | None = None
    report_dir: Path | None = None
    artifacts_dir: Path | None = None
    job_name: str | None = None
    # This instance's name (algo-2) when the job runs on several, from resourceconfig.json;
    # None on a single instance, so that its file names stay as they were.
    current_host: str | None = None
    host_count: int = 1


def container_paths(environ: dict[str, str] | None = None) -> StepPaths:
    """Resolve the step's folders from the job config, or SageMaker's defaults without one."""
    environ = dict(os.environ) if environ is None else environ
    ml_root = Path(environ.get(ML_ROOT_VARIABLE, CONTAINER_ML_ROOT))
    config_file = ml_root / "config" / "processingjobconfig.json"
    inputs: dict[str, str] = {}
    outputs: dict[str, str] = {}
    job_name = None
    if config_file.is_file():
        request = json.loads(config_file.read_text())
        job_name = request.get("ProcessingJobName")
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

    def output(name: str) -> Path | None:
        return _on_host(ml_root, outputs[name]) if name in outputs else None

    return StepPaths(
        input_dir=_on_host(ml_root, data),
        output_dir=_on_host(ml_root, outputs.get(PROCESSED_OUTPUT_NAME, DEFAULT_OUTPUT)),
        excluded=tuple(_on_host(ml_root, path) for path in others),
        message_file=ml_root / "output" / "message",
        recipe_file=_single_file(ml_root, inputs.get(RECIPE_INPUT_NAME)),
        fitted_file=_single_file(ml_root, inputs.get(FITTED_INPUT_NAME)),
        rejected_dir=output(REJECTED_OUTPUT_NAME),
        report_dir=output(REPORT_OUTPUT_NAME),
        artifacts_dir=output(ARTIFACTS_OUTPUT_NAME),
        job_name=job_name,
        **_hosts(ml_root / "config" / "resourceconfig.json"),
    )


def per_host_name(file_name: str, host: str | None) -> str:
    """Return ``file_name`` with the host before its extension: ``report-algo-2.json``.

    Hosts of one job upload to the same S3 prefixes, so every file that each host writes
    once per job needs the host in its name. ``None`` (a single instance) keeps the name.
    """
    if host is None:
        return file_name
    stem, dot, extension = file_name.partition(".")
    return f"{stem}-{host}{dot}{extension}"


def _hosts(config_file: Path) -> dict[str, Any]:
    """Return ``current_host`` and the number of hosts of a job on several instances."""
    if not config_file.is_file():
        return {}
    config = json.loads(config_file.read_text())
    hosts = config.get("hosts", [])
    if not isinstance(hosts, list) or len(hosts) < 2:
        return {}
    return {"current_host": str(config["current_host"]), "host_count": len(hosts)}


def _single_file(ml_root: Path, container_path: str | None) -> Path | None:
    """Return the one file staged under an input's folder (a recipe, an artifacts.json)."""
    if container_path is None:
        return None
    folder = _on_host(ml_root, container_path)
    files = sorted(path for path in folder.rglob("*") if path.is_file()) if folder.is_dir() else []
    return files[0] if files else None


def _on_host(ml_root: Path, container_path: str) -> Path:
    if container_path.startswith(CONTAINER_ML_ROOT + "/"):
        return ml_root / container_path[len(CONTAINER_ML_ROOT) + 1 :]
    return Path(container_path)
