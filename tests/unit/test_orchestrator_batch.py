"""The orchestrator's batch path and marker mode, with the in-memory fakes and a SQLite store.

Every object belongs to exactly one job: a redelivered batch, or a subset or superset of it,
never puts an object into a second job.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest

from prepflow import naming
from prepflow.events import build_s3_notification
from prepflow.jobs.template import StepTemplate
from prepflow.jobstore.base import JobRecord
from prepflow.jobstore.sqlite import SqliteJobStore
from prepflow.orchestrator import Orchestrator, OutcomeKind, TriggerResult, common_folder
from prepflow.settings import Settings, load_settings
from prepflow.storage.base import parse_manifest
from tests.unit.test_orchestrator import (
    ARTIFACTS,
    PROCESSED,
    RAW,
    MemoryJobStore,
    MemoryStore,
    RecordingBackend,
)

CSV = b"id,name\n1,Ada\n"
_sequencers = itertools.count(1)


def make_settings(**overrides: Any) -> Settings:
    return load_settings(
        raw_bucket=RAW,
        processed_bucket=PROCESSED,
        model_artifacts_bucket=ARTIFACTS,
        logs_bucket="acme-ml-logs",
        feature_store_bucket="acme-ml-features",
        region="eu-west-1",
        batch_window_seconds=2.0,
        **overrides,
    )


class Pipeline:
    """An orchestrator on fakes, with helpers to upload objects and deliver their events."""

    def __init__(self, settings: Settings, jobs: Any = None) -> None:
        self.store = MemoryStore()
        self.backend = RecordingBackend()
        self.jobs = jobs if jobs is not None else MemoryJobStore()
        self.orchestrator = Orchestrator(
            settings=settings,
            store=self.store,
            backend=self.backend,
            jobs=self.jobs,
            step=StepTemplate.built_in(),
        )
        # The sequencer each uploaded key got, as S3 gives every PUT a larger one.
        self.sequencers: dict[str, str] = {}

    def put(self, *keys: str, body: bytes = CSV) -> list[str]:
        for key in keys:
            self.store.put_object(RAW, key, body)
            self.sequencers[key] = f"{next(_sequencers):016X}"
        return list(keys)

    def event(self, *keys: str) -> dict[str, Any]:
        """Return one S3 notification holding a record per key."""
        records = []
        for key in keys:
            info = self.store.head_object(RAW, key)
            notification = build_s3_notification(
                bucket=RAW,
                key=key,
                size=info.size,
                etag=info.etag,
                sequencer=self.sequencers[key],
                region="eu-west-1",
            )
            records.extend(notification["Records"])
        return {"Records": records}

    def handle(self, *keys: str, batch: bool | None = None) -> TriggerResult:
        return self.orchestrator.handle(self.event(*keys), batch=batch)

    def manifest(self, job_name: str) -> tuple[str, list[str]]:
        body = self.store.get_object(ARTIFACTS, f"manifests/{job_name}.manifest")
        return parse_manifest(body, source=job_name)

    def object_key(self, key: str) -> str:
        return naming.object_idempotency_key(
            RAW, key, version_id=None, sequencer=self.sequencers[key]
        )


@pytest.fixture
def pipeline(clean_env) -> Pipeline:
    return Pipeline(make_settings())


def started_names(result: TriggerResult) -> list[str]:
    return [o.job_name for o in result.outcomes if o.kind == OutcomeKind.STARTED and o.job_name]


def kinds(result: TriggerResult) -> list[OutcomeKind]:
    return [o.kind for o in result.outcomes]


# -- one job per batch --------------------------------------------------------------------------


def test_batch_starts_one_job(pipeline):
    keys = pipeline.put("input/day/a.csv", "input/day/b.csv", "input/day/c.csv")

    result = pipeline.handle(*keys)

    assert kinds(result) == [OutcomeKind.STARTED] * 3
    assert len(set(result.job_names)) == 1
    assert len(pipeline.backend.submitted) == 1


def test_batch_manifest_lists_exactly_objects(pipeline):
    keys = pipeline.put("input/day/a.csv", "input/day/b.csv", "input/day/c.csv")
    pipeline.put("input/day/not-in-event.csv")

    (name,) = pipeline.handle(*keys).job_names

    prefix, relative = pipeline.manifest(name)
    assert prefix == f"s3://{RAW}/input/day/"
    assert sorted(relative) == ["a.csv", "b.csv", "c.csv"]


def test_batch_manifest_common_folder(pipeline):
    keys = pipeline.put("input/2024/01/a.csv", "input/2024/02/b.csv")

    (name,) = pipeline.handle(*keys).job_names

    prefix, relative = pipeline.manifest(name)
    assert prefix == f"s3://{RAW}/input/2024/"
    assert sorted(relative) == ["01/a.csv", "02/b.csv"]


def test_batch_record_claims_objects(pipeline):
    keys = pipeline.put("input/a.csv", "input/b.csv")

    (name,) = pipeline.handle(*keys).job_names

    record = pipeline.jobs.get(name)
    expected = [pipeline.object_key(k) for k in keys]
    assert sorted(record.claim_keys[1:]) == sorted(expected)
    assert record.idempotency_key == naming.batch_idempotency_key(expected)
    assert record.inputs == [f"s3://{RAW}/{k}" for k in keys]


def test_batch_redelivered_starts_nothing(pipeline):
    keys = pipeline.put("input/a.csv", "input/b.csv", "input/c.csv")
    (name,) = pipeline.handle(*keys).job_names

    again = pipeline.handle(*keys)

    assert kinds(again) == [OutcomeKind.DUPLICATE] * 3
    assert again.job_names == [name]
    assert len(pipeline.backend.submitted) == 1


def test_batch_subset_starts_nothing(pipeline):
    keys = pipeline.put("input/a.csv", "input/b.csv", "input/c.csv")
    (name,) = pipeline.handle(*keys).job_names

    subset = pipeline.handle(keys[2], keys[0])

    assert kinds(subset) == [OutcomeKind.DUPLICATE] * 2
    assert subset.job_names == [name]
    assert len(pipeline.backend.submitted) == 1


def test_batch_superset_takes_new_objects(pipeline):
    old = pipeline.put("input/a.csv", "input/b.csv", "input/c.csv")
    (first,) = pipeline.handle(*old).job_names
    new = pipeline.put("input/d.csv", "input/e.csv")

    result = pipeline.handle(*old, *new)

    by_subject = {o.subject: o for o in result.outcomes}
    for key in old:
        assert by_subject[f"s3://{RAW}/{key}"].kind == OutcomeKind.DUPLICATE
        assert by_subject[f"s3://{RAW}/{key}"].job_name == first
    (second,) = started_names(result)[:1]
    assert {by_subject[f"s3://{RAW}/{key}"].job_name for key in new} == {second}
    assert sorted(pipeline.manifest(second)[1]) == ["d.csv", "e.csv"]


def test_batch_chunks_at_max_objects(clean_env):
    pipeline = Pipeline(make_settings(batch_max_objects=2))
    keys = pipeline.put(*[f"input/part-{i}.csv" for i in range(5)])

    result = pipeline.handle(*keys)

    names = result.job_names
    assert len(names) == 3
    listed = [key for name in names for key in pipeline.manifest(name)[1]]
    assert sorted(listed) == sorted(k.removeprefix("input/") for k in keys)


def test_batch_of_one_is_object_job(pipeline):
    (key,) = pipeline.put("input/orders.csv")

    (batched,) = pipeline.handle(key).job_names
    (single,) = pipeline.handle(key, batch=False).job_names

    assert batched == single
    assert pipeline.jobs.get(batched).idempotency_key == pipeline.object_key(key)
    assert len(pipeline.backend.submitted) == 1


def test_batch_skips_empty_and_foreign(pipeline):
    keys = pipeline.put("input/a.csv", "input/b.csv")
    pipeline.put("input/empty.csv", body=b"")
    pipeline.put("input/notes.txt.bak")

    result = pipeline.handle(*keys, "input/empty.csv", "input/notes.txt.bak")

    assert kinds(result).count(OutcomeKind.SKIPPED) == 2
    assert kinds(result).count(OutcomeKind.STARTED) == 2
    assert len(result.job_names) == 1


def test_window_zero_one_job_per_object(clean_env):
    pipeline = Pipeline(make_settings().model_copy(update={"batch_window_seconds": 0.0}))
    keys = pipeline.put("input/a.csv", "input/b.csv")

    result = pipeline.handle(*keys)

    assert len(result.job_names) == 2
    assert [pipeline.manifest(n)[1] for n in result.job_names] == [["a.csv"], ["b.csv"]]


def test_object_event_after_batch_duplicate(pipeline):
    keys = pipeline.put("input/a.csv", "input/b.csv")
    (name,) = pipeline.handle(*keys).job_names

    single = pipeline.handle(keys[1], batch=False)

    assert kinds(single) == [OutcomeKind.DUPLICATE]
    assert single.job_names == [name]


def test_batch_leaves_out_object_job(pipeline):
    keys = pipeline.put("input/a.csv", "input/b.csv", "input/c.csv")
    (single,) = pipeline.handle(keys[0], batch=False).job_names

    result = pipeline.handle(*keys)

    assert result.outcomes[0].kind == OutcomeKind.DUPLICATE
    assert result.outcomes[0].job_name == single
    (batch,) = started_names(result)[:1]
    assert sorted(pipeline.manifest(batch)[1]) == ["b.csv", "c.csv"]


def test_batch_submits_unsubmitted_owner(pipeline):
    keys = pipeline.put("input/a.csv", "input/b.csv")
    pipeline.backend.submit = _refuse_once(pipeline.backend.submit)
    with pytest.raises(ConnectionError):
        pipeline.handle(*keys)
    (record,) = pipeline.jobs.list_jobs()
    assert record.submitted_at is None

    # Another delivery holds only one of the objects; it submits the recorded job.
    result = pipeline.handle(keys[1])

    assert kinds(result) == [OutcomeKind.STARTED]
    assert result.job_names == [record.job_name]
    assert pipeline.jobs.get(record.job_name).submitted_at is not None


def _refuse_once(submit: Any) -> Any:
    calls = []

    def refuse(spec: Any) -> None:
        calls.append(spec.name)
        if len(calls) == 1:
            raise ConnectionError("connection reset before CreateProcessingJob was sent")
        submit(spec)

    return refuse


class RacingJobStore(MemoryJobStore):
    """A store in which a rival job claims ``stolen`` just before the first batch insert."""

    def __init__(self, stolen: str) -> None:
        super().__init__()
        self.stolen = stolen
        self.raced = False

    def _insert_if_absent(self, record: JobRecord) -> bool:
        if not self.raced and record.claims:
            self.raced = True
            rival = JobRecord(job_name="prepflow-rival-000000000001", idempotency_key=self.stolen)
            assert super()._insert_if_absent(rival)
        return super()._insert_if_absent(record)


def test_batch_retries_without_claimed_object(clean_env):
    probe = Pipeline(make_settings())
    keys = probe.put("input/a.csv", "input/b.csv", "input/c.csv")
    racing = RacingJobStore(probe.object_key(keys[1]))
    pipeline = Pipeline(make_settings(), jobs=racing)
    pipeline.store, pipeline.sequencers = probe.store, probe.sequencers
    pipeline.orchestrator.store = probe.store

    result = pipeline.handle(*keys)

    assert result.outcomes[1].kind == OutcomeKind.DUPLICATE
    assert result.outcomes[1].job_name == "prepflow-rival-000000000001"
    (name,) = started_names(result)[:1]
    assert sorted(pipeline.manifest(name)[1]) == ["a.csv", "c.csv"]
    assert racing.raced


def test_batch_on_sqlite_store(clean_env, tmp_path: Path):
    pipeline = Pipeline(make_settings(), jobs=SqliteJobStore(tmp_path / "jobs.db"))
    keys = pipeline.put("input/a.csv", "input/b.csv", "input/c.csv")

    (first,) = pipeline.handle(*keys[:2]).job_names
    second = pipeline.handle(*keys)

    assert [o.job_name for o in second.outcomes[:2]] == [first, first]
    (new,) = started_names(second)
    assert pipeline.manifest(new)[1] == ["c.csv"]
    assert pipeline.jobs.find_by_key(pipeline.object_key(keys[0])).job_name == first


def test_common_folder_cases():
    assert common_folder(["input/a/x.csv", "input/a/y.csv"]) == "input/a/"
    assert common_folder(["input/ab/x.csv", "input/a/y.csv"]) == "input/"
    assert common_folder(["x.csv", "input/y.csv"]) == ""


def test_batch_key_order_free():
    assert naming.batch_idempotency_key(["b", "a"]) == naming.batch_idempotency_key(["a", "b"])
    assert naming.batch_idempotency_key(["a", "a"]) == "a"
    assert naming.batch_idempotency_key(["a", "b"]).startswith("batch:")


# -- marker mode ------------------------------------------------------------------------------


@pytest.fixture
def marked(clean_env) -> Pipeline:
    return Pipeline(make_settings(marker="_SUCCESS"))


def test_marker_data_alone_waits(marked):
    (key,) = marked.put("input/run-1/part-0.csv")

    result = marked.handle(key)

    assert kinds(result) == [OutcomeKind.SKIPPED]
    assert "_SUCCESS" in str(result.outcomes[0].reason)
    assert marked.backend.submitted == []


@pytest.mark.parametrize("batch", [True, False])
def test_marker_starts_folder_job(marked, batch):
    marked.put("input/run-1/part-0.csv", "input/run-1/part-1.csv", "input/run-1/sub/part-2.csv")
    marked.put("input/run-1/_SUCCESS", body=b"")

    result = marked.handle("input/run-1/_SUCCESS", batch=batch)

    assert kinds(result) == [OutcomeKind.STARTED]
    (name,) = result.job_names
    prefix, relative = marked.manifest(name)
    assert prefix == f"s3://{RAW}/input/run-1/"
    assert sorted(relative) == ["part-0.csv", "part-1.csv"]


def test_marker_redelivered_duplicate(marked):
    marked.put("input/run-1/part-0.csv", "input/run-1/part-1.csv")
    marked.put("input/run-1/_SUCCESS", body=b"")
    (name,) = marked.handle("input/run-1/_SUCCESS").job_names
    marked.put("input/run-1/late.csv")

    again = marked.handle("input/run-1/_SUCCESS")

    assert kinds(again) == [OutcomeKind.DUPLICATE]
    assert again.job_names == [name]
    assert len(marked.backend.submitted) == 1


def test_second_marker_takes_new_objects(marked):
    marked.put("input/run-1/part-0.csv")
    marked.put("input/run-1/_SUCCESS", body=b"")
    (first,) = marked.handle("input/run-1/_SUCCESS").job_names
    marked.put("input/run-1/part-1.csv")
    marked.put("input/run-1/_SUCCESS", body=b"")

    result = marked.handle("input/run-1/_SUCCESS")

    (second,) = result.job_names
    assert second != first
    assert marked.manifest(second)[1] == ["part-1.csv"]


def test_second_marker_nothing_new(marked):
    marked.put("input/run-1/part-0.csv")
    marked.put("input/run-1/_SUCCESS", body=b"")
    marked.handle("input/run-1/_SUCCESS")
    marked.put("input/run-1/_SUCCESS", body=b"")

    result = marked.handle("input/run-1/_SUCCESS")

    assert kinds(result) == [OutcomeKind.SKIPPED]
    assert "left without a job" in str(result.outcomes[0].reason)
    assert len(marked.backend.submitted) == 1


def test_marker_skip_reasons(marked):
    orchestrator = marked.orchestrator

    assert orchestrator.skip_reason(RAW, "input/run-1/_SUCCESS", 0) is None
    assert orchestrator.skip_reason(RAW, "elsewhere/_SUCCESS", 0) is not None
    assert orchestrator.data_skip_reason(RAW, "input/run-1/_SUCCESS", 0) is not None
    assert orchestrator.data_skip_reason(RAW, "input/run-1/a.csv", 10) is None


def test_marker_manual_request_reads_data(marked):
    marked.put("input/run-1/part-0.csv", "input/run-1/part-1.csv")

    result = marked.orchestrator.handle({"input_data_path": f"s3://{RAW}/input/run-1/"})

    (name,) = result.job_names
    assert sorted(marked.manifest(name)[1]) == ["part-0.csv", "part-1.csv"]


def test_batch_max_objects_bounded(clean_env):
    from prepflow.errors import ConfigurationError

    with pytest.raises(ConfigurationError) as raised:
        make_settings(batch_max_objects=98)

    assert "PREPFLOW_BATCH_MAX_OBJECTS" in str(raised.value)


def test_batch_manifest_is_json(pipeline):
    keys = pipeline.put("input/a.csv", "input/b.csv")

    (name,) = pipeline.handle(*keys).job_names

    body = json.loads(pipeline.store.get_object(ARTIFACTS, f"manifests/{name}.manifest"))
    assert body[0] == {"prefix": f"s3://{RAW}/input/"}
