"""What a job's command can reach, and what happens to it when its runner goes away."""

from __future__ import annotations

import json
import os
import shutil
import signal
import uuid
from pathlib import Path

import pytest

from tests.helpers import json_output, processes_with, requires_namespaces, wait_until

RAW = "mlops-lambda-preprocessing-pipeline-raw-data-bucket"


@requires_namespaces
def test_script_cannot_reach_raw_data(cli, home, tmp_path):
    script = tmp_path / "tamper.py"
    script.write_text(
        "import os, sys\n"
        f"target = {str(home / 'buckets' / RAW / 'input' / 'data.csv')!r}\n"
        "try:\n"
        "    with open(target, 'a') as handle:\n"
        "        handle.write('tampered')\n"
        "except OSError as error:\n"
        "    print('blocked:', error.strerror, file=sys.stderr)\n"
        "    sys.exit(4)\n"
    )
    data = tmp_path / "data.csv"
    data.write_text("id\n1\n")

    result = cli("run", str(data), "--json", "--script", str(script))

    (job,) = json_output(result)
    assert job["status"] == "Failed"
    assert "blocked:" in job["failure_reason"]
    assert (home / "buckets" / RAW / "input" / "data.csv").read_text() == "id\n1\n"


@requires_namespaces
def test_stop_reaches_script_sigterm_handler(cli, tmp_path):
    token = uuid.uuid4().hex
    script = tmp_path / f"graceful_{token}.py"
    script.write_text(
        "import signal, sys, time\n"
        "def leave(signum, frame):\n"
        "    print('cleaning up after SIGTERM', flush=True)\n"
        "    sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, leave)\n"
        "print('ready', flush=True)\n"
        "time.sleep(300)\n"
    )
    data = tmp_path / "data.csv"
    data.write_text("id\n1\n")
    (job,) = json_output(cli("run", str(data), "--json", "--no-wait", "--script", str(script)))
    wait_until(
        lambda: "ready" in cli("jobs", "logs", job["job_name"]).stdout,
        timeout=30,
        description="the script to start",
    )

    stopped = cli("jobs", "stop", job["job_name"])

    assert f"{job['job_name']} Stopped" in stopped.stdout
    assert "cleaning up after SIGTERM" in cli("jobs", "logs", job["job_name"]).stdout
    wait_until(
        lambda: not processes_with(token), timeout=15, description="the job's processes to end"
    )


@requires_namespaces
def test_killed_runner_takes_job_along(cli, home, tmp_path):
    token = uuid.uuid4().hex
    script = tmp_path / f"slow_{token}.py"
    script.write_text("import time\nprint('running', flush=True)\ntime.sleep(300)\n")
    data = tmp_path / "data.csv"
    data.write_text("id\n1\n")
    (job,) = json_output(cli("run", str(data), "--json", "--no-wait", "--script", str(script)))
    wait_until(lambda: processes_with(token), timeout=30, description="the script to start")
    status = json.loads((home / "jobs" / job["job_name"] / "status.json").read_text())
    supervisor = status["supervisor_pid"]

    os.kill(supervisor, signal.SIGKILL)

    wait_until(
        lambda: not processes_with(token), timeout=15, description="the job's processes to end"
    )
    described = json_output(cli("jobs", "describe", job["job_name"], "--json"))
    assert described["status"] == "Failed"
    assert "ended without recording a result" in described["failure_reason"]


def test_script_without_namespace_reads_ml_root(cli, home, tmp_path):
    script = tmp_path / "portable.py"
    script.write_text(
        "import os, shutil\n"
        "root = os.environ.get('PREPFLOW_ML_ROOT', '/opt/ml')\n"
        "shutil.copy(os.path.join(root, 'processing/input/data.csv'),\n"
        "            os.path.join(root, 'processing/output/copy.csv'))\n"
    )
    data = tmp_path / "data.csv"
    data.write_text("id\n1\n")

    result = cli(
        "run", str(data), "--json", "--script", str(script), env={"PREPFLOW_ISOLATION": "none"}
    )

    assert result.returncode == 0, result.stderr
    (job,) = json_output(result)
    assert job["status"] == "Completed"
    assert [uri.rsplit("/", 1)[-1] for uri in job["outputs"]] == ["copy.csv"]


