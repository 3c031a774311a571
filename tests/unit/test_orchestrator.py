"""The orchestrator's guards and its handling of each trigger-event case, with in-memory fakes.

The fakes keep S3's and SageMaker's behaviour where the orchestrator depends on it: a missing
object raises ObjectNotFoundError, and a second job with a name in use raises JobExistsError.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from prepflow import naming
from prepflow.errors import (
    ConfigurationError,
    JobExistsError,
    JobNotFoundError,
    ObjectNotFoundError,
    RecursiveOutputError,
)
from prepflow.events import build_s3_notification
from prepflow.jobs.backend import JobBackend
from prepflow.jobs.spec import JobDescription, JobStatus, ProcessingJobSpec
from prepflow.jobs.template import StepTemplate
from prepflow.jobstore.base import JobRecord, JobStore
from prepflow.orchestrator import Orchestrator, OutcomeKind, check_no_recursion
from prepflow.settings import Settings, load_settings
from prepflow.storage.base import ObjectInfo, ObjectStore, parse_manifest

RAW = "acme-ml-raw"
PROCESSED = "acme-ml-processed"
ARTIFACTS = "acme-ml-artifacts"


class MemoryStore(ObjectStore):
    """Objects in a dict, with a log of the keys that head_object read."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], bytes] = {}
        self.heads: list[tuple[str, str]] = []

    def put_object(self, bucket: str, key: str, body: bytes) -> ObjectInfo:
        self.objects[(bucket, key)] = body
        return self._info(bucket, key)

    def upload_file(self, bucket: str, key: str, path: Path) -> ObjectInfo:
        return self.put_object(bucket, key, path.read_bytes())

    def head_object(self, bucket: str, key: str) -> ObjectInfo:
        self.heads.append((bucket, key))
        return self._info(bucket, key)

    def get_object(self, bucket: str, key: str) -> bytes:
        if (bucket, key) not in self.objects:
            raise ObjectNotFoundError(bucket, key)
        return self.objects[(bucket, key)]

    def download_file(self, bucket: str, key: str, path: Path) -> None:
        path.write_bytes(self.get_object(bucket, key))

    def list_objects(self, bucket: str, prefix: str = "") -> Iterator[ObjectInfo]:
        for stored_bucket, key in sorted(self.objects):
            if stored_bucket == bucket and key.startswith(prefix):
                yield self._info(bucket, key)

    def _info(self, bucket: str, key: str) -> ObjectInfo:
        body = self.get_object(bucket, key)
        return ObjectInfo(
            bucket=bucket,
            key=key,
            size=len(body),
            etag=hashlib.md5(body).hexdigest(),
            last_modified=datetime(2024, 6, 4, tzinfo=UTC),
        )


class RecordingBackend(JobBackend):
    """Accepts each job name once, as SageMaker does within one account and region."""

    def __init__(self, existing: tuple[str, ...] = ()) -> None:
        self.names: set[str] = set(existing)
        self.submitted: list[ProcessingJobSpec] = []

    def submit(self, spec: ProcessingJobSpec) -> None:
        if spec.name in self.names:
            raise JobExistsError(spec.name)
        self.names.add(spec.name)
        self.submitted.append(spec)

    def describe(self, job_name: str) -> JobDescription:
        if job_name not in self.names:
            raise JobNotFoundError(job_name)
        return JobDescription(job_name=job_name, status=JobStatus.IN_PROGRESS)

    def stop(self, job_name: str) -> None:
        if job_name not in self.names:
            raise JobNotFoundError(job_name)


