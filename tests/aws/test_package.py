"""The Lambda bundle, built as the deployment builds it and imported in a clean environment.

The clean environment is a virtual environment of the runtime's Python with only boto3,
as the Lambda runtime does, with the bundle first on ``sys.path`` as ``/var/task`` is. Any
import of polars, pyarrow or numpy under the handlers fails there, because none is installed.
pip's downloads are cached for the session, so the second build reuses them.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import prepflow
from prepflow.aws.package import MANIFEST_FILE, build_bundle, main
from prepflow.errors import ConfigurationError

# The Lambda runtime the deployment uses.
LAMBDA_PYTHON_VERSION = "3.13"
HEAVY_MODULES = ("polars", "pyarrow", "numpy")
HANDLERS_SOURCE = Path(prepflow.__file__).parent / "aws" / "handlers.py"
PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"

# Imports the listed modules, then prints the callables found, the top-level modules loaded
# and where three packages came from, as JSON.
PROBE = """
import importlib, json, sys
request = json.loads(sys.argv[1])
callables = {}
for module_name, names in request.items():
    module = importlib.import_module(module_name)
    callables[module_name] = [name for name in names if callable(getattr(module, name, None))]
origins = {name: getattr(sys.modules.get(name), "__file__", None)
           for name in ("prepflow", "pydantic", "boto3")}
print(json.dumps({
    "version": "%d.%d" % sys.version_info[:2],
    "callables": callables,
    "loaded": sorted({name.partition(".")[0] for name in sys.modules}),
    "origins": origins,
}))
"""


def find_python(version: str) -> str | None:
    """Return an interpreter of ``version`` (major.minor) on PATH or under pyenv, or None."""
    candidates = [sys.executable, shutil.which(f"python{version}")]
    pyenv_root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    installs = sorted((pyenv_root / "versions").glob(f"{version}.*"), reverse=True)
    candidates += [
        str(path / "bin" / f"python{version}")
        for path in installs
        if re.fullmatch(rf"{re.escape(version)}\.\d+", path.name)
    ]
    for candidate in candidates:
        if candidate and _python_version(candidate) == version:
            return candidate
    return None


def _python_version(executable: str) -> str | None:
    # A pyenv shim is on PATH even when its version is not selected, so only a run shows
    # whether the interpreter works.
    try:
        completed = subprocess.run(
            [executable, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except OSError:
        return None
    return completed.stdout.strip() if completed.returncode == 0 else None


def digest(folder: Path) -> dict[str, str]:
    """Return the SHA-256 of every file under ``folder``, by relative path."""
    return {
        path.relative_to(folder).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def build_cached(output_dir: Path, python_version: str, pip_cache: Path) -> Path:
    """Run ``build_bundle`` as the deployment does, with pip's cache in ``pip_cache``."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PIP_CACHE_DIR", str(pip_cache))
        return build_bundle(output_dir, python_version=python_version)


@pytest.fixture(scope="session")
def pip_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pip-cache")


@pytest.fixture(scope="session")
def lambda_python() -> tuple[str, str]:
    """Return the interpreter and version to build and import for: the runtime's if found."""
    executable = find_python(LAMBDA_PYTHON_VERSION)
    if executable is not None:
        return executable, LAMBDA_PYTHON_VERSION
    running = f"{sys.version_info.major}.{sys.version_info.minor}"
    warnings.warn(
        f"no Python {LAMBDA_PYTHON_VERSION} interpreter found on PATH or under pyenv, so the "
        f"Lambda bundle is built and imported for Python {running} instead; install Python "
        f"{LAMBDA_PYTHON_VERSION} to test the runtime the deployment uses",
        stacklevel=1,
    )
    return sys.executable, running


@pytest.fixture(scope="session")
def bundle(
    tmp_path_factory: pytest.TempPathFactory, pip_cache: Path, lambda_python: tuple[str, str]
) -> Path:
    output = tmp_path_factory.mktemp("lambda") / "bundle"
    return build_cached(output, lambda_python[1], pip_cache)


