"""Worker functions that the job store tests run in spawned processes.

They live in a plain module because a spawned child imports its target by module name, and
the name that pytest gives a test module depends on its import mode.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prepflow.errors import IllegalTransitionError
from prepflow.jobs.spec import JobStatus
from prepflow.jobstore.base import JobRecord
from prepflow.jobstore.sqlite import SqliteJobStore

IDEMPOTENCY_KEY = "s3://acme-ml-raw/input/shared.csv#sequencer=0066A1B2C3D4E5F601"
JOB_NAME = "prepflow-shared-0123456789ab"

# One field per worker, so each worker's last write can be checked after all have finished.
FIELD_OF_WORKER = (
    "waiting_reason",
    "log_tail",
    "failure_reason",
    "exit_message",
    "log_uri",
    "manifest_uri",
    "rows_in",
    "rows_out",
)


def field_value(field: str, worker: int, round_number: int) -> Any:
    if field in ("rows_in", "rows_out"):
        return worker * 1000 + round_number
    return f"worker {worker} round {round_number}"


def create_repeatedly(
    database: str, worker: int, attempts: int, barrier: Any, results: Any
) -> None:
    """Try to create the shared record ``attempts`` times and report how many inserts succeeded."""
    store = SqliteJobStore(Path(database))
    barrier.wait(timeout=60)
    created_count = 0
    for attempt in range(attempts):
        record = JobRecord(
            job_name=JOB_NAME,
            idempotency_key=IDEMPOTENCY_KEY,
            inputs=[f"s3://acme-ml-raw/input/from-worker-{worker}-attempt-{attempt}.csv"],
        )
        stored, created = store.create(record)
        if created:
            created_count += 1
        if stored.idempotency_key != IDEMPOTENCY_KEY:
            results.put(("wrong key", worker, stored.idempotency_key))
    results.put(("created", worker, created_count))


def update_repeatedly(database: str, worker: int, rounds: int, barrier: Any, results: Any) -> None:
    """Write this worker's own field ``rounds`` times and report the number of writes."""
    store = SqliteJobStore(Path(database))
    field = FIELD_OF_WORKER[worker]
    barrier.wait(timeout=60)
    for round_number in range(rounds):
        store.update(JOB_NAME, **{field: field_value(field, worker, round_number)})
    results.put(("updated", worker, rounds))


def transition_once(database: str, worker: int, status: str, barrier: Any, results: Any) -> None:
    """Try one status change and report whether it was applied or raised IllegalTransitionError."""
    store = SqliteJobStore(Path(database))
    barrier.wait(timeout=60)
    try:
        store.transition(JOB_NAME, JobStatus(status), exit_message=f"worker {worker}")
    except IllegalTransitionError:
        results.put(("illegal", worker, status))
        return
    results.put(("applied", worker, status))
