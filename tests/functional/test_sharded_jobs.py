"""Jobs on several instances: one process per host, sharded inputs, merged outputs and counts."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from prepflow.jobs.spec import JobStatus

RAW = "mlops-lambda-preprocessing-pipeline-raw-data-bucket"
PROCESSED = "mlops-lambda-preprocessing-pipeline-processed-data-bucket"
LOGS = "mlops-lambda-preprocessing-pipeline-logs-bucket"
JOB_TIMEOUT = "240"


def put_files(app, folder: str, count: int, extra: bytes = b"") -> list[str]:
    """Put ``count`` CSV files in the raw bucket; each has one row with a missing value.

    No job starts, since nothing subscribes to the store's notifications here. ``extra`` is
    appended to the second file.
    """
    names = []
    for number in range(1, count + 1):
        name = f"part{number:02d}.csv"
        body = f"id,value\n{number},a{number}\n{number + 100},\n{number + 200},c{number}\n"
        app.store.put_object(
            RAW, f"{folder}/{name}", body.encode() + (extra if number == 2 else b"")
        )
        names.append(name)
    return names


def invoke(cli, folder: str, *options: str, env: dict[str, str] | None = None) -> dict:
    result = cli(
        "invoke",
        "--input",
        f"s3://{RAW}/{folder}/",
        "--json",
        "--timeout",
        JOB_TIMEOUT,
        *options,
        env=env,
    )
    assert result.returncode in (0, 1), result.stderr
    jobs = json.loads(result.stdout)
    assert len(jobs) == 1, result.stderr
    return dict(jobs[0])


def output_rows(home: Path, job: dict) -> list[tuple[str, str]]:
    """Return the (id, value) rows of every output file of the job, sorted."""
    rows = []
    for uri in job["outputs"]:
        path = home / "buckets" / uri.removeprefix("s3://")
        rows += [(row["id"], row["value"]) for row in csv.DictReader(io.StringIO(path.read_text()))]
    return sorted(rows)


def describe(cli, job_name: str) -> dict:
    result = cli("jobs", "describe", job_name, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_nine_files_on_three_hosts(cli, home, make_app):
    put_files(make_app(), "input/batch", 9)

    job = invoke(
        cli, "input/batch", "--instance-count", "3", env={"PREPFLOW_MAX_CONCURRENT_JOBS": "1"}
    )

    assert job["status"] == "Completed", job["failure_reason"]
    name = job["job_name"]
    hosts_folder = home / "jobs" / name / "hosts"
    assert sorted(p.name for p in hosts_folder.iterdir()) == ["algo-1", "algo-2", "algo-3"]
    for host in ("algo-1", "algo-2", "algo-3"):
        config = json.loads((hosts_folder / host / "ml/config/resourceconfig.json").read_text())
        assert config["current_host"] == host
        assert config["hosts"] == ["algo-1", "algo-2", "algo-3"]
    logs = sorted(p.name for p in (home / "buckets" / LOGS / "logs" / name).iterdir())
    assert logs == ["algo-1.log", "algo-2.log", "algo-3.log"]
    assert len(job["outputs"]) == 9
    assert (job["rows_in"], job["rows_out"], job["rows_rejected"]) == (27, 18, 0)
    # The limit on concurrent jobs counts jobs: three hosts ran in the one slot there is.
    status = json.loads((home / "jobs" / name / "status.json").read_text())
    assert status["slot"] == 0


def test_three_hosts_match_one_host(cli, home, make_app):
    put_files(make_app(), "input/batch", 9)

    sharded = invoke(cli, "input/batch", "--instance-count", "3")
    single = invoke(cli, "input/batch", "--instance-count", "1")

    assert sharded["status"] == single["status"] == "Completed"
    assert output_rows(home, sharded) == output_rows(home, single)
    assert len(output_rows(home, single)) == 18
    assert (sharded["rows_in"], sharded["rows_out"]) == (single["rows_in"], single["rows_out"])


def test_describe_shows_sharded_request(cli, home, make_app):
    put_files(make_app(), "input/batch", 3)
    job = invoke(cli, "input/batch", "--instance-count", "3")

    details = describe(cli, job["job_name"])

    cluster = details["request"]["ProcessingResources"]["ClusterConfig"]
    assert cluster["InstanceCount"] == 3
    distribution = {
        item["InputName"]: item["S3Input"]["S3DataDistributionType"]
        for item in details["request"]["ProcessingInputs"]
    }
    assert distribution == {"data": "ShardedByS3Key"}


def test_host_reports_merge_counts(cli, home, make_app):
    put_files(make_app(), "input/batch", 3)
    job = invoke(cli, "input/batch", "--instance-count", "3")

    reports = home / "buckets" / LOGS / "reports" / job["job_name"]

    names = sorted(p.name for p in reports.iterdir())
    assert names == [f"report-algo-{n}.{kind}" for n in (1, 2, 3) for kind in ("html", "json")]
    counts = [json.loads((reports / f"report-algo-{n}.json").read_text()) for n in (1, 2, 3)]
    assert [report["host"] for report in counts] == ["algo-1", "algo-2", "algo-3"]
    assert sum(report["rows"]["in"] for report in counts) == job["rows_in"] == 9


def test_jobs_logs_prefixes_hosts(cli, home, make_app):
    put_files(make_app(), "input/batch", 3)
    job = invoke(cli, "input/batch", "--instance-count", "3")

    result = cli("jobs", "logs", job["job_name"])

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    for number, host in enumerate(("algo-1", "algo-2", "algo-3"), start=1):
        expected = f"[{host}] INFO prepflow.processing.engine: part0{number}.csv: 3 rows read"
        assert any(line.startswith(expected) for line in lines), result.stdout
    assert all(line.startswith("[algo-") for line in lines), result.stdout


COMBINED_RECIPE = """\
version: 1
schema:
  columns:
    id: {type: int}
