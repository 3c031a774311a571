"""MaxRuntimeInSeconds and stop requests end the whole process tree, as SageMaker reports."""

from __future__ import annotations

import uuid
from pathlib import Path

from tests.helpers import json_output, processes_with, requires_namespaces, wait_until


def sleeper_script(folder: Path, token: str) -> Path:
    """A script that starts a detached grandchild, then sleeps far past any limit."""
    script = folder / f"sleeper_{token}.py"
    script.write_text(
        "import subprocess, sys, time\n"
        f"subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)  # {token}'],\n"
        "                 start_new_session=True)\n"
        "print('sleeping', flush=True)\n"
        "time.sleep(300)\n"
    )
    return script


@requires_namespaces
def test_runtime_limit_stops_job_and_children(cli, tmp_path):
    token = uuid.uuid4().hex
    data = tmp_path / "small.csv"
    data.write_text("a\n1\n")

    result = cli(
        "run",
        str(data),
        "--json",
        "--max-runtime",
        "2",
        "--script",
        str(sleeper_script(tmp_path, token)),
    )

    assert result.returncode == 1
    (job,) = json_output(result)
    assert job["status"] == "Stopped"
    assert job["failure_reason"] == "Stopped: MaxRuntimeInSeconds (2 s) exceeded"
    assert job["outputs"] == []
    wait_until(
        lambda: not processes_with(token), timeout=15, description="the job's processes to end"
    )


@requires_namespaces
def test_stop_command_stops_job(cli, tmp_path):
    token = uuid.uuid4().hex
    data = tmp_path / "small.csv"
    data.write_text("a\n1\n")
    started = cli(
        "run", str(data), "--json", "--no-wait", "--script", str(sleeper_script(tmp_path, token))
    )
    (job,) = json_output(started)
    wait_until(lambda: processes_with(token), timeout=30, description="the job to start")

    stopped = cli("jobs", "stop", job["job_name"])

    assert stopped.returncode == 0, stopped.stderr
    assert f"{job['job_name']} Stopped" in stopped.stdout
    described = json_output(cli("jobs", "describe", job["job_name"], "--json"))
    assert described["status"] == "Stopped"
    assert described["failure_reason"] == "Stopped: stop requested by the user"
    wait_until(
        lambda: not processes_with(token), timeout=15, description="the job's processes to end"
    )
