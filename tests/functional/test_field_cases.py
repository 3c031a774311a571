"""Trigger events from the field, run through the whole local pipeline.

Each event names bucket ``acme-ml-raw``, so the tests make that the raw-data bucket. They put
the objects the event announces, hand the event to the orchestrator and follow the real jobs.
"""

from __future__ import annotations

import json
import re

import pytest

from prepflow.events import parse_trigger_event
from prepflow.jobs.spec import JobStatus
from prepflow.orchestrator import OutcomeKind
from tests.helpers import load_case, read_rows

RAW = "acme-ml-raw"
JOB_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
CSV = b"order_id,amount\n1,10\n2,\n3,30\n"


@pytest.fixture
def app(make_app):
    return make_app(raw_bucket=RAW)


def put(app, key, body=CSV):
    return app.store.put_object(RAW, key, body)


def only_job(app):
    (record,) = app.jobs.list_jobs()
    return record


def output_rows(app, record, name):
    (uri,) = record.outputs
    return read_rows(app.local_path(uri) / name)


def test_form_encoded_key_decoded_once(app):
    put(app, "input/sales report Q1.csv")

    result = app.orchestrator.handle(load_case("H01-event.json"))

    (outcome,) = result.outcomes
    assert outcome.kind == OutcomeKind.STARTED
    (record,) = app.wait([outcome.job_name])
    assert record.status == JobStatus.COMPLETED
    assert record.inputs == [f"s3://{RAW}/input/sales report Q1.csv"]
    assert "sales-report-q1" in record.job_name
    assert len(output_rows(app, record, "processed_sales report Q1.csv")) == 2


def test_plus_and_parentheses_decoded_once(app):
    put(app, "input/c++ export (1).csv")

    result = app.orchestrator.handle(load_case("H02-event.json"))

    (outcome,) = result.outcomes
    assert outcome.kind == OutcomeKind.STARTED, outcome.reason
    (record,) = app.wait([outcome.job_name])
    assert record.inputs == [f"s3://{RAW}/input/c++ export (1).csv"]
    assert record.status == JobStatus.COMPLETED
    assert len(output_rows(app, record, "processed_c++ export (1).csv")) == 2


@pytest.mark.parametrize("case", ["H05-event-raw.json", "H05-event-sqs.json"])
def test_s3_test_event_acknowledged(app, case):
    result = app.orchestrator.handle(load_case(case))

    (outcome,) = result.outcomes
    assert outcome.kind == OutcomeKind.SKIPPED
    assert "s3:TestEvent" in outcome.reason
    assert result.failures == []
    assert result.failed_message_ids == []
    assert app.jobs.list_jobs() == []


def test_bad_record_fails_alone(app):
    put(app, "input/orders_01.csv")
    put(app, "input/orders_03.csv")

    result = app.orchestrator.handle(load_case("H06-event.json"))

    kinds = [o.kind for o in result.outcomes]
    assert kinds == [OutcomeKind.STARTED, OutcomeKind.FAILED, OutcomeKind.STARTED]
    (failure,) = result.failures
    assert "input/orders_02.csv" in failure.reason
    assert "not found" in failure.reason
    records = app.wait(result.job_names)
    assert [r.status for r in records] == [JobStatus.COMPLETED, JobStatus.COMPLETED]


def test_redelivered_message_one_job(app):
    put(app, "input/orders_07.csv")

    result = app.orchestrator.handle(load_case("H07-event-sqs.json"))

    assert [o.kind for o in result.outcomes] == [OutcomeKind.STARTED, OutcomeKind.DUPLICATE]
    assert result.outcomes[0].job_name == result.outcomes[1].job_name
    assert result.failed_message_ids == []
    (record,) = app.wait(result.job_names)
    assert record.status == JobStatus.COMPLETED
    assert len(app.output_files(record)) == 1
    assert len(app.jobs.list_jobs()) == 1


def test_redelivered_message_reported_duplicate(cli, app):
    put(app, "input/orders_07.csv")

    result = cli(
        "invoke", json.dumps(load_case("H07-event-sqs.json")), env={"PREPFLOW_RAW_BUCKET": RAW}
    )

    assert result.returncode == 0, result.stderr
    (line,) = [text for text in result.stderr.splitlines() if text.startswith("duplicate: ")]
    assert line.startswith(f"duplicate: s3://{RAW}/input/orders_07.csv: job ")
    assert "already started" in line


def test_folder_placeholder_skipped(app):
    result = app.orchestrator.handle(load_case("H09-event.json"))

    (outcome,) = result.outcomes
    assert outcome.kind == OutcomeKind.SKIPPED
    assert "folder placeholder" in outcome.reason
    assert result.failures == []
    assert app.jobs.list_jobs() == []


def test_zero_byte_object_skipped(app):
    put(app, "input/daily_export.csv", b"")

    result = app.orchestrator.handle(load_case("H10-event.json"))

    (outcome,) = result.outcomes
    assert outcome.kind == OutcomeKind.SKIPPED
    assert outcome.reason == "the object is empty (0 bytes)"
    assert app.jobs.list_jobs() == []


