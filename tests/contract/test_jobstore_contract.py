"""The job store's rules, checked on every backend: SQLite and DynamoDB (moto).

Each test gets an empty store from the parametrized ``jobs`` fixture (tests/contract/
jobstore_fixtures.py). What only one backend does (files, processes, AWS errors) is tested
next to that backend.
"""

from __future__ import annotations

import json
import threading
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from prepflow.aws.dynamodb import DynamoJobStore
from prepflow.errors import IllegalTransitionError, JobNotFoundError, JobStoreError
from prepflow.jobs.spec import JobDescription, JobStatus
from prepflow.jobstore.base import JobRecord, JobStore
from prepflow.jobstore.sqlite import SqliteJobStore
from tests.aws.test_dynamodb_jobstore import OneRequestAtATime

IN_PROGRESS = JobStatus.IN_PROGRESS
COMPLETED = JobStatus.COMPLETED
FAILED = JobStatus.FAILED
STOPPING = JobStatus.STOPPING
STOPPED = JobStatus.STOPPED

# The processing-job lifecycle as DescribeProcessingJob reports it, written out here instead of
# read from prepflow, so a wrong table in prepflow fails these tests.
ALLOWED = {
    (IN_PROGRESS, COMPLETED),
    (IN_PROGRESS, FAILED),
    (IN_PROGRESS, STOPPING),
    (STOPPING, STOPPED),
    (STOPPING, COMPLETED),
    (STOPPING, FAILED),
}
# A legal way to reach each status from a new record.
PATH_TO = {
    IN_PROGRESS: [],
    COMPLETED: [COMPLETED],
    FAILED: [FAILED],
    STOPPING: [STOPPING],
    STOPPED: [STOPPING, STOPPED],
}
BASE_TIME = datetime(2024, 6, 4, 10, 0, tzinfo=UTC)


def new_record(name: str = "prepflow-orders-0123456789ab", key: str | None = None) -> JobRecord:
    return JobRecord(
        job_name=name,
        idempotency_key=key or f"s3://acme-ml-raw/input/{name}.csv#sequencer=01",
        inputs=["s3://acme-ml-raw/input/orders.csv"],
        outputs=[f"s3://acme-ml-processed/output/{name}/"],
    )


def created_in(jobs: JobStore, status: JobStatus) -> JobRecord:
    record, _ = jobs.create(new_record())
    for step in PATH_TO[status]:
        record = jobs.transition(record.job_name, step)
    assert record.status == status
    return record


def describe(name: str, status: JobStatus, **fields: Any) -> JobDescription:
    return JobDescription(job_name=name, status=status, **fields)


def create_at_minutes(jobs: JobStore, minutes: list[int]) -> list[str]:
    """Create one record per entry, ``minutes`` after BASE_TIME; return their job names."""
    names = []
    for minute in minutes:
        name = f"prepflow-minute-{minute:02d}"
        created_at = BASE_TIME + timedelta(minutes=minute)
        jobs.create(new_record(name).model_copy(update={"created_at": created_at}))
        names.append(name)
    return names


# -- create -------------------------------------------------------------------------------------


def test_create_new_record(jobs):
    record, created = jobs.create(new_record())

    assert created is True
    assert jobs.get(record.job_name) == record


def test_create_same_key_returns_first(jobs):
    first, _ = jobs.create(new_record("prepflow-first-000000000001", key="same-key"))

    stored, created = jobs.create(new_record("prepflow-second-00000000002", key="same-key"))

    assert created is False
    assert stored == first
    assert [r.job_name for r in jobs.list_jobs()] == ["prepflow-first-000000000001"]


def test_create_same_key_keeps_first_fields(jobs):
    jobs.create(new_record(key="same-key"))
    later = new_record(key="same-key").model_copy(update={"inputs": ["s3://other/x.csv"]})

    stored, _ = jobs.create(later)

    assert stored.inputs == ["s3://acme-ml-raw/input/orders.csv"]


def test_create_same_name_not_inserted(jobs):
    jobs.create(new_record(key="first-key"))

    stored, created = jobs.create(new_record(key="second-key"))

    assert created is False
    assert stored.idempotency_key == "first-key"
    assert len(jobs.list_jobs()) == 1