@pytest.fixture(scope="session")
def clean_python(
    tmp_path_factory: pytest.TempPathFactory, pip_cache: Path, lambda_python: tuple[str, str]
) -> Path:
    """Return the interpreter of a new virtual environment with boto3 and nothing else."""
    venv = tmp_path_factory.mktemp("lambda-runtime") / "venv"
    subprocess.run(
        [lambda_python[0], "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120
    )
    python = venv / "bin" / "python"
    install = [sys.executable, "-m", "pip", "--python", str(python), "install"]
    options = ["--disable-pip-version-check", "--no-input", "--cache-dir", str(pip_cache)]
    completed = subprocess.run(
        [*install, *options, "boto3"], capture_output=True, text=True, timeout=300, check=False
    )
    assert completed.returncode == 0, completed.stderr
    return python


@pytest.fixture
def probe(
    bundle: Path, clean_python: Path, tmp_path: Path
) -> Callable[[dict[str, list[str]]], dict[str, Any]]:
    """Return a function that imports modules from the bundle in the clean environment."""

    def run(request: dict[str, list[str]]) -> dict[str, Any]:
        # Only what the runtime would set. The credentials are fake, so nothing reaches AWS.
        environment = {
            "PATH": "/usr/bin:/bin",
            "HOME": str(tmp_path),
            "LANG": "C.UTF-8",
            "PYTHONPATH": str(bundle),
            "PYTHONDONTWRITEBYTECODE": "1",  # /var/task is read-only in Lambda
            "LAMBDA_TASK_ROOT": str(bundle),
            "AWS_REGION": "eu-west-1",
            "AWS_DEFAULT_REGION": "eu-west-1",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": str(tmp_path / "none"),
            "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
        }
        completed = subprocess.run(
            [str(clean_python), "-c", PROBE, json.dumps(request)],
            capture_output=True,
            text=True,
            env=environment,
            timeout=120,
            check=False,
        )
        assert completed.returncode == 0, completed.stderr
        result: dict[str, Any] = json.loads(completed.stdout)
        return result

    return run


def test_lambda_extra_repeats_dependencies() -> None:
    project = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]
    lambda_requirements = project["optional-dependencies"]["lambda"]

    assert lambda_requirements
    for requirement in lambda_requirements:
        assert requirement in project["dependencies"], requirement


def test_build_rejects_foreign_folder(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a bundle", encoding="utf-8")

    with pytest.raises(ConfigurationError, match="invalid bundle output"):
        build_bundle(tmp_path)
    assert (tmp_path / "notes.txt").is_file()


def test_build_rejects_bad_python_version(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="invalid Python version '313'"):
        build_bundle(tmp_path / "bundle", python_version="313")


def test_command_rejects_bad_version(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--output", str(tmp_path / "bundle"), "--python-version", "3"])

    assert code == 2
    assert "invalid Python version '3'" in capsys.readouterr().err
    assert not (tmp_path / "bundle").exists()


def test_bundle_layout(bundle: Path, lambda_python: tuple[str, str]) -> None:
    manifest = json.loads((bundle / MANIFEST_FILE).read_text(encoding="utf-8"))
    distributions = manifest["distributions"]

    assert (bundle / "prepflow" / "__init__.py").is_file()
    assert (bundle / "prepflow" / "orchestrator.py").is_file()
    assert (bundle / "pydantic" / "__init__.py").is_file()
    assert manifest["python_version"] == lambda_python[1]
    for name in ("pydantic", "pydantic-settings", "aws-lambda-powertools"):
        assert name in distributions, name
    for name in ("boto3", "botocore", *HEAVY_MODULES):
        assert name not in distributions, name
        assert not (bundle / name).exists(), name
    assert not (bundle / "bin").exists()
    assert list(bundle.rglob("__pycache__")) == []
    assert list(bundle.rglob("*.pyc")) == []


def test_bundle_records_list_shipped_files(bundle: Path) -> None:
    records = list(bundle.glob("*.dist-info/RECORD"))

    assert records
    for record in records:
        with record.open(newline="", encoding="utf-8") as file:
            paths = [row[0] for row in csv.reader(file)]
        for path in paths:
            assert (bundle / path).is_file(), f"{record.parent.name}: {path}"


def test_bundle_rebuild_identical(
    bundle: Path, tmp_path: Path, pip_cache: Path, lambda_python: tuple[str, str]
) -> None:
    again = build_cached(tmp_path / "again", lambda_python[1], pip_cache)

    assert digest(again) == digest(bundle)


def test_bundle_rebuild_replaces_previous(
    bundle: Path, tmp_path: Path, pip_cache: Path, lambda_python: tuple[str, str]
) -> None:
    output = tmp_path / "bundle"
    shutil.copytree(bundle, output)
    (output / "stale.py").write_text("", encoding="utf-8")

    rebuilt = build_cached(output, lambda_python[1], pip_cache)

    assert rebuilt == output
    assert not (output / "stale.py").exists()
    assert (output / MANIFEST_FILE).is_file()


def test_clean_environment_imports_core(
    probe: Any, bundle: Path, clean_python: Path, lambda_python: tuple[str, str]
) -> None:
    modules = ["prepflow.aws", "prepflow.aws.clients", "prepflow.settings", "prepflow.orchestrator"]

    result = probe({name: [] for name in modules})

    assert result["version"] == lambda_python[1]
    assert result["origins"]["prepflow"].startswith(str(bundle))
    assert result["origins"]["pydantic"].startswith(str(bundle))
    assert result["origins"]["boto3"].startswith(str(clean_python.parents[1]))
    for name in HEAVY_MODULES:
        assert name not in result["loaded"], name


@pytest.mark.skipif(not HANDLERS_SOURCE.is_file(), reason=f"{HANDLERS_SOURCE} does not exist yet")
def test_clean_environment_imports_handlers(probe: Any) -> None:
    handlers = ["trigger_handler", "job_state_handler"]

    result = probe({"prepflow.aws.handlers": handlers})

    assert result["callables"]["prepflow.aws.handlers"] == handlers
    for name in HEAVY_MODULES:
        assert name not in result["loaded"], name
