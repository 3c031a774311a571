"""`prepflow jobs`: list, describe and logs after real runs; clear errors for unknown jobs."""

from __future__ import annotations

import json

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


def test_unknown_job_is_error(cli, make_app):
    make_app()

    result = cli("jobs", "describe", "prepflow-no-such-job")

    assert result.returncode == 3
    assert "processing job not found: 'prepflow-no-such-job'" in result.stderr


def test_missing_home_not_created(cli, home):
    listed = cli("jobs", "list")
    described = cli("jobs", "describe", "prepflow-anything")

    assert listed.returncode == 0
    assert "no jobs: no prepflow home at" in listed.stdout
    assert described.returncode == 3
    assert "no prepflow home at" in described.stderr
    assert not home.exists()


def test_missing_home_lists_no_json_jobs(cli, home):
    listed = cli("jobs", "list", "--json")

    assert listed.returncode == 0
    assert json.loads(listed.stdout) == []
    assert not home.exists()


def test_completed_job_without_outputs(cli, tmp_path):
    script = tmp_path / "quiet.py"
    script.write_text("print('nothing to write')\n")
    data = tmp_path / "orders.csv"
    data.write_text("id\n1\n")

    result = cli("run", str(data), "--script", str(script))

    assert result.returncode == 0, result.stderr
    assert "output: none (the job wrote no files)" in result.stdout


@requires_namespaces
def test_output_symlink_reported_in_log(cli, tmp_path):
    script = tmp_path / "linker.py"
    script.write_text(
        "import os\n"
        "os.symlink('/etc/hostname', '/opt/ml/processing/output/host.txt')\n"
        "os.symlink('/etc', '/opt/ml/processing/output/etc')\n"
        "open('/opt/ml/processing/output/real.txt', 'w').write('ok')\n"
    )
    job = run_one(cli, tmp_path, "--script", str(script))

    logs = cli("jobs", "logs", job["job_name"]).stdout

    assert [uri.rsplit("/", 1)[-1] for uri in job["outputs"]] == ["real.txt"]
    assert "/opt/ml/processing/output/host.txt is not a regular file; not uploaded" in logs
    assert "/opt/ml/processing/output/etc is not a regular file; not uploaded" in logs


def test_damaged_store_points_to_doctor(cli, home, tmp_path):
    data = tmp_path / "a.csv"
    data.write_text("id,value\n1,a\n")
    assert cli("run", str(data)).returncode == 0
    (home / "store.db").write_text("not a database")

    result = cli("run", str(data))

    assert result.returncode == 2
    assert "file is not a database" in result.stderr
    assert "run 'prepflow doctor' to find which" in result.stderr
    assert "Traceback" not in result.stderr