def test_create_same_name_keeps_key_free(jobs):
    jobs.create(new_record(key="first-key"))

    jobs.create(new_record(key="second-key"))

    assert jobs.find_by_key("second-key") is None
    assert jobs.find_by_key("first-key") is not None


def test_find_by_key(jobs):
    record, _ = jobs.create(new_record(key="the-key"))

    assert jobs.find_by_key("the-key") == record
    assert jobs.find_by_key("other-key") is None


def test_get_missing_raises(jobs):
    with pytest.raises(JobNotFoundError, match="prepflow-absent"):
        jobs.get("prepflow-absent")


def test_find_missing_returns_none(jobs):
    assert jobs.find("prepflow-absent") is None


# -- transitions --------------------------------------------------------------------------------

ALL_PAIRS = [(old, new) for old in JobStatus for new in JobStatus if old != new]


@pytest.mark.parametrize(("old", "new"), [pair for pair in ALL_PAIRS if pair in ALLOWED])
def test_transition_allowed(jobs, old, new):
    record = created_in(jobs, old)

    updated = jobs.transition(record.job_name, new)

    assert updated.status == new
    assert jobs.get(record.job_name).status == new


@pytest.mark.parametrize(("old", "new"), [pair for pair in ALL_PAIRS if pair not in ALLOWED])
def test_transition_rejected(jobs, old, new):
    record = created_in(jobs, old)

    with pytest.raises(IllegalTransitionError) as caught:
        jobs.transition(record.job_name, new)

    assert str(old) in str(caught.value)
    assert str(new) in str(caught.value)


@pytest.mark.parametrize(("old", "new"), [pair for pair in ALL_PAIRS if pair not in ALLOWED])
def test_transition_rejected_changes_nothing(jobs, old, new):
    record = created_in(jobs, old)

    with pytest.raises(IllegalTransitionError):
        jobs.transition(record.job_name, new, failure_reason="should not be stored")

    stored = jobs.get(record.job_name)
    assert stored.status == old
    assert stored.version == record.version
    assert stored.failure_reason is None


@pytest.mark.parametrize("terminal", [COMPLETED, FAILED, STOPPED])
def test_terminal_status_never_changes(jobs, terminal):
    record = created_in(jobs, terminal)

    for status in JobStatus:
        if status != terminal:
            with pytest.raises(IllegalTransitionError):
                jobs.transition(record.job_name, status)

    assert jobs.get(record.job_name).status == terminal


def test_transition_error_is_job_store_error(jobs):
    record = created_in(jobs, COMPLETED)

    with pytest.raises(JobStoreError):
        jobs.transition(record.job_name, FAILED)


def test_transition_same_status_updates_fields(jobs):
    record = created_in(jobs, IN_PROGRESS)

    updated = jobs.transition(record.job_name, IN_PROGRESS, waiting_reason="waiting for a slot")

    assert updated.status == IN_PROGRESS
    assert updated.waiting_reason == "waiting for a slot"


def test_transition_stores_fields(jobs):
    record = created_in(jobs, IN_PROGRESS)
    ended = datetime(2024, 6, 4, 10, 20, tzinfo=UTC)

    jobs.transition(
        record.job_name, FAILED, failure_reason="AlgorithmError: exit 1", ended_at=ended
    )

    stored = jobs.get(record.job_name)
    assert stored.failure_reason == "AlgorithmError: exit 1"
    assert stored.ended_at == ended


def test_transition_missing_job_raises(jobs):
    with pytest.raises(JobNotFoundError):
        jobs.transition("prepflow-absent", COMPLETED)


def test_every_write_increments_version(jobs):
    record, _ = jobs.create(new_record())

    first = jobs.update(record.job_name, log_tail="a")
    second = jobs.transition(record.job_name, COMPLETED)

    assert (record.version, first.version, second.version) == (0, 1, 2)
    assert jobs.get(record.job_name).version == 2


def test_update_changes_fields(jobs):
    record, _ = jobs.create(new_record())
    submitted = datetime(2024, 6, 4, 10, 15, tzinfo=UTC)

    jobs.update(record.job_name, submitted_at=submitted, log_uri="s3://logs/x")

    stored = jobs.get(record.job_name)
    assert stored.submitted_at == submitted
    assert stored.log_uri == "s3://logs/x"
    assert stored.inputs == record.inputs


