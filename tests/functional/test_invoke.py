"""`prepflow invoke`: the manual request and raw trigger events from the command line."""

from __future__ import annotations

import json

from tests.helpers import json_output, load_case

RAW = "mlops-lambda-preprocessing-pipeline-raw-data-bucket"


def put_raw(home, key, body="id,v\n1,a\n2,\n"):
    path = home / "buckets" / RAW / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(body)


def test_manual_request_for_object(cli, home):
    put_raw(home, "input/orders.csv")

    result = cli("invoke", "--input", f"s3://{RAW}/input/orders.csv", "--json")

    assert result.returncode == 0, result.stderr
    (job,) = json_output(result)
    assert job["status"] == "Completed"
    assert job["inputs"] == [f"s3://{RAW}/input/orders.csv"]
    assert job["rows_out"] == 1


def test_manual_request_for_prefix(cli, home):
    put_raw(home, "input/2024/a.csv")
    put_raw(home, "input/2024/b.csv")
    put_raw(home, "input/2024/notes.txt", "not data")

    result = cli("invoke", json.dumps({"input_data_path": f"s3://{RAW}/input/2024/"}), "--json")

    assert result.returncode == 0, result.stderr
    (job,) = json_output(result)
    assert job["inputs"] == [f"s3://{RAW}/input/2024/a.csv", f"s3://{RAW}/input/2024/b.csv"]
    assert job["rows_in"] == 4
    assert sorted(uri.rsplit("/", 1)[-1] for uri in job["outputs"]) == [
        "processed_a.csv",
        "processed_b.csv",
    ]


def test_manual_request_with_output_path(cli, home):
    put_raw(home, "input/orders.csv")
    target = "s3://mlops-lambda-preprocessing-pipeline-feature-store-bucket/features/orders/"

    result = cli("invoke", "--input", f"s3://{RAW}/input/orders.csv", "--output", target, "--json")

    assert result.returncode == 0, result.stderr
    (job,) = json_output(result)
    assert job["outputs"] == [target + "processed_orders.csv"]


def test_manual_request_outside_raw_bucket(cli, home):
    result = cli("invoke", "--input", "s3://someone-elses-bucket/data.csv")

    assert result.returncode == 1
    assert "outside the raw-data bucket" in result.stderr


def test_manual_request_into_watched_prefix(cli, home):
    put_raw(home, "input/orders.csv")

    result = cli(
        "invoke", "--input", f"s3://{RAW}/input/orders.csv", "--output", f"s3://{RAW}/input/out/"
    )

    assert result.returncode == 1
    assert "overlaps the watched input location" in result.stderr


def test_manual_request_unknown_field(cli):
    payload = json.dumps({"input_data_path": f"s3://{RAW}/input/x.csv", "priority": "high"})

    result = cli("invoke", payload)

    assert result.returncode == 1
    assert "unknown fields ['priority']" in result.stderr


def test_invoke_not_json_is_error(cli):
    result = cli("invoke", "{not json")

    assert result.returncode == 1
    assert "not valid JSON" in result.stderr


def test_invoke_test_event_succeeds(cli):
    result = cli("invoke", json.dumps(load_case("H05-event-raw.json")))

    assert result.returncode == 0
    assert "s3:TestEvent acknowledged" in result.stderr


def test_invoke_needs_one_source(cli):
    result = cli("invoke")

    assert result.returncode == 2
    assert "give exactly one of" in result.stderr


def test_delete_event_skipped(cli, home):
    event = load_case("H01-event.json")
    event["Records"][0]["eventName"] = "ObjectRemoved:Delete"

    result = cli("invoke", json.dumps(event))

    assert result.returncode == 0, result.stderr
    assert "ObjectRemoved:Delete is not an object creation" in result.stderr
    assert not (home / "jobs").exists() or not any((home / "jobs").iterdir())


def test_eventbridge_delete_skipped(cli, home):
    event = load_case("H12-event.json")
    event["detail-type"] = "Object Deleted"

    result = cli("invoke", json.dumps(event))

    assert result.returncode == 0, result.stderr
    assert "Object Deleted is not an object creation" in result.stderr


def test_manual_request_again_new_job(cli, home):
    put_raw(home, "input/orders.csv")
    uri = f"s3://{RAW}/input/orders.csv"

    first = json_output(cli("invoke", "--input", uri, "--json"))
    second = json_output(cli("invoke", "--input", uri, "--json"))

    assert first[0]["job_name"] != second[0]["job_name"]


def test_manual_json_request_repeated_one_job(cli, home):
    put_raw(home, "input/orders.csv")
    request = json.dumps({"input_data_path": f"s3://{RAW}/input/orders.csv"})

    first = json_output(cli("invoke", request, "--json"))
    second = json_output(cli("invoke", request, "--json"))

    assert first[0]["job_name"] == second[0]["job_name"]


def test_array_of_events_delivered_in_order(cli, home):
    for key in ("input/a.csv", "input/b.csv"):
        path = home / "buckets" / "acme-ml-raw" / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("id\n1\n")
    events = load_case("H16-events.json")

    result = cli("invoke", json.dumps(events), "--json", env={"PREPFLOW_RAW_BUCKET": "acme-ml-raw"})

    assert result.returncode == 0, result.stderr
    jobs = json_output(result)
    assert sorted(job["inputs"][0] for job in jobs) == [
        "s3://acme-ml-raw/input/a.csv",
        "s3://acme-ml-raw/input/b.csv",
    ]
