"""Fixtures of the dashboard tests: a prepflow home with a finished job, and ``prepflow ui``.

Each module gets its own home and server, started once, because a real job and a server
process take a few seconds each.
"""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import pytest

from tests.helpers import REPO_ROOT, SAMPLE_DATA

RECIPE = REPO_ROOT / "examples" / "recipes" / "employees.yaml"
# Rows that the employees recipe rejects, one reason each; appended to a slice of the sample.
BAD_ROWS = (
    "9001,Employee_9001,old,50000,2020-01-01,,IT,5\n",
    "9002,Employee_9002,30,50000,yesterday,,HR,5\n",
    "9003,Employee_9003,-4,50000,2020-01-01,,HR,5\n",
)
REJECT_REASONS = ["invalid float", "invalid date", "below min 0.0"]
SAMPLE_ROWS = 60
COMMAND_TIMEOUT_SECONDS = 180
SERVER_START_SECONDS = 60


@dataclass(frozen=True)
class Home:
    """A prepflow home and the job that ran in it."""

    path: Path
    job: dict[str, Any]

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "PREPFLOW_HOME": str(self.path)}

    def prepflow(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "prepflow", *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=COMMAND_TIMEOUT_SECONDS,
            check=False,
        )

    def run_job(self, data: Path) -> dict[str, Any]:
        """Run the employees recipe on ``data`` and return the job as ``run --json`` prints it."""
        result = self.prepflow("run", "--json", "--recipe", str(RECIPE), str(data))
        assert result.returncode == 0, result.stderr
        (job,) = json.loads(result.stdout)
        return job

    def report(self) -> dict[str, Any]:
        report_json = Path(self.job["report"]["path"]).with_name("report.json")
        loaded: dict[str, Any] = json.loads(report_json.read_text())
        return loaded


def write_sample(path: Path, rows: int = SAMPLE_ROWS) -> Path:
    """Write the first ``rows`` rows of the example data plus the rows the recipe rejects."""
    lines = SAMPLE_DATA.read_text().splitlines(keepends=True)[: rows + 1]
    path.write_text("".join(lines) + "".join(BAD_ROWS))
    return path


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Home:
    folder = tmp_path_factory.mktemp("ui")
    data = write_sample(folder / "staff.csv")
    empty = Home(folder / "home", {})
    return Home(empty.path, empty.run_job(data))


@pytest.fixture(scope="module")
def server(home: Home) -> Iterator[str]:
    """Start ``prepflow ui --port 0`` on ``home``; yield the URL it prints."""
    # stderr goes to a file, because an unread pipe could fill up and block the server.
    errors = (home.path.parent / "ui-stderr.log").open("w+")
    process = subprocess.Popen(
        [sys.executable, "-m", "prepflow", "ui", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=errors,
        text=True,
        env=home.env,
    )
    try:
        yield _read_url(process, errors)
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        errors.close()


def _read_url(process: subprocess.Popen[str], errors: TextIO) -> str:
    """Wait for the server's "dashboard: URL" line; fail with its stderr if it exits first."""
    assert process.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + SERVER_START_SECONDS
    while time.monotonic() < deadline:
        if selector.select(timeout=0.5):
            line = process.stdout.readline()
            if line.startswith("dashboard: "):
                return line.removeprefix("dashboard: ").strip()
            if not line and process.poll() is not None:
                break
    process.kill()
    process.wait()
    errors.seek(0)
    pytest.fail(
        f"prepflow ui printed no URL within {SERVER_START_SECONDS} s; stderr:\n{errors.read()}"
    )