def test_update_rejects_status(jobs):
    record, _ = jobs.create(new_record())

    with pytest.raises(JobStoreError, match="transition"):
        jobs.update(record.job_name, status=COMPLETED)

    assert jobs.get(record.job_name).status == IN_PROGRESS


# -- apply_description --------------------------------------------------------------------------


def test_apply_completed(jobs):
    record = created_in(jobs, IN_PROGRESS)
    started = datetime(2024, 6, 4, 10, 15, tzinfo=UTC)
    ended = started + timedelta(seconds=42)

    updated = jobs.apply_description(
        describe(record.job_name, COMPLETED, start_time=started, end_time=ended)
    )

    assert updated.status == COMPLETED
    assert updated.started_at == started
    assert updated.ended_at == ended
    assert updated.duration_s == 42.0


def test_apply_failed_keeps_reason(jobs):
    record = created_in(jobs, IN_PROGRESS)

    updated = jobs.apply_description(
        describe(record.job_name, FAILED, failure_reason="AlgorithmError: empty file")
    )

    assert updated.status == FAILED
    assert jobs.get(record.job_name).failure_reason == "AlgorithmError: empty file"


def test_apply_late_in_progress_ignored(jobs):
    record = created_in(jobs, COMPLETED)

    result = jobs.apply_description(describe(record.job_name, IN_PROGRESS))

    stored = jobs.get(record.job_name)
    assert result.status == COMPLETED
    assert stored.status == COMPLETED
    assert stored.version == record.version


def test_apply_repeat_changes_nothing(jobs):
    record = created_in(jobs, IN_PROGRESS)
    report = describe(record.job_name, COMPLETED, exit_message='{"rows_in": 5, "rows_out": 4}')
    first = jobs.apply_description(report)

    second = jobs.apply_description(report)

    assert second == first
    assert jobs.get(record.job_name).version == first.version


def test_apply_second_terminal_ignored(jobs):
    record = created_in(jobs, COMPLETED)

    jobs.apply_description(describe(record.job_name, FAILED, failure_reason="late"))

    stored = jobs.get(record.job_name)
    assert stored.status == COMPLETED
    assert stored.failure_reason is None


def test_apply_in_progress_when_running(jobs):
    record = created_in(jobs, IN_PROGRESS)

    jobs.apply_description(describe(record.job_name, IN_PROGRESS))

    assert jobs.get(record.job_name).version == record.version


def test_apply_stopped_in_one_write(jobs):
    record = created_in(jobs, IN_PROGRESS)

    updated = jobs.apply_description(
        describe(record.job_name, STOPPED, failure_reason="Stopped: MaxRuntimeInSeconds exceeded")
    )

    assert updated.status == STOPPED
    assert updated.version == record.version + 1
    assert updated.failure_reason == "Stopped: MaxRuntimeInSeconds exceeded"


def test_record_description_changed_once(jobs):
    record = created_in(jobs, IN_PROGRESS)
    report = describe(record.job_name, COMPLETED)

    first, first_changed = jobs.record_description(report)
    second, second_changed = jobs.record_description(report)

    assert (first.status, first_changed) == (COMPLETED, True)
    assert (second.status, second_changed) == (COMPLETED, False)
    assert second.version == first.version


def test_stopping_job_may_complete(jobs):
    record = created_in(jobs, STOPPING)

    updated, changed = jobs.record_description(describe(record.job_name, COMPLETED))

    assert (updated.status, changed) == (COMPLETED, True)


def test_modify_counts_every_step(jobs):
    record = created_in(jobs, IN_PROGRESS)

    for _ in range(3):
        jobs.modify(record.job_name, lambda stored: {"submit_attempts": stored.submit_attempts + 1})

    assert jobs.get(record.job_name).submit_attempts == 3


def test_modify_refuses_status(jobs):
    record = created_in(jobs, IN_PROGRESS)

    with pytest.raises(JobStoreError, match="transition"):
        jobs.modify(record.job_name, lambda stored: {"status": COMPLETED})


def test_apply_stopping_then_stopped(jobs):
    record = created_in(jobs, IN_PROGRESS)

    jobs.apply_description(describe(record.job_name, STOPPING))
    updated = jobs.apply_description(describe(record.job_name, STOPPED))

    assert updated.status == STOPPED
    assert updated.version == record.version + 2