class MemoryJobStore(JobStore):
    """The JobStore rules over a dict, with compare-and-set primitives like the real stores."""

    def __init__(self) -> None:
        self.records: dict[str, JobRecord] = {}

    def _insert_if_absent(self, record: JobRecord) -> bool:
        if record.job_name in self.records:
            return False
        if any(self._load_by_key(key) for key in record.claim_keys):
            return False
        self.records[record.job_name] = record
        return True

    def _load(self, job_name: str) -> JobRecord | None:
        return self.records.get(job_name)

    def _load_by_key(self, idempotency_key: str) -> JobRecord | None:
        matches = [r for r in self.records.values() if idempotency_key in r.claim_keys]
        return matches[0] if matches else None

    def _replace_if_version(self, record: JobRecord, expected_version: int) -> bool:
        if self.records[record.job_name].version != expected_version:
            return False
        self.records[record.job_name] = record
        return True

    def _scan(self, status: JobStatus | None, limit: int) -> list[JobRecord]:
        records = [r for r in self.records.values() if status is None or r.status == status]
        return records[:limit]


@pytest.fixture
def settings(clean_env) -> Settings:
    return load_settings(
        raw_bucket=RAW,
        processed_bucket=PROCESSED,
        model_artifacts_bucket=ARTIFACTS,
        logs_bucket="acme-ml-logs",
        feature_store_bucket="acme-ml-features",
        region="eu-west-1",
    )


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def backend() -> RecordingBackend:
    return RecordingBackend()


@pytest.fixture
def jobs() -> MemoryJobStore:
    return MemoryJobStore()


@pytest.fixture
def orchestrator(settings, store, backend, jobs) -> Orchestrator:
    return Orchestrator(
        settings=settings, store=store, backend=backend, jobs=jobs, step=StepTemplate.built_in()
    )


def h11_settings(load_event) -> Settings:
    config = load_event("cases/H11-config.json")
    return load_settings(
        raw_bucket=config["watch"]["bucket"],
        input_prefix=config["watch"]["prefix"],
        processed_bucket=config["output"]["bucket"],
        output_prefix=config["output"]["prefix"],
    )


# -- check_no_recursion -------------------------------------------------------------------------


def test_recursion_output_inside_input(clean_env, load_event):
    with pytest.raises(RecursiveOutputError):
        check_no_recursion(h11_settings(load_event))


def test_recursion_error_names_input_location(clean_env, load_event):
    with pytest.raises(RecursiveOutputError) as caught:
        check_no_recursion(h11_settings(load_event))

    assert "watched input location s3://acme-ml-raw/input/:" in str(caught.value)


def test_recursion_error_names_output_location(clean_env, load_event):
    with pytest.raises(RecursiveOutputError) as caught:
        check_no_recursion(h11_settings(load_event))

    assert "output location s3://acme-ml-raw/input/processed/ " in str(caught.value)


def test_recursion_error_is_configuration_error(clean_env, load_event):
    with pytest.raises(ConfigurationError):
        check_no_recursion(h11_settings(load_event))


def test_recursion_rejected_at_start(clean_env, load_event, store, backend, jobs):
    with pytest.raises(RecursiveOutputError):
        Orchestrator(
            settings=h11_settings(load_event),
            store=store,
            backend=backend,
            jobs=jobs,
            step=StepTemplate.built_in(),
        )


def test_recursion_safe_configuration_passes(settings):
    check_no_recursion(settings)


def test_recursion_safe_with_shared_bucket(clean_env):
    shared = load_settings(
        raw_bucket=RAW,
        processed_bucket=RAW,
        model_artifacts_bucket=RAW,
        logs_bucket=RAW,
        input_prefix="input/",
        output_prefix="output/",
    )

    check_no_recursion(shared)


def test_recursion_similar_prefix_is_not_overlap(clean_env):
    settings = load_settings(
        raw_bucket=RAW, processed_bucket=RAW, input_prefix="in", output_prefix="input/"
    )

    check_no_recursion(settings)


def test_recursion_whole_bucket_watched(clean_env):
    settings = load_settings(raw_bucket=RAW, processed_bucket=RAW, input_prefix="")

    with pytest.raises(RecursiveOutputError, match="s3://acme-ml-raw/"):
        check_no_recursion(settings)


