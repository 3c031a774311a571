"""The command line as people and scripts see it: tables, --json shapes, exit codes, doctor,
init, completion, and progress only on a terminal."""

from __future__ import annotations

import json
import os
import pty
import select
import sqlite3
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from prepflow.cli import app
from prepflow.starter import STARTER_FILES
from tests.helpers import json_output

RAW = "mlops-lambda-preprocessing-pipeline-raw-data-bucket"
PTY_DEADLINE_SECONDS = 180


@pytest.fixture
def invoke(home: Path):
    """Run the typer app in this process with PREPFLOW_HOME set to ``home``."""

    def run(*args: str, env: dict[str, str] | None = None) -> Result:
        environment = {"PREPFLOW_HOME": str(home), **(env or {})}
        return CliRunner().invoke(app, list(args), env=environment, prog_name="prepflow")

    return run


def run_files(cli, tmp_path: Path, *contents: str) -> list[dict[str, Any]]:
    paths = []
    for number, text in enumerate(contents):
        path = tmp_path / f"orders{number}.csv"
        path.write_text(text)
        paths.append(str(path))
    result = cli("run", *paths, "--json")
    assert result.returncode == 0, result.stderr
    return json_output(result)


# -- jobs list ------------------------------------------------------------------------------


def test_jobs_list_table_layout(cli, invoke, tmp_path):
    jobs = run_files(cli, tmp_path, "id,amount\n1,10\n2,\n3,30\n", "id\n7\n")

    result = invoke("jobs", "list")

    assert result.exit_code == 0, result.output
    header, *rows = result.stdout.splitlines()
    assert header.split() == [
        "JOB", "NAME", "STATUS", "STARTED", "(UTC)", "DURATION", "ROWS", "IN", "OUT",
        "REJECTED", "INPUT",
    ]  # fmt: skip
    assert len(rows) == 2
    # Every column starts where its header starts, so the table reads in columns.
    status_at = header.index("STATUS")
    input_at = header.index("INPUT")
    for row in rows:
        assert row[status_at:].startswith("Completed ")
        assert row[input_at:].startswith(f"s3://{RAW}/input/orders")
    by_name = {row.split()[0]: row for row in rows}
    first = by_name[jobs[0]["job_name"]]
    # Numbers are right-aligned: each ends where its header ends.
    for title, value in (("ROWS IN", "3"), ("OUT", "2"), ("REJECTED", "0")):
        end = header.index(title) + len(title)
        assert first[end - len(value) : end] == value, title
        assert first[end] == " "
    assert "\x1b" not in result.stdout


def test_jobs_list_json_shape(cli, invoke, tmp_path):
    (job,) = run_files(cli, tmp_path, "id,amount\n1,10\n2,\n")

    result = invoke("jobs", "list", "--json")

    assert result.exit_code == 0, result.output
    (listed,) = json.loads(result.stdout)
    assert listed["job_name"] == job["job_name"]
    expected_types = {
        "job_name": str,
        "status": str,
        "inputs": list,
        "outputs": list,
        "rows_in": int,
        "rows_out": int,
        "rows_rejected": int,
        "duration_s": float,
    }
    for key, kind in expected_types.items():
        assert isinstance(listed[key], kind), key
    assert (listed["rows_in"], listed["rows_out"], listed["rows_rejected"]) == (2, 1, 0)


# -- exit codes -----------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["describe", "logs", "stop"])
def test_unknown_job_exits_3(cli, invoke, tmp_path, command):
    run_files(cli, tmp_path, "id\n1\n")

    result = invoke("jobs", command, "prepflow-no-such-job")

    assert result.exit_code == 3
    assert "processing job not found: 'prepflow-no-such-job'" in result.stderr


@pytest.mark.parametrize("command", ["describe", "logs", "stop"])
def test_invalid_job_name_exits_2(invoke, command):
    result = invoke("jobs", command, "no/such job")

    assert result.exit_code == 2
    assert "invalid job name 'no/such job'" in result.stderr


def test_missing_home_exits_3(invoke, home):
    result = invoke("jobs", "describe", "prepflow-anything")

    assert result.exit_code == 3
    assert "no prepflow home at" in result.stderr
    assert not home.exists()


def test_configuration_error_exits_2(invoke, tmp_path):
    data = tmp_path / "orders.csv"
    data.write_text("id\n1\n")

    result = invoke("run", str(data), env={"PREPFLOW_RAW_BUCKET": ".."})

    assert result.exit_code == 2
    assert "invalid bucket name '..'" in result.stderr