def test_apply_rows_from_exit_message(jobs):
    record = created_in(jobs, IN_PROGRESS)
    message = json.dumps({"rows_in": 120, "rows_out": 117, "report": "s3://logs/r.json"})

    jobs.apply_description(describe(record.job_name, COMPLETED, exit_message=message))

    stored = jobs.get(record.job_name)
    assert stored.rows_in == 120
    assert stored.rows_out == 117
    assert stored.exit_message == message


@pytest.mark.parametrize(
    "message",
    [
        "plain text exit message",
        "[1, 2]",
        '{"rows_in": "12", "rows_out": 3.5}',
        '{"rows_in": true, "rows_out": false}',
        '{"other": 1}',
        "",
    ],
)
def test_apply_rows_absent_without_counts(jobs, message):
    record = created_in(jobs, IN_PROGRESS)

    jobs.apply_description(describe(record.job_name, COMPLETED, exit_message=message))

    stored = jobs.get(record.job_name)
    assert stored.status == COMPLETED
    assert stored.rows_in is None
    assert stored.rows_out is None


def test_apply_extra_fields(jobs):
    record = created_in(jobs, IN_PROGRESS)

    updated = jobs.apply_description(
        describe(record.job_name, FAILED, failure_reason="x"), log_tail="Traceback ...\nValueError"
    )

    assert updated.log_tail == "Traceback ...\nValueError"


def test_apply_unknown_job_raises(jobs):
    with pytest.raises(JobNotFoundError):
        jobs.apply_description(describe("prepflow-absent", COMPLETED))


# -- listing ------------------------------------------------------------------------------------


def test_list_newest_first(jobs):
    base = datetime(2024, 6, 4, 10, 0, tzinfo=UTC)
    for minute, name in [(2, "prepflow-b"), (1, "prepflow-a"), (3, "prepflow-c")]:
        created_at = base + timedelta(minutes=minute)
        jobs.create(new_record(name).model_copy(update={"created_at": created_at}))

    assert [r.job_name for r in jobs.list_jobs()] == ["prepflow-c", "prepflow-b", "prepflow-a"]


def test_list_by_status(jobs):
    for name in ["prepflow-a", "prepflow-b", "prepflow-c"]:
        jobs.create(new_record(name))
    jobs.transition("prepflow-b", COMPLETED)

    completed = jobs.list_jobs(status=COMPLETED)
    running = jobs.list_jobs(status=IN_PROGRESS)

    assert [r.job_name for r in completed] == ["prepflow-b"]
    assert sorted(r.job_name for r in running) == ["prepflow-a", "prepflow-c"]


def test_list_limit(jobs):
    for index in range(5):
        jobs.create(new_record(f"prepflow-{index}"))

    assert len(jobs.list_jobs(limit=2)) == 2


def test_list_limit_keeps_newest(jobs):
    names = create_at_minutes(jobs, [3, 1, 4, 5, 2])

    listed = jobs.list_jobs(limit=2)

    assert [r.job_name for r in listed] == [names[3], names[2]]


def test_list_by_status_with_limit(jobs):
    names = create_at_minutes(jobs, [1, 2, 3, 4, 5, 6])
    for name in names[::2]:
        jobs.transition(name, COMPLETED)

    listed = jobs.list_jobs(status=COMPLETED, limit=2)

    assert [r.job_name for r in listed] == [names[4], names[2]]
    assert all(r.status == COMPLETED for r in listed)


def test_list_status_none_match(jobs):
    create_at_minutes(jobs, [1, 2])

    assert jobs.list_jobs(status=FAILED) == []


def test_list_empty_store(jobs):
    assert jobs.list_jobs() == []


# -- claims -------------------------------------------------------------------------------------


def object_key(name: str) -> str:
    return f"s3://acme-ml-raw/input/{name}.csv#sequencer=0A"


def batch_record(name: str, objects: list[str]) -> JobRecord:
    keys = [object_key(o) for o in objects]
    return JobRecord(
        job_name=name,
        idempotency_key=f"batch:{name}",
        inputs=[f"s3://acme-ml-raw/input/{o}.csv" for o in objects],
        claims=keys,
    )


