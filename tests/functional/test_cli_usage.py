"""Usage and configuration errors: exit code 2, a message that names the value, no work done."""

from __future__ import annotations

import os

import pytest

from tests.helpers import json_output

RAW = "mlops-lambda-preprocessing-pipeline-raw-data-bucket"


@pytest.mark.parametrize(
    "arguments",
    [
        ["run", "--bogus", "x.csv"],
        ["run"],
        ["jobs", "describe"],
        ["no-such-command"],
        ["run", "--max-runtime", "abc", "x.csv"],
        ["watch", "--interval", "0"],
    ],
)
def test_usage_error_exit_code(cli, arguments):
    result = cli(*arguments)

    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "Usage:" in result.stderr


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("PREPFLOW_RAW_BUCKET", "..", "invalid bucket name '..'"),
        ("PREPFLOW_LOGS_BUCKET", "a b", "invalid bucket name 'a b'"),
        ("APP_PREFIX", "x/../..", "APP_PREFIX 'x/../..' gives invalid bucket name"),
        ("SAGEMAKER_ROLE_ARN", "x", "expected an IAM role ARN"),
        ("PREPFLOW_HOME", "", "PREPFLOW_HOME='': must name a folder"),
        ("PREPFLOW_OUTPUT_PREFIX", "../x", "must be a relative S3 prefix"),
        ("PROCESSING_INSTANCE_COUNT", "0", "PROCESSING_INSTANCE_COUNT"),
        ("PREPFLOW_ISOLATION", "docker", "PREPFLOW_ISOLATION='docker'"),
    ],
)
def test_bad_setting_rejected_before_upload(cli, home, tmp_path, variable, value, expected):
    data = tmp_path / "orders.csv"
    data.write_text("id\n1\n")

    result = cli("run", str(data), env={variable: value})

    assert result.returncode == 2
    assert expected in result.stderr
    assert not (home / "buckets" / RAW).exists()


def test_home_not_writable(cli, tmp_path):
    data = tmp_path / "orders.csv"
    data.write_text("id\n1\n")

    result = cli("run", str(data), env={"PREPFLOW_HOME": "/proc/prepflow-home"})

    assert result.returncode == 2
    assert "cannot use PREPFLOW_HOME='/proc/prepflow-home'" in result.stderr


def test_log_level_any_case(cli, home):
    result = cli("jobs", "list", env={"LOG_LEVEL": "debug"})

    assert result.returncode == 0, result.stderr


def test_fifo_is_not_a_file(cli, tmp_path):
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)

    result = cli("run", str(fifo))

    assert result.returncode == 2
    assert "not a regular file or folder" in result.stderr


def test_log_level_option_checked(cli):
    result = cli("--log-level", "bogus", "jobs", "list")

    assert result.returncode == 2
    assert "--log-level 'BOGUS' is not one of" in result.stderr


@pytest.mark.parametrize("home_value", ["", "//"])
def test_home_option_root_or_empty(cli, home_value):
    result = cli("--home", home_value, "jobs", "list")

    assert result.returncode == 2
    assert "must name a folder other than" in result.stderr


def test_event_file_not_utf8(cli, tmp_path):
    event = tmp_path / "event.json"
    event.write_bytes(b'{"input_data_path": "s3://b/\xff"}')

    result = cli("invoke", "--event-file", str(event))

    assert result.returncode == 2
    assert "is not UTF-8 text" in result.stderr


def test_describe_invalid_job_name(cli, make_app):
    make_app()

    result = cli("jobs", "describe", "no/such job")

    assert result.returncode == 2
    assert "invalid job name 'no/such job'" in result.stderr


def test_jobs_list_ignores_instance_count(cli, make_app):
    make_app()

    result = cli("jobs", "list", env={"PROCESSING_INSTANCE_COUNT": "2"})

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "no jobs"


def test_jobs_list_creates_nothing_in_other_folder(cli, tmp_path):
    folder = tmp_path / "somewhere"
    folder.mkdir()

    result = cli("--home", str(folder), "jobs", "list")

    assert result.returncode == 0
    assert "no prepflow home" in result.stdout
    assert list(folder.iterdir()) == []


def test_run_folder_skips_home_and_dot_folders(cli, tmp_path):
    project = tmp_path / "project"
    (project / ".venv").mkdir(parents=True)
    (project / ".venv" / "hidden.csv").write_text("id\n1\n")
    (project / "data.csv").write_text("id\n1\n")
    first = cli("--home", str(project / ".prepflow"), "run", str(project), "--json")
    assert first.returncode == 0, first.stderr
    (project / "home2").mkdir()

    again = cli("--home", str(project / "home2"), "run", str(project), "--json")

    assert again.returncode == 0, again.stderr
    assert [job["inputs"] for job in json_output(again)] == [[f"s3://{RAW}/input/data.csv"]]