def test_empty_object_skipped_when_event_has_no_size(app):
    put(app, "input/daily_export.csv", b"")
    event = load_case("H10-event.json")
    del event["Records"][0]["s3"]["object"]["size"]

    result = app.orchestrator.handle(event)

    (outcome,) = result.outcomes
    assert outcome.kind == OutcomeKind.SKIPPED
    assert "empty" in outcome.reason


def test_output_inside_watched_prefix_rejected(cli):
    config = load_case("H11-config.json")
    env = {
        "PREPFLOW_RAW_BUCKET": config["watch"]["bucket"],
        "PREPFLOW_INPUT_PREFIX": config["watch"]["prefix"],
        "PREPFLOW_PROCESSED_BUCKET": config["output"]["bucket"],
        "PREPFLOW_OUTPUT_PREFIX": config["output"]["prefix"],
    }

    result = cli("invoke", json.dumps(load_case("H11-event.json")), env=env)

    assert result.returncode == 2
    assert "s3://acme-ml-raw/input/processed/" in result.stderr
    assert "s3://acme-ml-raw/input/" in result.stderr


def test_event_under_output_prefix_ignored(make_app):
    app = make_app(raw_bucket=RAW, processed_bucket=RAW, output_prefix="processed/")
    put(app, "processed/orders_01.csv")
    event = load_case("H11-event.json")
    event["Records"][0]["s3"]["object"]["key"] = "processed/orders_01.csv"

    result = app.orchestrator.handle(event)

    (outcome,) = result.outcomes
    assert outcome.kind == OutcomeKind.SKIPPED
    assert "output locations" in outcome.reason
    assert app.jobs.list_jobs() == []


def test_eventbridge_event_same_as_notification(app):
    put(app, "input/orders_12.csv")
    event = load_case("H12-event.json")
    classic = load_case("H01-event.json")
    classic["Records"][0]["s3"]["object"].update(
        key="input/orders_12.csv", size=2048, sequencer="0066A1B2C3D4E5F651"
    )

    (from_bridge,) = parse_trigger_event(event)[0].notifications
    (from_s3,) = parse_trigger_event(classic)[0].notifications
    result = app.orchestrator.handle(event)

    for field in ("bucket", "key", "size", "etag", "sequencer", "version_id"):
        assert getattr(from_bridge, field) == getattr(from_s3, field), field
    (outcome,) = result.outcomes
    assert outcome.kind == OutcomeKind.STARTED
    (record,) = app.wait([outcome.job_name])
    assert record.inputs == [f"s3://{RAW}/input/orders_12.csv"]
    assert record.status == JobStatus.COMPLETED


def test_sqs_batch_with_malformed_message(app):
    put(app, "input/weekly summary.csv")
    event = load_case("H13-event-sqs.json")

    result = app.orchestrator.handle(event)

    bad_id = event["Records"][2]["messageId"]
    assert result.failed_message_ids == [bad_id]
    kinds = [o.kind for o in result.outcomes]
    assert kinds == [OutcomeKind.STARTED, OutcomeKind.DUPLICATE, OutcomeKind.FAILED]
    (record,) = app.wait(result.job_names)
    assert record.inputs == [f"s3://{RAW}/input/weekly summary.csv"]
    assert record.status == JobStatus.COMPLETED


def test_long_odd_name_gives_valid_job_name(app):
    key = (
        "input/Q1_2024 customer_export.v2 (final) EMEA region with a very long "
        "descriptive file name.csv"
    )
    put(app, key)

    first = app.orchestrator.handle(load_case("H15-event.json"))
    again = app.orchestrator.handle(load_case("H15-event.json"))

    (outcome,) = first.outcomes
    name = outcome.job_name
    assert JOB_NAME.match(name)
    assert len(name) <= 63
    assert name.startswith("prepflow-q1-2024-customer-export-v2-final")
    assert re.search(r"-[0-9a-f]{12}$", name)
    assert again.outcomes[0].job_name == name
    assert again.outcomes[0].kind == OutcomeKind.DUPLICATE
    (record,) = app.wait([name])
    assert record.status == JobStatus.COMPLETED


def test_uploads_in_one_second_distinct_names(app):
    put(app, "input/a.csv")
    put(app, "input/b.csv")
    events = load_case("H16-events.json")

    outcomes = [app.orchestrator.handle(event).outcomes[0] for event in events]

    assert [o.kind for o in outcomes] == [
        OutcomeKind.STARTED,
        OutcomeKind.STARTED,
        OutcomeKind.DUPLICATE,
    ]
    assert outcomes[0].job_name != outcomes[1].job_name
    assert outcomes[2].job_name == outcomes[0].job_name
    records = app.wait([outcomes[0].job_name, outcomes[1].job_name])
    assert {r.status for r in records} == {JobStatus.COMPLETED}
    assert len(app.jobs.list_jobs()) == 2