def test_claiming_create_finds_by_claim(jobs):
    result = jobs.create_claiming(batch_record("prepflow-batch-1", ["a", "b"]))

    assert result.created is True
    assert result.taken == {}
    assert jobs.find_by_key(object_key("a")).job_name == "prepflow-batch-1"
    assert jobs.find_by_key(object_key("b")).job_name == "prepflow-batch-1"
    assert jobs.find_by_key("batch:prepflow-batch-1").job_name == "prepflow-batch-1"


def test_batches_sharing_object_one_wins(jobs):
    jobs.create_claiming(batch_record("prepflow-batch-1", ["a", "b"]))

    result = jobs.create_claiming(batch_record("prepflow-batch-2", ["b", "c"]))

    assert result.record is None
    assert result.created is False
    assert result.taken == {object_key("b"): "prepflow-batch-1"}
    assert jobs.find("prepflow-batch-2") is None
    assert jobs.find_by_key(object_key("c")) is None
    assert [r.job_name for r in jobs.list_jobs()] == ["prepflow-batch-1"]


def test_claiming_same_batch_returns_stored(jobs):
    first = jobs.create_claiming(batch_record("prepflow-batch-1", ["a", "b"]))

    again = jobs.create_claiming(batch_record("prepflow-batch-1", ["a", "b"]))

    assert again.created is False
    assert again.record == first.record
    assert again.taken == {}


def test_claim_of_object_job_taken(jobs):
    jobs.create(new_record("prepflow-single-000000000001", key=object_key("a")))

    result = jobs.create_claiming(batch_record("prepflow-batch-1", ["a", "b"]))

    assert result.taken == {object_key("a"): "prepflow-single-000000000001"}
    assert jobs.find_by_key(object_key("b")) is None


def test_object_job_of_claimed_object(jobs):
    jobs.create_claiming(batch_record("prepflow-batch-1", ["a", "b"]))

    stored, created = jobs.create(new_record("prepflow-single-000000000001", key=object_key("a")))

    assert created is False
    assert stored.job_name == "prepflow-batch-1"
    assert jobs.find("prepflow-single-000000000001") is None


def test_claims_survive_updates(jobs):
    jobs.create_claiming(batch_record("prepflow-batch-1", ["a"]))

    jobs.transition("prepflow-batch-1", COMPLETED)

    assert jobs.find_by_key(object_key("a")).status == COMPLETED


def test_concurrent_claims_each_object_once(jobs):
    # Eight batches over ten objects, each sharing objects with its neighbours.
    batches = [
        batch_record(f"prepflow-batch-{i}", [f"o{(i + j) % 10}" for j in range(4)])
        for i in range(8)
    ]
    if isinstance(jobs, DynamoJobStore):
        # moto checks a transaction's conditions and writes its items without a lock; see
        # OneRequestAtATime. Threads still interleave between the store's requests.
        jobs.client = OneRequestAtATime(jobs.client)
    barrier = threading.Barrier(len(batches))

    def create(record: JobRecord) -> Any:
        barrier.wait(timeout=60)
        return jobs.create_claiming(record)

    with ThreadPoolExecutor(max_workers=len(batches)) as pool:
        results = list(pool.map(create, batches))

    created = [r.record for r in results if r.created and r.record is not None]
    assert created, "no batch was created"
    claimed = [key for record in created for key in record.claims]
    assert len(claimed) == len(set(claimed))
    for record in created:
        for key in record.claims:
            assert jobs.find_by_key(key).job_name == record.job_name
    for result in results:
        if not result.created:
            assert result.taken
    assert len(jobs.list_jobs()) == len(created)


def _create_in_process(path: str, name: str, objects: list[str]) -> bool:
    return SqliteJobStore(Path(path)).create_claiming(batch_record(name, objects)).created


def test_concurrent_claims_across_processes(tmp_path):
    path = str(tmp_path / "jobs.db")
    SqliteJobStore(Path(path))
    batches = [(f"prepflow-batch-{i}", [f"o{(i + j) % 6}" for j in range(3)]) for i in range(6)]

    with ProcessPoolExecutor(max_workers=3) as pool:
        futures = [pool.submit(_create_in_process, path, n, o) for n, o in batches]
        created = [future.result(timeout=120) for future in futures]

    store = SqliteJobStore(Path(path))
    records = store.list_jobs()
    assert sum(created) == len(records)
    claimed = [key for record in records for key in record.claims]
    assert len(claimed) == len(set(claimed))
