"""Build the Lambda functions' code as a plain folder, without Docker.

pip installs the ``lambda`` extra of pyproject.toml from binary wheels for the Lambda runtime
(``--platform``, ``--python-version``, ``--only-binary=:all:``), so the machine that builds
needs neither Docker nor the target's Python. The prepflow source is copied next to the
dependencies. The folder's root is what the runtime puts on ``sys.path`` (``/var/task``), so
AWS CDK can use it as ``Code.from_asset(folder)``.

Usage: ``python -m prepflow.aws.package --output DIR [--python-version X.Y]``.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from importlib import metadata
from pathlib import Path
from typing import Any

import prepflow
from prepflow.errors import ConfigurationError, PrepflowError

logger = logging.getLogger(__name__)

LAMBDA_EXTRA = "lambda"
MANIFEST_FILE = "prepflow-bundle.json"
# Distributions the bundle must not contain, because the runtime provides boto3 and what it
# needs, and the Lambda functions never run the processing engine. Names are normalized as
# PEP 503 does.
EXCLUDED_DISTRIBUTIONS = frozenset(
    {"boto3", "botocore", "s3transfer", "polars", "pyarrow", "numpy"}
)
PYTHON_VERSION_PATTERN = re.compile(r"^3\.\d{1,2}$")
# The Lambda runtime the deployment uses; infra/ picks the matching runtime from it.
LAMBDA_PYTHON_VERSION = "3.13"


def build_bundle(
    output_dir: Path,
    *,
    python_version: str = LAMBDA_PYTHON_VERSION,
    platform: str = "manylinux2014_x86_64",
) -> Path:
    """Build the bundle into ``output_dir`` and return it.

    Two builds from the same source and the same resolved versions contain the same file
    names and contents, and no bytecode. ``output_dir`` must be absent, empty, or a bundle
    built before, which is then replaced whole. Raises ConfigurationError for an invalid
    version or output folder, and PrepflowError when pip fails.
    """
    if not PYTHON_VERSION_PATTERN.match(python_version):
        raise ConfigurationError(
            f"invalid Python version {python_version!r}: expected major.minor, such as '3.13'"
        )
    output_dir = output_dir.resolve()
    _check_replaceable(output_dir)
    project = _read_project()
    # NOTE: the requirements are version ranges, so a later build may resolve newer releases.
    # The manifest in the bundle records the versions each build installed.
    requirements = list(project.get("optional-dependencies", {}).get(LAMBDA_EXTRA, []))
    if not requirements:
        raise ConfigurationError(
            f"pyproject.toml has no [project.optional-dependencies] {LAMBDA_EXTRA} list"
        )

    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".prepflow-bundle-", dir=output_dir.parent))
    try:
        staging.chmod(0o755)  # mkdtemp makes it 0700, and the runtime's user must read it
        _assemble(staging, project, requirements, python_version=python_version, platform=platform)
        if output_dir.exists():
            shutil.rmtree(output_dir)
        staging.rename(output_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.info(
        "built the Lambda bundle %s for Python %s on %s: %d bytes",
        output_dir,
        python_version,
        platform,
        bundle_size(output_dir),
    )
    return output_dir


def bundle_size(bundle: Path) -> int:
    """Return the total size in bytes of the regular files under ``bundle``, unzipped."""
    return sum(path.stat().st_size for path in bundle.rglob("*") if path.is_file())


def _assemble(
    target: Path,
    project: dict[str, Any],
    requirements: list[str],
    *,
    python_version: str,
    platform: str,
) -> None:
    _install(target, requirements, python_version=python_version, platform=platform)
    _strip(target)
    distributions = _check_distributions(target)
    shutil.copytree(
        Path(prepflow.__file__).parent,
        target / "prepflow",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    manifest = {
        "prepflow": project["version"],
        "python_version": python_version,
        "platform": platform,
        "requirements": requirements,
        "distributions": distributions,
    }
    text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
    (target / MANIFEST_FILE).write_text(text, encoding="utf-8")


def _check_replaceable(output_dir: Path) -> None:
    if not output_dir.exists():
        return
    if not output_dir.is_dir():
        raise ConfigurationError(f"invalid bundle output {output_dir}: it is a file, not a folder")
    if any(output_dir.iterdir()) and not (output_dir / MANIFEST_FILE).is_file():
        raise ConfigurationError(
            f"invalid bundle output {output_dir}: the folder is not empty and has no "
            f"{MANIFEST_FILE}, so it is not a bundle built before; choose an empty or new folder"
        )


def _read_project() -> dict[str, Any]:
    """Return the [project] table of the pyproject.toml next to the copied source."""
    pyproject = Path(prepflow.__file__).resolve().parents[2] / "pyproject.toml"
    if not pyproject.is_file():
        raise ConfigurationError(
            f"{pyproject} not found: build the Lambda bundle from a source checkout of prepflow, "
            "where pyproject.toml holds the bundle's dependencies"
        )
    with pyproject.open("rb") as file:
        project: dict[str, Any] = tomllib.load(file).get("project", {})
    if project.get("name") != "prepflow":
        raise ConfigurationError(f"{pyproject} is not prepflow's pyproject.toml")
    return project


def _install(target: Path, requirements: list[str], *, python_version: str, platform: str) -> None:
    command = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--target",
        str(target),
        "--platform",
        platform,
        "--python-version",
        python_version,
        "--implementation",
        "cp",
        "--only-binary=:all:",
        "--no-compile",
        "--disable-pip-version-check",
        "--no-input",
        *requirements,
    ]
    logger.info("installing %s for Python %s on %s", requirements, python_version, platform)
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        output = (completed.stderr or completed.stdout).strip()[-4000:]
        raise PrepflowError(
            f"pip failed to install the Lambda dependencies {requirements} for Python "
            f"{python_version} on {platform} (exit code {completed.returncode}); check that a "
            f"binary wheel exists for that platform and that the package index is reachable. "
            f"pip's output ends with:\n{output}"
        )


def _strip(target: Path) -> None:
    """Remove bytecode and pip's console scripts, whose shebang names the building Python."""
    shutil.rmtree(target / "bin", ignore_errors=True)
    for cache in sorted(target.rglob("__pycache__"), reverse=True):
        shutil.rmtree(cache)
    for compiled in target.rglob("*.py[co]"):
        compiled.unlink()
    for record in target.glob("*.dist-info/RECORD"):
        _drop_missing_rows(target, record)