def test_recursion_input_inside_output(clean_env):
    settings = load_settings(
        raw_bucket=RAW, processed_bucket=RAW, input_prefix="output/raw/", output_prefix="output/"
    )

    with pytest.raises(RecursiveOutputError, match="s3://acme-ml-raw/output/raw/"):
        check_no_recursion(settings)


@pytest.mark.parametrize(
    ("variable", "prefix"),
    [
        ("logs_bucket", "logs/"),
        ("logs_bucket", "reports/"),
        ("model_artifacts_bucket", "manifests/"),
        ("model_artifacts_bucket", "scripts/"),
    ],
)
def test_recursion_other_write_locations(clean_env, variable, prefix):
    settings = load_settings(raw_bucket=RAW, input_prefix=prefix, **{variable: RAW})

    with pytest.raises(RecursiveOutputError, match=f"s3://acme-ml-raw/{prefix}"):
        check_no_recursion(settings)


# -- skip_reason --------------------------------------------------------------------------------


def test_skip_none_for_data_file(orchestrator):
    assert orchestrator.skip_reason(RAW, "input/orders.csv", 10) is None


def test_skip_none_for_unknown_size(orchestrator):
    assert orchestrator.skip_reason(RAW, "input/orders.csv", None) is None


def test_skip_suffix_case_insensitive(orchestrator):
    assert orchestrator.skip_reason(RAW, "input/ORDERS.CSV", 10) is None


def test_skip_outside_watched_prefix(orchestrator):
    reason = orchestrator.skip_reason(RAW, "elsewhere/orders.csv", 10)

    assert reason == "the object is outside the watched location s3://acme-ml-raw/input/"


def test_skip_other_bucket(orchestrator):
    reason = orchestrator.skip_reason("other-bucket", "input/a.csv", 1)

    assert reason == "the object is outside the watched location s3://acme-ml-raw/input/"


def test_skip_folder_placeholder(orchestrator):
    reason = orchestrator.skip_reason(RAW, "input/2024-06/", 0)

    assert reason == "the object is a folder placeholder"


def test_skip_empty_object(orchestrator):
    reason = orchestrator.skip_reason(RAW, "input/daily_export.csv", 0)

    assert reason == "the object is empty (0 bytes)"


def test_skip_other_file_type(orchestrator):
    reason = orchestrator.skip_reason(RAW, "input/notes.txt", 10)

    assert reason == "the file type is not one of .csv, .parquet, .jsonl, .ndjson, .json, .gz"


def test_skip_output_location(clean_env, store, backend, jobs):
    shared = load_settings(
        raw_bucket=RAW, processed_bucket=RAW, input_prefix="input/", output_prefix="processed/"
    )
    orchestrator = Orchestrator(
        settings=shared, store=store, backend=backend, jobs=jobs, step=StepTemplate.built_in()
    )

    reason = orchestrator.skip_reason(RAW, "processed/prepflow-x/orders.csv", 10)

    assert reason == "the object lies in one of prepflow's output locations"


# -- trigger events end to end with fakes -------------------------------------------------------


def put_raw(store: MemoryStore, key: str, body: bytes = b"id,value\n1,2\n") -> None:
    store.put_object(RAW, key, body)


def test_handle_form_encoded_key_reads_decoded(orchestrator, store, load_event):
    put_raw(store, "input/sales report Q1.csv")

    orchestrator.handle(load_event("cases/H01-event.json"))

    assert store.heads == [(RAW, "input/sales report Q1.csv")]


def test_handle_form_encoded_key_names_job(orchestrator, store, load_event):
    put_raw(store, "input/sales report Q1.csv")

    result = orchestrator.handle(load_event("cases/H01-event.json"))

    (outcome,) = result.outcomes
    assert outcome.kind == OutcomeKind.STARTED
    assert outcome.job_name.startswith("prepflow-sales-report-q1-")