steps:
  - {step: drop_missing}
output: {name: data}
"""


def test_host_without_objects_writes_nothing(cli, home, make_app, tmp_path):
    put_files(make_app(), "input/pair", 2, extra=b"not-a-number,x\n")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(COMBINED_RECIPE)

    job = invoke(cli, "input/pair", "--instance-count", "3", "--recipe", str(recipe))

    assert job["status"] == "Completed", job["failure_reason"]
    outputs = sorted(uri.rsplit("/", 1)[1] for uri in job["outputs"])
    assert outputs == ["data-algo-1.csv", "data-algo-2.csv"]
    rejected = home / "buckets" / PROCESSED / "rejected" / job["job_name"]
    assert sorted(p.name for p in rejected.iterdir()) == ["rejected-algo-2.csv"]
    reports = home / "buckets" / LOGS / "reports" / job["job_name"]
    assert not list(reports.glob("*algo-3*"))
    assert (job["rows_in"], job["rows_out"], job["rows_rejected"]) == (7, 4, 1)
    host_three = home / "jobs" / job["job_name"] / "hosts" / "algo-3" / "ml"
    assert json.loads((host_three / "output" / "message").read_text())["files"] == 0


FAILING_SCRIPT = """\
import json, os, sys, time
root = os.environ["PREPFLOW_ML_ROOT"]
with open(os.path.join(root, "config", "resourceconfig.json")) as handle:
    host = json.load(handle)["current_host"]
if host == "algo-2":
    print("host two gives up", file=sys.stderr)
    sys.exit(3)
# The other hosts would run until MaxRuntimeInSeconds unless the runner stops them.
while True:
    time.sleep(0.2)
"""


def test_failing_host_fails_job(make_app, tmp_path):
    from prepflow.jobs.template import upload_script

    app = make_app(processing_instance_count=3, isolation="none", max_runtime_seconds=3600)
    script = tmp_path / "fails_on_two.py"
    script.write_text(FAILING_SCRIPT)
    app.orchestrator.step = upload_script(app.store, app.settings, script)
    put_files(app, "input/batch", 3)
    request = {"input_data_path": f"s3://{RAW}/input/batch/", "request_id": "failing-host"}

    (outcome,) = app.orchestrator.handle(request).outcomes
    (record,) = app.wait([outcome.job_name], timeout=120)

    assert record.status == JobStatus.FAILED
    assert record.failure_reason.startswith("AlgorithmError: host algo-2 failed with exit code: 3")
    assert "host two gives up" in record.failure_reason
    assert record.log_tail == "host two gives up"


def test_fitted_recipe_rejected_on_several_hosts(cli, home, make_app, tmp_path):
    put_files(make_app(), "input/batch", 2)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("version: 1\nsteps:\n  - {step: impute, columns: [value], strategy: mode}\n")

    result = cli(
        "invoke",
        "--input",
        f"s3://{RAW}/input/batch/",
        "--instance-count",
        "2",
        "--recipe",
        str(recipe),
    )

    assert result.returncode == 2
    assert "cannot run on 2 instances" in result.stderr
    assert "step 1 (impute) fits its parameters on all rows" in result.stderr
    assert not (home / "jobs").exists() or not any((home / "jobs").iterdir())


@pytest.mark.parametrize("count", ["0", "101"])
def test_instance_count_out_of_range(cli, tmp_path, count):
    data = tmp_path / "orders.csv"
    data.write_text("id\n1\n")

    result = cli("run", str(data), "--instance-count", count)

    assert result.returncode == 2
    assert "--instance-count" in result.stderr


@pytest.mark.parametrize(
    "script",
    [
        Path(__file__).parents[2] / "examples" / "scripts" / "preprocessing_script.py",
        Path(__file__).parents[2]
        / "src"
        / "prepflow"
        / "starter_files"
        / "preprocessing_script.py",
    ],
    ids=["example", "starter"],
)
def test_shipped_script_with_empty_share(cli, home, tmp_path, script):
    data = tmp_path / "one.csv"
    data.write_text("id,value\n1,a\n2,\n")

    result = cli("run", "--json", "--script", str(script), "--instance-count", "2", str(data))

    assert result.returncode == 0, result.stderr
    (job,) = json.loads(result.stdout)
    assert job["status"] == "Completed", job["failure_reason"]
    assert [uri.rsplit("/", 1)[1] for uri in job["outputs"]] == ["processed_one.csv"]
