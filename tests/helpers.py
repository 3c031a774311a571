"""Constants and helpers that tests of several tiers import (fixtures live in conftest.py)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from prepflow.jobs.isolation import namespace_problem

REPO_ROOT = Path(__file__).resolve().parent.parent
# The reference sample is not part of the repository; REFERENCE_SAMPLE_CSV points to it where
# it is not in the shared folder beside the checkout.
MOCK_DATA = Path(
    os.environ.get("REFERENCE_SAMPLE_CSV", REPO_ROOT.parent / "shared" / "data" / "mock_data.csv")
)
SAMPLE_DATA = REPO_ROOT / "examples" / "data" / "employees.csv"
EXAMPLE_SCRIPT = REPO_ROOT / "examples" / "scripts" / "preprocessing_script.py"
CASES = REPO_ROOT / "tests" / "fixtures" / "cases"

requires_namespaces = pytest.mark.skipif(
    namespace_problem() is not None,
    reason=f"user scripts need mount namespaces: {namespace_problem()}",
)


def json_output(result: subprocess.CompletedProcess[str]) -> Any:
    try:
        return json.loads(result.stdout)
    except ValueError:
        pytest.fail(f"not JSON (exit {result.returncode}):\n{result.stdout}\n{result.stderr}")


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def load_case(name: str) -> Any:
    return json.loads((CASES / name).read_text())


def wait_until(condition: Callable[[], Any], *, timeout: float, description: str) -> Any:
    """Poll ``condition`` with backoff until it returns something true; fail at the deadline."""
    deadline = time.monotonic() + timeout
    delay = 0.05
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(delay)
        delay = min(delay * 1.5, 0.5)
    pytest.fail(f"timed out after {timeout} s waiting for {description}")


def processes_with(token: str) -> list[int]:
    """Return the pids of processes whose command line contains ``token``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if token.encode() in command:
            found.append(int(entry.name))
    return found
