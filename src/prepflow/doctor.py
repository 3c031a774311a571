"""``prepflow doctor``: check that this machine can run the local mode, and print the fixes.

Each check reads the machine and never changes it, except for a probe file that the store
check creates and removes at once. A required check that fails makes the command exit with
1. The others (Node.js, Docker, free disk, mount namespaces under ``auto`` isolation) say what
works less well without them.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from prepflow.jobs import isolation
from prepflow.settings import Settings

MIN_PYTHON = (3, 11)
# Node.js 18 reached its end of life in April 2025, and the CDK's jsii runtime warns on
# versions past their end of life.
MIN_NODE_MAJOR = 20
# Below this much free space in the home a job that copies a large input may run out of it.
LOW_DISK_BYTES = 1 << 30
# Seconds each external command (node, docker) may take before it counts as not responding.
COMMAND_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True)
class LocalCheck:
    check: str
    ok: bool
    # False for a check whose failure leaves the local mode working (deploy needs Docker).
    required: bool
    detail: str
    fix: str = ""

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def check_local(settings: Settings) -> list[LocalCheck]:
    """Run every local check, in the order a person would fix them."""
    home = settings.home.resolve()
    return [
        check_python(),
        check_namespaces(settings.isolation),
        check_node(),
        check_docker(),
        check_home(home),
        check_disk(home),
        check_database(home / "jobs.db", "job database", table="jobs"),
        check_database(home / "store.db", "object store database", table=None),
    ]


def check_python() -> LocalCheck:
    version = ".".join(str(part) for part in sys.version_info[:3])
    if sys.version_info[:2] >= MIN_PYTHON:
        return LocalCheck("python", True, True, f"Python {version} at {sys.executable}")
    wanted = ".".join(str(part) for part in MIN_PYTHON)
    return LocalCheck(
        "python",
        False,
        True,
        f"Python {version} is older than {wanted}",
        f"install Python {wanted} or newer and reinstall prepflow with it",
    )


def check_namespaces(mode: str) -> LocalCheck:
    """Check mount namespaces, which user scripts need to read ``/opt/ml`` unmodified."""
    if mode == "none":
        return LocalCheck(
            "mount namespaces", True, False, "not used: PREPFLOW_ISOLATION=none runs jobs directly"
        )
    problem = isolation.namespace_problem()
    if problem is None:
        return LocalCheck("mount namespaces", True, mode == "namespace", "available")
    return LocalCheck(
        "mount namespaces",
        False,
        # Under auto the built-in step still runs, so only namespace mode needs them.
        mode == "namespace",
        f"unavailable: {problem}; the built-in step still runs, user scripts (--script) do not",
        "run prepflow on Linux as root, or enable unprivileged user namespaces (sysctl "
        "kernel.unprivileged_userns_clone=1); or make scripts read their folders below "
        "$PREPFLOW_ML_ROOT and set PREPFLOW_ISOLATION=none",
    )


def check_node() -> LocalCheck:
    """Check Node.js and npx, which ``synth``, ``deploy`` and ``destroy`` need for the CDK."""
    fix = f"install Node.js {MIN_NODE_MAJOR} or later with npm (needed only to synth or deploy)"
    node = shutil.which("node")
    if node is None:
        return LocalCheck("node", False, False, "node not found on PATH", fix)
    output = _command_output([node, "--version"])
    match = re.match(r"v?(\d+)\.", output or "")
    if match is None:
        return LocalCheck("node", False, False, f"'node --version' failed: {output!r}", fix)
    if int(match.group(1)) < MIN_NODE_MAJOR:
        return LocalCheck(
            "node", False, False, f"Node.js {output} is older than v{MIN_NODE_MAJOR}", fix
        )
    if shutil.which("npx") is None:
        return LocalCheck("node", False, False, f"Node.js {output}, but npx not found", fix)
    return LocalCheck("node", True, False, f"Node.js {output} and npx at {node}")


def check_docker() -> LocalCheck:
    """Check the Docker client and daemon, which ``deploy`` needs to build the image."""
    fix = "install Docker and start its daemon (needed only to deploy to AWS)"
    docker = shutil.which("docker")
    if docker is None:
        return LocalCheck("docker", False, False, "docker not found on PATH", fix)
    try:
        done = subprocess.run(
            [docker, "info", "--format", "{{.ServerVersion}}"],
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_SECONDS,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return LocalCheck("docker", False, False, f"'docker info' failed: {error}", fix)
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or ["no message"])[-1]
        return LocalCheck("docker", False, False, f"the daemon does not respond: {reason}", fix)
    return LocalCheck("docker", True, False, f"daemon {done.stdout.strip()} responds")


def check_home(home: Path) -> LocalCheck:
    """Check that the home (or the folder that will hold it) accepts new files."""
    fix = f"set PREPFLOW_HOME (or --home) to a folder you can write to, or fix {home}'s rights"
    if home.exists() and not home.is_dir():
        return LocalCheck("store folder", False, True, f"{home} exists but is not a folder", fix)
    folder = home if home.is_dir() else _existing_parent(home)
    try:
        with tempfile.TemporaryDirectory(dir=folder, prefix=".prepflow-doctor-"):
            pass
    except OSError as error:
        return LocalCheck(
            "store folder", False, True, f"cannot write in {folder}: {error.strerror}", fix
        )
    if folder != home:
        return LocalCheck(
            "store folder", True, True, f"{home} does not exist yet; the first run creates it"
        )
    return LocalCheck("store folder", True, True, f"{home} is writable")


def check_disk(home: Path) -> LocalCheck:
    folder = home if home.is_dir() else _existing_parent(home)
    free = shutil.disk_usage(folder).free
    gib = free / (1 << 30)
    if free < LOW_DISK_BYTES:
        return LocalCheck(
            "free disk",
            False,
            False,
            f"{gib:.2f} GiB free in {folder}: a job copies its input and writes its output there",
            "free space on that file system, or set PREPFLOW_HOME to a folder on another one",
        )
    return LocalCheck("free disk", True, False, f"{gib:.1f} GiB free in {folder}")


def check_database(path: Path, name: str, *, table: str | None) -> LocalCheck:
    """Open a SQLite database read-only and run SQLite's quick integrity check on it."""
    if not path.exists():
        return LocalCheck(name, True, True, f"{path} does not exist yet; the first run creates it")
    fix = (
        f"stop every prepflow process using this home, move {path} aside (its records are "
        "lost, the buckets' files stay), and run the command again"
    )
    try:
        with contextlib.closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)) as db:
            (integrity,) = db.execute("PRAGMA quick_check(1)").fetchone()
            count = db.execute(f"SELECT count(*) FROM {table}").fetchone()[0] if table else None
    except sqlite3.Error as error:
        return LocalCheck(name, False, True, f"cannot read {path}: {error}", fix)
    if integrity != "ok":
        return LocalCheck(name, False, True, f"{path} is damaged: {integrity}", fix)
    counted = f", {count} job records" if count is not None else ""
    return LocalCheck(name, True, True, f"{path} is readable{counted}")


def _existing_parent(path: Path) -> Path:
    for parent in path.parents:
        if parent.is_dir():
            return parent
    return Path("/")


def _command_output(argv: list[str]) -> str | None:
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_SECONDS, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None
