"""`prepflow jobs`: list, describe and logs after real runs; clear errors for unknown jobs."""

from __future__ import annotations

from tests.helpers import json_output, requires_namespaces


def run_one(cli, tmp_path, *extra):
    data = tmp_path / "orders.csv"
    data.write_text("id,amount\n1,10\n2,\n")
    result = cli("run", str(data), "--json", *extra)
    (job,) = json_output(result)
    return job


def test_list_shows_job(cli, tmp_path):
    job = run_one(cli, tmp_path)

    listed = json_output(cli("jobs", "list", "--json"))
    table = cli("jobs", "list")

    assert [j["job_name"] for j in listed] == [job["job_name"]]
    assert listed[0]["status"] == "Completed"
    assert listed[0]["rows_out"] == 1
    assert job["job_name"] in table.stdout
    assert "Completed" in table.stdout


def test_list_filters_by_status(cli, tmp_path):
    run_one(cli, tmp_path)

    failed = json_output(cli("jobs", "list", "--status", "Failed", "--json"))

    assert failed == []


def test_describe_shows_request(cli, tmp_path):
    job = run_one(cli, tmp_path)

    described = json_output(cli("jobs", "describe", job["job_name"], "--json"))

    assert described["status"] == "Completed"
    request = described["request"]
    assert request["ProcessingJobName"] == job["job_name"]
    (data_input,) = request["ProcessingInputs"]
    assert data_input["S3Input"]["S3DataType"] == "ManifestFile"
    assert data_input["S3Input"]["LocalPath"] == "/opt/ml/processing/input"
    assert described["manifest_uri"] == data_input["S3Input"]["S3Uri"]
    assert request["AppSpecification"]["ContainerEntrypoint"] == [
        "python3",
        "-m",
        "prepflow.processing",
    ]


@requires_namespaces
def test_logs_show_script_output(cli, tmp_path):
    script = tmp_path / "chatty.py"
    script.write_text(
        "import sys\nprint('hello from the job')\nprint('a warning', file=sys.stderr)\n"
        "import shutil; shutil.copy('/opt/ml/processing/input/orders.csv',"
        " '/opt/ml/processing/output/orders.csv')\n"
    )
    job = run_one(cli, tmp_path, "--script", str(script))

    logs = cli("jobs", "logs", job["job_name"])

    assert logs.returncode == 0
    assert "hello from the job" in logs.stdout
    assert "a warning" in logs.stdout


def test_unknown_job_is_error(cli):
    result = cli("jobs", "describe", "prepflow-no-such-job")

    assert result.returncode == 1
    assert "processing job not found: 'prepflow-no-such-job'" in result.stderr