def test_handle_decoded_key_in_manifest(orchestrator, store, jobs, load_event):
    put_raw(store, "input/sales report Q1.csv")

    (outcome,) = orchestrator.handle(load_event("cases/H01-event.json")).outcomes

    record = jobs.get(outcome.job_name)
    assert record.inputs == ["s3://acme-ml-raw/input/sales report Q1.csv"]
    assert record.outputs == [f"s3://acme-ml-processed/output/{outcome.job_name}/"]
    manifest_key = f"manifests/{outcome.job_name}.manifest"
    prefix, keys = parse_manifest(store.get_object(ARTIFACTS, manifest_key), source="manifest")
    assert (prefix, keys) == ("s3://acme-ml-raw/input/", ["sales report Q1.csv"])


def test_handle_encoded_plus_key_recorded(orchestrator, store, jobs, load_event):
    put_raw(store, "input/c++ export (1).csv")

    (outcome,) = orchestrator.handle(load_event("cases/H02-event.json")).outcomes

    assert outcome.kind == OutcomeKind.STARTED
    assert jobs.get(outcome.job_name).inputs == ["s3://acme-ml-raw/input/c++ export (1).csv"]


def test_handle_test_event_acknowledged(orchestrator, backend, load_event):
    result = orchestrator.handle(load_event("cases/H05-event-raw.json"))

    (outcome,) = result.outcomes
    assert outcome.kind == OutcomeKind.SKIPPED
    assert result.failures == []
    assert backend.submitted == []


def test_handle_test_event_in_sqs_not_failed(orchestrator, backend, load_event):
    result = orchestrator.handle(load_event("cases/H05-event-sqs.json"))

    assert [o.kind for o in result.outcomes] == [OutcomeKind.SKIPPED]
    assert result.failed_message_ids == []
    assert backend.submitted == []


def test_handle_three_records_all_started(orchestrator, store, backend, load_event):
    for index in (1, 2, 3):
        put_raw(store, f"input/orders_0{index}.csv")

    result = orchestrator.handle(load_event("cases/H06-event.json"))

    assert [o.kind for o in result.outcomes] == [OutcomeKind.STARTED] * 3
    assert len({spec.name for spec in backend.submitted}) == 3


def test_handle_bad_record_does_not_stop_others(orchestrator, store, backend, load_event):
    put_raw(store, "input/orders_01.csv")
    put_raw(store, "input/orders_03.csv")

    result = orchestrator.handle(load_event("cases/H06-event.json"))

    kinds = [o.kind for o in result.outcomes]
    assert kinds == [OutcomeKind.STARTED, OutcomeKind.FAILED, OutcomeKind.STARTED]
    assert len(backend.submitted) == 2


def test_handle_bad_record_failure_names_key(orchestrator, store, load_event):
    put_raw(store, "input/orders_01.csv")
    put_raw(store, "input/orders_03.csv")

    (failure,) = orchestrator.handle(load_event("cases/H06-event.json")).failures

    assert failure.subject == "s3://acme-ml-raw/input/orders_02.csv"
    assert "input/orders_02.csv" in failure.reason


def test_handle_same_event_twice_one_job(orchestrator, store, backend, jobs, load_event):
    put_raw(store, "input/orders_07.csv")

    result = orchestrator.handle(load_event("cases/H07-event-sqs.json"))

    assert [o.kind for o in result.outcomes] == [OutcomeKind.STARTED, OutcomeKind.DUPLICATE]
    assert len(backend.submitted) == 1
    assert len(jobs.list_jobs()) == 1


def test_handle_same_event_twice_acknowledged(orchestrator, store, load_event):
    put_raw(store, "input/orders_07.csv")

    result = orchestrator.handle(load_event("cases/H07-event-sqs.json"))

    assert result.failed_message_ids == []
    started, duplicate = result.outcomes
    assert duplicate.job_name == started.job_name
    assert duplicate.reason == "job already started"


