"""Usage and configuration errors: exit code 2, a message that names the value, no work done."""

from __future__ import annotations

import os

import pytest

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
        ("PROCESSING_INSTANCE_COUNT", "2", "runs single-instance jobs only"),
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