def test_jobs_stop_json_for_ended_job(cli, invoke, tmp_path):
    (job,) = run_files(cli, tmp_path, "id\n1\n")

    result = invoke("jobs", "stop", job["job_name"], "--json")

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {
        "job_name": job["job_name"],
        "status": "Completed",
        "stop": False,
    }


# -- doctor ---------------------------------------------------------------------------------


def doctor_checks(result: Result) -> dict[str, dict[str, Any]]:
    checks = json.loads(result.stdout)
    for check in checks:
        assert set(check) == {"check", "ok", "required", "detail", "fix"}
        assert isinstance(check["ok"], bool)
        assert isinstance(check["required"], bool)
        assert isinstance(check["detail"], str)
        assert isinstance(check["fix"], str)
    return {check["check"]: check for check in checks}


def test_doctor_healthy_home(cli, invoke, tmp_path):
    run_files(cli, tmp_path, "id\n1\n")

    result = invoke("doctor", "--json")
    text = invoke("doctor")

    checks = doctor_checks(result)
    assert result.exit_code == 0, result.stdout
    assert list(checks) == [
        "python", "mount namespaces", "node", "docker", "store folder", "free disk",
        "job database", "object store database",
    ]  # fmt: skip
    assert checks["job database"]["ok"] is True
    assert "1 job records" in checks["job database"]["detail"]
    assert checks["store folder"]["ok"] is True
    assert text.exit_code == 0
    assert "ok    job database:" in text.stdout
    assert "\x1b" not in text.stdout


def test_doctor_corrupt_job_database(invoke, home):
    home.mkdir()
    (home / "jobs.db").write_bytes(b"this is not a SQLite database" * 100)

    result = invoke("doctor", "--json")
    text = invoke("doctor")

    database = doctor_checks(result)["job database"]
    assert result.exit_code == 1
    assert database["ok"] is False
    assert database["required"] is True
    assert "file is not a database" in database["detail"]
    assert "move" in database["fix"]
    assert "jobs.db aside" in database["fix"]
    assert text.exit_code == 1
    assert "FAIL  job database:" in text.stdout
    assert "      fix: stop every prepflow process" in text.stdout


def test_doctor_damaged_table(invoke, home):
    home.mkdir()
    with sqlite3.connect(home / "jobs.db") as connection:
        connection.execute("CREATE TABLE other (x)")

    database = doctor_checks(invoke("doctor", "--json"))["job database"]

    assert database["ok"] is False
    assert "no such table: jobs" in database["detail"]


def test_doctor_home_is_a_file(invoke, home):
    home.write_text("not a folder")

    result = invoke("doctor", "--json")

    store = doctor_checks(result)["store folder"]
    assert result.exit_code == 1
    assert store["ok"] is False
    assert "is not a folder" in store["detail"]
    assert "PREPFLOW_HOME" in store["fix"]


def test_doctor_home_not_writable(invoke):
    # /proc refuses new folders even to root, unlike a folder with mode 0500.
    result = invoke("doctor", "--json", env={"PREPFLOW_HOME": "/proc/prepflow-home"})

    store = doctor_checks(result)["store folder"]
    assert result.exit_code == 1
    assert store["ok"] is False
    assert "cannot write in /proc" in store["detail"]


def test_doctor_missing_home_passes(invoke, home):
    result = invoke("doctor", "--json")

    checks = doctor_checks(result)
    assert "does not exist yet" in checks["store folder"]["detail"]
    assert checks["job database"]["ok"] is True
    assert not home.exists()
    assert list(home.parent.glob(".prepflow-doctor-*")) == []


def test_doctor_without_node_or_docker(invoke, tmp_path):
    empty = tmp_path / "bin"
    empty.mkdir()

    checks = doctor_checks(invoke("doctor", "--json", env={"PATH": str(empty)}))

    assert checks["node"]["ok"] is False
    assert checks["node"]["required"] is False
    assert "node not found on PATH" in checks["node"]["detail"]
    assert checks["docker"]["ok"] is False
    assert "Node.js" in checks["node"]["fix"]


# -- init -----------------------------------------------------------------------------------


def test_init_writes_packaged_files(invoke, tmp_path):
    target = tmp_path / "project"

    result = invoke("init", str(target))

    assert result.exit_code == 0, result.output
    packaged = resources.files("prepflow") / "starter_files"
    for name in STARTER_FILES:
        assert (target / name).read_bytes() == packaged.joinpath(name).read_bytes(), name
        assert f"wrote {target / name}" in result.stdout
    assert "prepflow run --recipe" in result.stdout