def _drop_missing_rows(target: Path, record: Path) -> None:
    """Keep only the RECORD rows of files in the bundle, so RECORD stays true."""
    with record.open(newline="", encoding="utf-8") as file:
        rows = list(csv.reader(file))
    shipped = [row for row in rows if not row[0].startswith("../") and (target / row[0]).is_file()]
    if len(shipped) < len(rows):
        with record.open("w", newline="", encoding="utf-8") as file:
            csv.writer(file).writerows(shipped)  # CRLF line ends, as pip writes them


def _check_distributions(target: Path) -> dict[str, str]:
    """Return the installed distributions and versions; raise if an excluded one came in."""
    distributions = {
        _normalize(dist.metadata["Name"]): dist.version
        for dist in metadata.distributions(path=[str(target)])
    }
    unwanted = sorted(EXCLUDED_DISTRIBUTIONS & distributions.keys())
    if unwanted:
        raise ConfigurationError(
            f"a dependency of the Lambda bundle requires {unwanted}, which the bundle must not "
            f"ship; change the '{LAMBDA_EXTRA}' list in pyproject.toml"
        )
    return dict(sorted(distributions.items()))


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m prepflow.aws.package",
        description="Build the Lambda functions' code folder (dependencies and prepflow source).",
    )
    parser.add_argument("--output", type=Path, required=True, help="folder to write the bundle to")
    parser.add_argument(
        "--python-version", default="3.13", help="the Lambda runtime's Python, major.minor"
    )
    parser.add_argument(
        "--platform", default="manylinux2014_x86_64", help="wheel platform tag of the runtime"
    )
    arguments = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        bundle = build_bundle(
            arguments.output,
            python_version=arguments.python_version,
            platform=arguments.platform,
        )
    except ConfigurationError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except PrepflowError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"{bundle} ({bundle_size(bundle) / 1e6:.1f} MB unzipped)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