@requires_namespaces
def test_script_cannot_unmount_hidden_home(cli, home, tmp_path):
    script = tmp_path / "unhide.py"
    script.write_text(
        "import subprocess, sys\n"
        f"home = {str(home)!r}\n"
        "result = subprocess.run(['umount', home], capture_output=True, text=True)\n"
        "print('umount exit', result.returncode, file=sys.stderr)\n"
        f"open({str(home / 'buckets' / RAW / 'input' / 'data.csv')!r}, 'a').write('tampered')\n"
    )
    data = tmp_path / "data.csv"
    data.write_text("id\n1\n")

    result = cli("run", str(data), "--json", "--script", str(script))

    (job,) = json_output(result)
    assert job["status"] == "Failed"
    assert "umount exit 0" not in job["failure_reason"]
    assert (home / "buckets" / RAW / "input" / "data.csv").read_text() == "id\n1\n"


@requires_namespaces
@pytest.mark.parametrize(
    "planting",
    [
        "os.symlink(secret, '/opt/ml/output/message')",
        "os.mkfifo('/opt/ml/output/message')",
        "shutil.rmtree(out); os.symlink(os.path.dirname(secret), out)",
        "os.mkfifo(out + '/result.csv')",
        "os.symlink(secret, out + '/copy.csv')",
    ],
)
def test_planted_links_and_fifos_ignored(cli, home, tmp_path, planting):
    secret = tmp_path / "secret.txt"
    secret.write_text("do not upload")
    script = tmp_path / "plant.py"
    script.write_text(
        "import os, shutil\n"
        f"secret = {str(secret)!r}\n"
        "out = '/opt/ml/processing/output'\n"
        f"{planting}\n"
    )
    data = tmp_path / "data.csv"
    data.write_text("id\n1\n")

    result = cli("run", str(data), "--json", "--script", str(script), timeout=60)

    (job,) = json_output(result)
    assert job["status"] == "Completed"
    assert job["outputs"] == []
    described = json_output(cli("jobs", "describe", job["job_name"], "--json"))
    assert described["exit_message"] is None
    uploaded = [p for p in (home / "buckets").rglob("*") if p.is_file()]
    assert all(p.read_bytes() != b"do not upload" for p in uploaded)


@requires_namespaces
def test_home_under_opt_keeps_outputs(cli, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs to create a folder in /opt")
    home = Path("/opt") / f"prepflow-test-{uuid.uuid4().hex}"
    data = tmp_path / "data.csv"
    data.write_text("id,v\n1,a\n2,\n")
    try:
        result = cli("run", str(data), "--json", env={"PREPFLOW_HOME": str(home)})

        (job,) = json_output(result)
        assert job["status"] == "Completed"
        assert job["rows_out"] == 1
        assert len(job["outputs"]) == 1
    finally:
        shutil.rmtree(home, ignore_errors=True)


def test_detached_child_does_not_hold_job(cli, tmp_path):
    token = uuid.uuid4().hex
    script = tmp_path / "daemon.py"
    script.write_text(
        "import subprocess, sys\n"
        f"subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)  # {token}'],\n"
        "                 start_new_session=True)\n"
        "subprocess.Popen([sys.executable, '-c',\n"
        f"                  'import time; time.sleep(60)  # {token}-group'])\n"
        "print('left two children behind')\n"
    )
    data = tmp_path / "data.csv"
    data.write_text("id\n1\n")

    result = cli(
        "run",
        str(data),
        "--json",
        "--script",
        str(script),
        env={"PREPFLOW_ISOLATION": "none"},
        timeout=30,
    )

    # The children sleep 60 s; the run's 30 s deadline above fails the test if it waited.
    (job,) = json_output(result)
    assert job["status"] == "Completed"
    wait_until(
        lambda: not processes_with(f"{token}-group"), timeout=15, description="the group to end"
    )
    for pid in processes_with(token):
        os.kill(pid, signal.SIGKILL)
