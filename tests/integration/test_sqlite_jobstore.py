"""The SQLite job store: its file, and several processes at once.

The rules every job store follows are checked on SQLite and DynamoDB alike in
tests/contract/test_jobstore_contract.py.
"""

from __future__ import annotations

import multiprocessing
import queue
from pathlib import Path
from typing import Any

import pytest

from prepflow.errors import JobStoreError
from prepflow.jobs.spec import JobStatus
from prepflow.jobstore.base import JobRecord
from prepflow.jobstore.sqlite import SqliteJobStore

COMPLETED = JobStatus.COMPLETED
FAILED = JobStatus.FAILED


@pytest.fixture
def database(tmp_path: Path) -> Path:
    return tmp_path / "jobs.db"


@pytest.fixture
def jobs(database: Path) -> SqliteJobStore:
    return SqliteJobStore(database)


def new_record(name: str = "prepflow-orders-0123456789ab", key: str | None = None) -> JobRecord:
    return JobRecord(
        job_name=name,
        idempotency_key=key or f"s3://acme-ml-raw/input/{name}.csv#sequencer=01",
        inputs=["s3://acme-ml-raw/input/orders.csv"],
        outputs=[f"s3://acme-ml-processed/output/{name}/"],
    )


# -- the database file --------------------------------------------------------------------------


def test_records_survive_reopen(jobs, database):
    record, _ = jobs.create(new_record())
    jobs.transition(record.job_name, COMPLETED, rows_in=3)

    reopened = SqliteJobStore(database)

    stored = reopened.get(record.job_name)
    assert stored.status == COMPLETED
    assert stored.rows_in == 3
    assert stored.inputs == record.inputs


def test_unwritable_location_raises(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the database folder should be")

    with pytest.raises((JobStoreError, OSError)):
        SqliteJobStore(blocker / "jobs.db")


# -- several processes at once ------------------------------------------------------------------

WORKERS = 8
ROUNDS = 20


def run_workers(target_name: str, args_of_worker: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Run one spawned process per argument tuple, all starting together; return their reports."""
    import jobstore_workers

    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(len(args_of_worker))
    results = context.Queue()
    target = getattr(jobstore_workers, target_name)
    processes = [
        context.Process(target=target, args=(*args, barrier, results)) for args in args_of_worker
    ]
    for process in processes:
        process.start()
    reports = []
    try:
        for _ in processes:
            reports.append(results.get(timeout=60))
    except queue.Empty:
        pytest.fail(f"only {len(reports)} of {len(processes)} workers reported within 60 s")
    finally:
        for process in processes:
            process.join(timeout=30)
    assert [p.exitcode for p in processes] == [0] * len(processes)
    return reports


@pytest.fixture
def worker_module(monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    import jobstore_workers

    return jobstore_workers


def test_concurrent_create_one_record(database, worker_module):
    SqliteJobStore(database)

    reports = run_workers(
        "create_repeatedly", [(str(database), worker, ROUNDS) for worker in range(WORKERS)]
    )

    assert all(kind == "created" for kind, _, _ in reports), reports
    assert sum(count for _, _, count in reports) == 1
    stored = SqliteJobStore(database).list_jobs()
    assert len(stored) == 1
    assert stored[0].idempotency_key == worker_module.IDEMPOTENCY_KEY


def test_concurrent_updates_not_lost(database, worker_module):
    jobs = SqliteJobStore(database)
    jobs.create(
        JobRecord(job_name=worker_module.JOB_NAME, idempotency_key=worker_module.IDEMPOTENCY_KEY)
    )

    run_workers("update_repeatedly", [(str(database), worker, ROUNDS) for worker in range(WORKERS)])

    stored = jobs.get(worker_module.JOB_NAME)
    assert stored.version == WORKERS * ROUNDS
    for worker, field in enumerate(worker_module.FIELD_OF_WORKER):
        expected = worker_module.field_value(field, worker, ROUNDS - 1)
        assert getattr(stored, field) == expected, field


def test_concurrent_transitions_one_outcome(database, worker_module):
    jobs = SqliteJobStore(database)
    jobs.create(
        JobRecord(job_name=worker_module.JOB_NAME, idempotency_key=worker_module.IDEMPOTENCY_KEY)
    )
    requested = [COMPLETED.value if worker % 2 == 0 else FAILED.value for worker in range(WORKERS)]

    reports = run_workers(
        "transition_once", [(str(database), worker, requested[worker]) for worker in range(WORKERS)]
    )

    final = jobs.get(worker_module.JOB_NAME).status
    assert final in (COMPLETED, FAILED)
    for kind, _worker, status in reports:
        assert kind == ("applied" if status == final.value else "illegal"), reports
