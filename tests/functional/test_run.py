"""`prepflow run`: an upload becomes a processed dataset, through real processes and files."""

from __future__ import annotations

import csv
import re
from pathlib import Path

from tests.helpers import (
    EXAMPLE_SCRIPT,
    SAMPLE_DATA,
    json_output,
    read_rows,
    requires_namespaces,
)

RAW = "mlops-lambda-preprocessing-pipeline-raw-data-bucket"
PROCESSED = "mlops-lambda-preprocessing-pipeline-processed-data-bucket"
MISSING = {"", "NA", "N/A", "null", "NULL", "NaN", "nan", "None", "n/a", "<NA>", "#N/A"}
JOB_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")


def complete_ids(path: Path) -> list[str]:
    """Ids of the rows with no missing value, counted without prepflow's code."""
    with path.open(newline="", encoding="utf-8") as handle:
        return [row["id"] for row in csv.DictReader(handle) if not MISSING & set(row.values())]


def output_file(home: Path, job_name: str, name: str) -> Path:
    return home / "buckets" / PROCESSED / "output" / job_name / name


def test_run_reference_sample(cli, home, mock_data):
    result = cli("run", str(mock_data), "--json")

    assert result.returncode == 0, result.stderr
    (job,) = json_output(result)
    assert job["status"] == "Completed"
    assert JOB_NAME.match(job["job_name"])
    assert job["inputs"] == [f"s3://{RAW}/input/mock_data.csv"]
    assert job["rows_in"] == 20000
    assert job["rows_out"] == 7472
    assert job["failure_reason"] is None
    assert job["duration_s"] > 0
    expected_uri = f"s3://{PROCESSED}/output/{job['job_name']}/processed_mock_data.csv"
    assert job["outputs"] == [expected_uri]

    rows = read_rows(output_file(home, job["job_name"], "processed_mock_data.csv"))
    assert len(rows) == 7472
    assert list(rows[0]) == [
        "id",
        "name",
        "age",
        "salary",
        "hire_date",
        "profile",
        "department",
        "bonus",
        "processed_timestamp",
    ]
    assert [row["id"] for row in rows] == complete_ids(mock_data)
    assert len({row["processed_timestamp"] for row in rows}) == 1


def test_run_shipped_sample(cli, home):
    result = cli("run", str(SAMPLE_DATA), "--json")

    assert result.returncode == 0, result.stderr
    (job,) = json_output(result)
    assert job["status"] == "Completed"
    assert job["rows_in"] == 20000
    assert job["rows_out"] == len(complete_ids(SAMPLE_DATA))
    rows = read_rows(output_file(home, job["job_name"], "processed_employees.csv"))
    assert [row["id"] for row in rows] == complete_ids(SAMPLE_DATA)


def test_run_keeps_values_as_read(cli, home, mock_data):
    result = cli("run", str(mock_data), "--json")
    (job,) = json_output(result)

    rows = read_rows(output_file(home, job["job_name"], "processed_mock_data.csv"))
    originals = {row["id"]: row for row in read_rows(mock_data)}
    for row in rows[:200]:
        row.pop("processed_timestamp")
        assert row == originals[row["id"]]


def test_run_raw_object_unchanged(cli, home, mock_data):
    cli("run", str(mock_data), "--json")

    raw_copy = home / "buckets" / RAW / "input" / "mock_data.csv"
    assert raw_copy.read_bytes() == mock_data.read_bytes()


@requires_namespaces
def test_run_user_script_same_rows(cli, home, mock_data):
    built_in = json_output(cli("run", str(mock_data), "--json"))[0]
    result = cli("run", str(mock_data), "--json", "--script", str(EXAMPLE_SCRIPT))

    assert result.returncode == 0, result.stderr
    (scripted,) = json_output(result)
    assert scripted["status"] == "Completed"
    assert scripted["rows_in"] == 20000
    assert scripted["rows_out"] == 7472
    by_step = read_rows(output_file(home, built_in["job_name"], "processed_mock_data.csv"))
    by_script = read_rows(output_file(home, scripted["job_name"], "processed_mock_data.csv"))
    for rows in (by_step, by_script):
        for row in rows:
            row.pop("processed_timestamp")
    assert by_script == by_step