def test_handle_duplicate_keyed_by_version(orchestrator, store, jobs, load_event):
    put_raw(store, "input/orders_07.csv")

    orchestrator.handle(load_event("cases/H07-event-sqs.json"))

    (record,) = jobs.list_jobs()
    expected = "s3://acme-ml-raw/input/orders_07.csv#version=3HL4kqtJlcpXroDTDmJ.rmSpXd3dIbrHY"
    assert record.idempotency_key == expected


def test_handle_folder_placeholder_skipped(orchestrator, store, backend, load_event):
    result = orchestrator.handle(load_event("cases/H09-event.json"))

    (outcome,) = result.outcomes
    assert outcome.kind == OutcomeKind.SKIPPED
    assert outcome.reason == "the object is a folder placeholder"
    assert result.failures == []


def test_handle_placeholder_before_any_job(orchestrator, store, backend, jobs, load_event):
    orchestrator.handle(load_event("cases/H09-event.json"))

    assert store.heads == []
    assert backend.submitted == []
    assert jobs.list_jobs() == []


def test_handle_zero_byte_object_skipped(orchestrator, store, backend, load_event):
    put_raw(store, "input/daily_export.csv", b"")

    result = orchestrator.handle(load_event("cases/H10-event.json"))

    (outcome,) = result.outcomes
    assert outcome.kind == OutcomeKind.SKIPPED
    assert outcome.reason == "the object is empty (0 bytes)"
    assert backend.submitted == []


def test_handle_object_empty_when_read_skipped(orchestrator, store, backend, load_event):
    # The event reports 1024 bytes, but the object was replaced by an empty one since.
    put_raw(store, "input/orders_01.csv", b"")
    event = load_event("cases/H06-event.json")
    event["Records"] = event["Records"][:1]

    (outcome,) = orchestrator.handle(event).outcomes

    assert outcome.kind == OutcomeKind.SKIPPED
    assert "empty" in outcome.reason
    assert backend.submitted == []


def test_handle_event_under_output_ignored(clean_env, store, backend, jobs, load_event):
    settings = load_settings(
        raw_bucket=RAW, processed_bucket=RAW, input_prefix="input/", output_prefix="processed/"
    )
    orchestrator = Orchestrator(
        settings=settings, store=store, backend=backend, jobs=jobs, step=StepTemplate.built_in()
    )
    event = load_event("cases/H11-event.json")
    event["Records"][0]["s3"]["object"]["key"] = "processed/prepflow-x/orders_01.csv"

    (outcome,) = orchestrator.handle(event).outcomes

    assert outcome.kind == OutcomeKind.SKIPPED
    assert outcome.reason == "the object lies in one of prepflow's output locations"
    assert backend.submitted == []


def test_handle_eventbridge_and_classic_one_job(orchestrator, store, backend, load_event):
    put_raw(store, "input/orders_12.csv", b"x" * 2048)
    classic = build_s3_notification(
        bucket=RAW,
        key="input/orders_12.csv",
        size=2048,
        etag="9b2cf535f27731c974343645a3985328",
        sequencer="0066A1B2C3D4E5F651",
        region="eu-west-1",
    )

    first = orchestrator.handle(load_event("cases/H12-event.json"))
    second = orchestrator.handle(classic)

    assert first.outcomes[0].kind == OutcomeKind.STARTED
    assert second.outcomes[0].kind == OutcomeKind.DUPLICATE
    assert second.outcomes[0].job_name == first.outcomes[0].job_name
    assert len(backend.submitted) == 1


def test_handle_sqs_reports_bad_message_only(orchestrator, store, load_event):
    put_raw(store, "input/weekly summary.csv")

    result = orchestrator.handle(load_event("cases/H13-event-sqs.json"))

    assert result.failed_message_ids == ["00000000-0000-4000-8000-000000000003"]