def test_init_refuses_overwrite(invoke, tmp_path):
    (tmp_path / "recipe.yaml").write_text("mine\n")

    result = invoke("init", str(tmp_path))

    assert result.exit_code == 2
    assert f"not overwriting existing file(s): {tmp_path / 'recipe.yaml'}" in result.stderr
    assert (tmp_path / "recipe.yaml").read_text() == "mine\n"
    assert not (tmp_path / "preprocessing_script.py").exists()


def test_init_force_replaces(invoke, tmp_path):
    (tmp_path / "recipe.yaml").write_text("mine\n")

    result = invoke("init", str(tmp_path), "--force", "--json")

    assert result.exit_code == 0, result.output
    written = json.loads(result.stdout)
    assert written["files"] == [str(tmp_path / name) for name in STARTER_FILES]
    assert written["next"].startswith("prepflow run --recipe ")
    assert (tmp_path / "recipe.yaml").read_text() != "mine\n"


def test_init_files_run(cli, tmp_path):
    # The next command that init prints works on the files it wrote.
    written = cli("init", "--json", cwd=tmp_path)
    assert written.returncode == 0, written.stderr
    command = json_output(written)["next"].split()

    result = cli(*command[1:], "--json", cwd=tmp_path)
    script = cli("run", "--script", "preprocessing_script.py", "employees.csv", cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    (job,) = json_output(result)
    assert job["status"] == "Completed"
    assert job["rows_in"] == 20
    assert job["rows_rejected"] == 0
    assert {uri.rsplit("/", 1)[-1] for uri in job["outputs"]} == {
        "train.parquet", "validation.parquet", "test.parquet",
    }  # fmt: skip
    assert script.returncode == 0, script.stderr


# -- completion -----------------------------------------------------------------------------


def test_show_completion_bash():
    # A separate process: typer's completion option reads process-wide state, which other
    # in-process invocations of the app can leave changed.
    # The installed command, since the script names the program it was started as.
    command = Path(sys.executable).parent / "prepflow"
    result = subprocess.run(
        [str(command), "--show-completion", "bash"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert "_PREPFLOW_COMPLETE=complete_bash" in result.stdout
    assert "-F _prepflow_completion" in result.stdout


# -- progress and colour --------------------------------------------------------------------


def run_on_terminal(args: list[str], home: Path, env: dict[str, str] | None = None) -> str:
    """Run ``prepflow ARGS`` with stdout and stderr on a pseudo-terminal; return all it wrote."""
    controller, terminal = pty.openpty()
    environment = {**os.environ, "PREPFLOW_HOME": str(home), "TERM": "xterm"}
    environment.pop("NO_COLOR", None)
    environment.update(env or {})
    process = subprocess.Popen(
        [sys.executable, "-m", "prepflow", *args],
        stdin=subprocess.DEVNULL,
        stdout=terminal,
        stderr=terminal,
        env=environment,
    )
    os.close(terminal)
    chunks = []
    deadline = time.monotonic() + PTY_DEADLINE_SECONDS
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([controller], [], [], 1.0)
            if not ready:
                continue
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # EIO: every writer closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        process.wait(timeout=max(deadline - time.monotonic(), 1.0))
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(controller)
    assert process.returncode == 0, b"".join(chunks).decode("utf-8", "replace")
    return b"".join(chunks).decode("utf-8", "replace")


def large_csv(tmp_path: Path) -> Path:
    path = tmp_path / "large.csv"
    row = "1," + "x" * 98 + "\n"
    with path.open("w") as handle:
        handle.write("id,text\n")
        handle.write(row * (10 * 1024 * 1024 // len(row)))
    return path


def test_upload_progress_on_terminal(home, tmp_path):
    data = large_csv(tmp_path)

    output = run_on_terminal(["run", str(data)], home)

    assert "uploading large.csv: " in output
    assert "10.0 MiB of 10.0 MiB (100%)" in output
    assert "\x1b[32mCompleted\x1b[0m" in output


def test_no_colour_with_no_color(home, tmp_path):
    data = tmp_path / "small.csv"
    data.write_text("id\n1\n")

    output = run_on_terminal(["run", str(data)], home, env={"NO_COLOR": "1"})

    assert "Completed" in output
    assert "\x1b" not in output


def test_no_progress_when_piped(cli, tmp_path):
    data = large_csv(tmp_path)

    result = cli("run", str(data))

    assert result.returncode == 0, result.stderr
    assert "uploading" not in result.stderr
    assert "\r" not in result.stderr
    assert "\x1b" not in result.stdout + result.stderr
    assert f"uploaded {data} to s3://{RAW}/input/large.csv" in result.stderr