@requires_namespaces
def test_script_failure_reported(cli, home, tmp_path):
    script = tmp_path / "broken.py"
    script.write_text(
        "import sys\n"
        "print('starting')\n"
        "print('line one of the trouble', file=sys.stderr)\n"
        "print('ValueError: column bonus is not numeric', file=sys.stderr)\n"
        "sys.exit(3)\n"
    )
    data = tmp_path / "small.csv"
    data.write_text("a,b\n1,2\n")

    result = cli("run", str(data), "--json", "--script", str(script))

    assert result.returncode == 1
    (job,) = json_output(result)
    assert job["status"] == "Failed"
    assert job["failure_reason"].startswith("AlgorithmError: exit code: 3")
    assert "ValueError: column bonus is not numeric" in job["failure_reason"]
    assert "line one of the trouble" in job["failure_reason"]
    assert job["outputs"] == []
    assert not (home / "buckets" / PROCESSED / "output" / job["job_name"]).exists()


def test_failure_reason_in_human_output(cli, tmp_path):
    data = tmp_path / "doubled.csv"
    data.write_text("a,b,a\n1,2,3\n")

    result = cli("run", str(data))

    assert result.returncode == 1
    assert "Failed" in result.stdout
    assert "duplicate column names in 'doubled.csv'" in result.stdout


def test_unsupported_file_type_is_usage_error(cli, home, tmp_path):
    data = tmp_path / "sheet.xlsx"
    data.write_bytes(b"PK\x03\x04")

    result = cli("run", str(data))

    assert result.returncode == 2
    assert "sheet.xlsx: unsupported file type" in result.stderr
    assert not (home / "buckets" / RAW).exists()


def test_missing_file_is_usage_error(cli, tmp_path):
    result = cli("run", str(tmp_path / "absent.csv"))

    assert result.returncode == 2
    assert "absent.csv: no such file or folder" in result.stderr


def test_invalid_setting_is_usage_error(cli, tmp_path):
    data = tmp_path / "small.csv"
    data.write_text("a\n1\n")

    result = cli("run", str(data), env={"PROCESSING_INSTANCE_COUNT": "many"})

    assert result.returncode == 2
    assert "PROCESSING_INSTANCE_COUNT='many'" in result.stderr


def test_home_option_beats_environment(cli, tmp_path):
    data = tmp_path / "small.csv"
    data.write_text("a\n1\n")
    chosen = tmp_path / "chosen-home"

    result = cli("--home", str(chosen), "run", str(data), "--json")

    assert result.returncode == 0, result.stderr
    assert (chosen / "buckets" / RAW / "input" / "small.csv").is_file()
    assert not (tmp_path / "home").exists()


def test_fifty_files_fifty_jobs(cli, home, tmp_path):
    folder = tmp_path / "batch"
    folder.mkdir()
    for number in range(50):
        (folder / f"part_{number:02d}.csv").write_text(f"id,value\n{number},x\n{number + 100},\n")

    result = cli("run", str(folder), "--json", env={"PREPFLOW_MAX_CONCURRENT_JOBS": "4"})

    assert result.returncode == 0, result.stderr
    jobs = json_output(result)
    assert len(jobs) == 50
    assert len({job["job_name"] for job in jobs}) == 50
    assert all(job["status"] == "Completed" for job in jobs)
    outputs = sorted(uri for job in jobs for uri in job["outputs"])
    assert len(outputs) == 50
    for job in jobs:
        (uri,) = job["outputs"]
        name = uri.rsplit("/", 1)[-1]
        rows = read_rows(output_file(home, job["job_name"], name))
        assert len(rows) == 1
        assert job["rows_in"] == 2
        assert job["rows_out"] == 1


def test_run_empty_file_skipped(cli, tmp_path):
    data = tmp_path / "daily_export.csv"
    data.write_bytes(b"")

    result = cli("run", str(data), "--json")

    assert result.returncode == 1
    assert json_output(result) == []
    assert "the object is empty (0 bytes)" in result.stderr
    assert "Traceback" not in result.stderr


def test_run_bad_key_fails_alone(cli, home, tmp_path):
    folder = tmp_path / "batch"
    (folder / "a..b").mkdir(parents=True)
    (folder / "good.csv").write_text("id\n1\n")
    (folder / "a..b" / "fine.csv").write_text("id\n2\n")
    deep = folder.joinpath(*["d" * 200] * 6)
    deep.mkdir(parents=True)
    (deep / "too_long.csv").write_text("id\n3\n")

    result = cli("run", str(folder), "--json")

    assert result.returncode == 1
    jobs = json_output(result)
    assert sorted(job["inputs"][0].rsplit("/", 1)[-1] for job in jobs) == ["fine.csv", "good.csv"]
    assert all(job["status"] == "Completed" for job in jobs)
    assert f"failed: {deep / 'too_long.csv'}" in result.stderr
    assert "longer than 1024 bytes" in result.stderr