def test_handle_sqs_good_messages_handled(orchestrator, store, backend, load_event):
    put_raw(store, "input/weekly summary.csv")

    result = orchestrator.handle(load_event("cases/H13-event-sqs.json"))

    by_message = {o.message_id: o.kind for o in result.outcomes}
    assert by_message["00000000-0000-4000-8000-000000000001"] == OutcomeKind.STARTED
    assert by_message["00000000-0000-4000-8000-000000000002"] == OutcomeKind.DUPLICATE
    assert len(backend.submitted) == 1


def test_handle_long_name_valid(orchestrator, store, backend, load_event):
    key = (
        "input/Q1_2024 customer_export.v2 (final) EMEA region with a very long descriptive "
        "file name.csv"
    )
    put_raw(store, key)

    (outcome,) = orchestrator.handle(load_event("cases/H15-event.json")).outcomes

    assert outcome.kind == OutcomeKind.STARTED
    assert outcome.job_name.startswith("prepflow-q1-2024-customer-export-v2-final-emea-reg-")
    assert len(outcome.job_name) == 63


def test_handle_many_uploads_distinct_names(orchestrator, store, backend, load_event):
    put_raw(store, "input/a.csv")
    put_raw(store, "input/b.csv")
    events = load_event("cases/H16-events.json")

    outcomes = [orchestrator.handle(event).outcomes[0] for event in events]

    assert [o.kind for o in outcomes] == [
        OutcomeKind.STARTED,
        OutcomeKind.STARTED,
        OutcomeKind.DUPLICATE,
    ]
    assert outcomes[0].job_name != outcomes[1].job_name
    assert outcomes[2].job_name == outcomes[0].job_name


def test_handle_name_in_use_means_started(settings, store, jobs, load_event):
    put_raw(store, "input/a.csv")
    idempotency_key = naming.object_idempotency_key(
        RAW, "input/a.csv", version_id=None, sequencer="0066A1B2C3D4E5F681"
    )
    name = naming.job_name("prepflow", idempotency_key, "input/a.csv")
    backend = RecordingBackend(existing=(name,))
    orchestrator = Orchestrator(
        settings=settings, store=store, backend=backend, jobs=jobs, step=StepTemplate.built_in()
    )

    result = orchestrator.handle(load_event("cases/H16-events.json")[0])

    (outcome,) = result.outcomes
    assert outcome.kind == OutcomeKind.DUPLICATE
    assert outcome.job_name == name
    assert result.failures == []
    assert backend.submitted == []
    assert jobs.get(name).submitted_at is not None


def test_handle_malformed_record_counted_as_failure(orchestrator, store, load_event):
    put_raw(store, "input/orders_a.csv")
    put_raw(store, "input/orders_c.csv")

    result = orchestrator.handle(load_event("events/s3-malformed-middle-record.json"))

    kinds = [o.kind for o in result.outcomes]
    assert kinds == [OutcomeKind.STARTED, OutcomeKind.FAILED, OutcomeKind.STARTED]


def test_handle_manual_unknown_field_fails(orchestrator, backend, load_event):
    result = orchestrator.handle(load_event("events/manual-unknown-field.json"))

    (failure,) = result.failures
    assert "priority" in failure.reason
    assert backend.submitted == []


def test_handle_job_spec_uses_manifest(orchestrator, store, backend, load_event):
    put_raw(store, "input/orders_12.csv", b"x" * 2048)

    orchestrator.handle(load_event("cases/H12-event.json"))

    (spec,) = backend.submitted
    data = spec.input_named("data")
    assert data.s3_input.s3_data_type == "ManifestFile"
    assert data.s3_input.s3_uri == f"s3://{ARTIFACTS}/manifests/{spec.name}.manifest"
    assert json.loads(store.get_object(ARTIFACTS, f"manifests/{spec.name}.manifest"))[1:] == [
        "orders_12.csv"
    ]
