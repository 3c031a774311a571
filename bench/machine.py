"""Facts about the machine, the software and the input, printed beside benchmark results."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

from process_timing import GNU_TIME

REPO_ROOT = Path(__file__).resolve().parents[1]


def machine_facts(python: str, prepflow: Path, input_file: Path, rows_in: int) -> dict[str, str]:
    """Describe the machine, the software versions and the input, for the results page."""
    cpu_model = _first_field("/proc/cpuinfo", "model name") or platform.processor() or "unknown"
    memory_kib = _first_field("/proc/meminfo", "MemTotal")
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    python_version = subprocess.run(
        [python, "-c", "import sys; print(sys.version.split()[0])"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    settings = sorted(name for name in os.environ if name.startswith("PREPFLOW_"))
    # These change interpreter start-up: whether bytecode is cached, where modules come from.
    python_variables = sorted(
        f"{name}={value}" for name, value in os.environ.items() if name.startswith("PYTHON")
    )
    return {
        "CPU": cpu_model,
        "cores": f"{os.cpu_count()} logical, {usable} usable by this process",
        "memory": _format_meminfo(memory_kib),
        "OS": f"{platform.system()} {platform.release()}",
        "Python": f"{python_version} ({python})",
        "prepflow": f"{_version('prepflow')}, commit {_git_commit()}",
        "polars": _version("polars"),
        "prepflow command": f"{prepflow} (interpreter: {_interpreter(prepflow)})",
        "peak RSS source": "/usr/bin/time -v"
        if GNU_TIME.exists()
        else "os.wait4 rusage of the child (/usr/bin/time not found)",
        "input": f"{input_file} ({input_file.stat().st_size:,} bytes, {rows_in:,} data rows)",
        "PREPFLOW_* variables set": ", ".join(settings) if settings else "none",
        "PYTHON* variables set": ", ".join(python_variables) if python_variables else "none",
        "load average at start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def _interpreter(script: Path) -> str:
    """Return the interpreter named on a script's #! line, or "unknown"."""
    try:
        with script.open("rb") as handle:
            first = handle.readline(4096).decode("utf-8", "replace").strip()
    except OSError:
        return "unknown"
    return first[2:].strip() if first.startswith("#!") else "unknown (not a #! script)"


def _first_field(path: str, name: str) -> str | None:
    try:
        with open(path) as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key.strip() == name:
                    return value.strip()
    except OSError:
        return None
    return None


def _format_meminfo(value: str | None) -> str:
    if not value or not value.split()[0].isdigit():
        return "unknown"
    return f"{int(value.split()[0]) / 1024**2:.1f} GiB"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _git_commit() -> str:
    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(REPO_ROOT), *args], capture_output=True, text=True, check=False
        )
        return done.stdout.strip() if done.returncode == 0 else ""

    commit = git("rev-parse", "--short=12", "HEAD") or "unknown"
    changed = git("status", "--porcelain", "--untracked-files=no", "--", "src", "pyproject.toml")
    return commit + (" with uncommitted changes in src/ or pyproject.toml" if changed else "")
