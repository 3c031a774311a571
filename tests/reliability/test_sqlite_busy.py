"""A job database locked by another process: writes wait and retry, and none is lost."""

from __future__ import annotations

import logging
import sqlite3
import threading

import pytest

from prepflow.errors import DatabaseBusyError
from prepflow.jobs.spec import JobStatus
from prepflow.jobs.template import upload_script
from prepflow.jobstore.base import JobRecord, utcnow
from prepflow.jobstore.sqlite import SqliteJobStore
from tests.helpers import wait_until
from tests.reliability.pipeline import (
    hold_database_lock,
    job_record,
    job_status,
    output_folder,
)

DEADLINE_SECONDS = 120
RETRY_MESSAGE = "is locked by another connection"

# Waits for a file named in the script itself, so the test decides when the job ends.
GATED_SCRIPT = """\
import os, sys, time
from pathlib import Path

gate = Path({gate!r})
deadline = time.monotonic() + {deadline}
while not gate.exists():
    if time.monotonic() > deadline:
        sys.exit("the test never opened the gate")
    time.sleep(0.05)
root = Path(os.environ["PREPFLOW_ML_ROOT"])
output = root / "processing" / "output"
output.mkdir(parents=True, exist_ok=True)
(output / "done.txt").write_text("done")
"""


def test_writes_wait_for_lock_then_land(tmp_path, caplog, figures):
    database = tmp_path / "jobs.db"
    store = SqliteJobStore(database, lock_wait_seconds=DEADLINE_SECONDS)
    store.create(JobRecord(job_name="prepflow-busy-1", idempotency_key="key-1"))
    failures: list[BaseException] = []

    def change_state() -> None:
        try:
            store.update("prepflow-busy-1", waiting_reason=None, started_at=utcnow())
            store.update("prepflow-busy-1", submitted_at=utcnow())
            store.transition("prepflow-busy-1", JobStatus.COMPLETED, ended_at=utcnow())
        except BaseException as error:
            failures.append(error)

    caplog.set_level(logging.WARNING, logger="prepflow.local.sqlite")
    writer = threading.Thread(target=change_state)
    with hold_database_lock(database):
        writer.start()
        wait_until(
            lambda: any(RETRY_MESSAGE in r.getMessage() for r in caplog.records),
            timeout=DEADLINE_SECONDS,
            description="the writer to log a retry",
        )
        # The holder keeps the lock, so no change can have been written yet.
        assert writer.is_alive()
        assert store.get("prepflow-busy-1").version == 0
    writer.join(timeout=DEADLINE_SECONDS)

    assert not writer.is_alive()
    assert failures == []
    record = store.get("prepflow-busy-1")
    assert record.status == JobStatus.COMPLETED
    assert record.started_at is not None
    assert record.submitted_at is not None
    assert record.ended_at is not None
    assert record.version == 3
    retries = sum(RETRY_MESSAGE in r.getMessage() for r in caplog.records)
    figures.record(
        "3 state changes of a job while another process held `BEGIN EXCLUSIVE` on jobs.db",
        3,
        f"all 3 written after the lock was released ({retries} logged retries), none lost",
    )


def test_lock_past_wait_limit_names_database(tmp_path, figures):
    database = tmp_path / "jobs.db"
    store = SqliteJobStore(database, lock_wait_seconds=0.5)
    store.create(JobRecord(job_name="prepflow-busy-2", idempotency_key="key-2"))

    with hold_database_lock(database), pytest.raises(DatabaseBusyError) as raised:
        store.transition("prepflow-busy-2", JobStatus.FAILED, failure_reason="late")

    message = str(raised.value)
    assert str(database) in message
    assert "PREPFLOW_DB_LOCK_WAIT_SECONDS=0.5" in message
    assert "not written" in message
    assert not isinstance(raised.value, sqlite3.Error)
    assert store.get("prepflow-busy-2").status == JobStatus.IN_PROGRESS
    figures.record(
        "write while jobs.db stayed locked past PREPFLOW_DB_LOCK_WAIT_SECONDS (0.5 s)",
        1,
        "DatabaseBusyError naming the file and the setting; the record unchanged",
    )


def test_cli_lock_past_wait_limit_clear_error(make_app, cli, home):
    make_app()
    database = home / "jobs.db"

    with hold_database_lock(database):
        result = cli(
            "invoke",
            "--input",
            "s3://mlops-lambda-preprocessing-pipeline-raw-data-bucket/input/",
            env={"PREPFLOW_DB_LOCK_WAIT_SECONDS": "0.5"},
        )

    assert result.returncode == 1
    assert f"error: database {str(database)!r} stayed locked" in result.stderr
    assert "Traceback" not in result.stderr
    assert "OperationalError" not in result.stderr


@pytest.mark.timeout(DEADLINE_SECONDS * 3)
def test_job_end_recorded_after_lock_released(make_app, home, tmp_path, figures):
    gate = tmp_path / "gate"
    script = tmp_path / "gated.py"
    script.write_text(GATED_SCRIPT.format(gate=str(gate), deadline=DEADLINE_SECONDS))
    app = make_app(isolation="none", db_lock_wait_seconds=DEADLINE_SECONDS * 2)
    app.orchestrator.step = upload_script(app.store, app.settings, script)
    sent: list[dict] = []
    app.store.subscribe(app.settings.buckets.raw, sent.append)
    app.store.put_object(app.settings.buckets.raw, "input/orders.csv", b"id\n1\n")
    (outcome,) = app.orchestrator.handle(sent[0]).outcomes
    name = outcome.job_name
    assert name is not None
    wait_until(
        lambda: (r := job_record(home, name)) is not None and r.started_at is not None,
        timeout=DEADLINE_SECONDS,
        description="the job's start in its record",
    )
    runner_log = home / "jobs" / name / "runner.log"

    with hold_database_lock(home / "jobs.db"):
        gate.touch()
        wait_until(
            lambda: job_status(home, name)["status"] == "Completed",
            timeout=DEADLINE_SECONDS,
            description="the supervisor to write Completed to status.json",
        )
        wait_until(
            lambda: RETRY_MESSAGE in runner_log.read_text(),
            timeout=DEADLINE_SECONDS,
            description="the supervisor to log a retry",
        )
        while_locked = job_record(home, name)
        assert while_locked is not None
        assert while_locked.status == JobStatus.IN_PROGRESS

    wait_until(
        lambda: (r := job_record(home, name)) is not None and r.status.is_terminal,
        timeout=DEADLINE_SECONDS,
        description="the job's end in its record",
    )
    record = job_record(home, name)
    assert record is not None
    assert record.status == JobStatus.COMPLETED
    assert record.started_at is not None
    assert record.ended_at is not None
    assert record.log_uri is not None
    assert (output_folder(home, name) / "done.txt").read_text() == "done"
    figures.record(
        "a job's end reported while another process held `BEGIN EXCLUSIVE` on jobs.db",
        1,
        "status.json had Completed at once; the job record became Completed after the "
        "release, with start, end and log",
    )
