"""`prepflow watch` with a batch window and in marker mode: few jobs, each file in one job."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from prepflow.jobs.spec import JobStatus
from prepflow.jobstore.base import JobRecord
from prepflow.jobstore.sqlite import SqliteJobStore
from prepflow.local.app import LocalApp
from prepflow.local.watch import Watcher
from prepflow.settings import MAX_BATCH_OBJECTS
from prepflow.storage.base import parse_s3_uri
from tests.helpers import wait_until

RAW = "mlops-lambda-preprocessing-pipeline-raw-data-bucket"
ROWS = "id,value\n1,a\n2,b\n"
BURST_OPTIONS = ("--interval", "0.2", "--settle", "0.5", "--batch-window", "2")


def watched(home: Path, folder: str = "input") -> Path:
    path = home / "buckets" / RAW / folder
    path.mkdir(parents=True, exist_ok=True)
    return path


def drop_files(home: Path, tmp_path: Path, names: list[str], folder: str = "input") -> None:
    """Write each file beside the watched folder, then rename it in, as a finished upload."""
    target = watched(home, folder)
    for name in names:
        staged = tmp_path / name
        staged.write_text(ROWS)
        os.replace(staged, target / name)


def records(home: Path) -> list[JobRecord]:
    database = home / "jobs.db"
    return SqliteJobStore(database).list_jobs(limit=1000) if database.exists() else []


def completed_inputs(home: Path) -> list[str]:
    return [uri for r in records(home) if r.status == JobStatus.COMPLETED for uri in r.inputs]


def manifest_keys(app: LocalApp, record: JobRecord) -> list[str]:
    """Return the keys a job's manifest lists, as full keys in the raw bucket."""
    assert record.manifest_uri is not None
    prefix_uri, relative = app.store.read_manifest(*parse_s3_uri(record.manifest_uri))
    prefix = parse_s3_uri(prefix_uri)[1]
    return [prefix + key for key in relative]


def run_watch(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "prepflow", "watch", "--once", "--settle", "0", *args],
        env={**os.environ, "PREPFLOW_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def test_hundred_files_few_jobs(home, tmp_path, make_app):
    names = [f"burst-{index:03d}.csv" for index in range(100)]
    watcher = subprocess.Popen(
        [sys.executable, "-m", "prepflow", "watch", *BURST_OPTIONS],
        env={**os.environ, "PREPFLOW_HOME": str(home)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        drop_files(home, tmp_path, names)
        wait_until(
            lambda: len(completed_inputs(home)) == len(names),
            timeout=240,
            description="every file in a completed job",
        )
    finally:
        watcher.send_signal(signal.SIGTERM)
        _, stderr = watcher.communicate(timeout=60)
    assert watcher.returncode == 0, stderr

    jobs = records(home)
    # The files arrive within one window or two, and a job takes MAX_BATCH_OBJECTS at most.
    assert -(-len(names) // MAX_BATCH_OBJECTS) <= len(jobs) <= 10
    app = make_app()
    listed = [key for record in jobs for key in manifest_keys(app, record)]
    assert sorted(listed) == [f"input/{name}" for name in names]
    for record in jobs:
        assert record.status == JobStatus.COMPLETED, record.failure_reason
        assert app.output_files(record), f"job {record.job_name} wrote no output"
        assert sorted(manifest_keys(app, record)) == sorted(
            parse_s3_uri(uri)[1] for uri in record.inputs
        )
    assert sum(record.rows_in or 0 for record in jobs) == 2 * len(names)


def test_watch_once_submits_batch(home, tmp_path, make_app):
    drop_files(home, tmp_path, [f"part-{index}.csv" for index in range(5)])

    result = run_watch(home, "--batch-window", "600")

    assert result.returncode == 0, result.stderr
    (record,) = records(home)
    assert record.status == JobStatus.COMPLETED
    assert len(manifest_keys(make_app(), record)) == 5


def test_stop_submits_pending_batch(home, tmp_path, make_app):
    app = make_app(batch_window_seconds=3600)
    drop_files(home, tmp_path, ["a.csv", "b.csv", "c.csv"])
    watcher = Watcher(app, interval_seconds=0.1, settle_seconds=0)
    assert watcher.scan_once() == []
    assert records(home) == []

    stop = threading.Event()
    stop.set()
    watcher.run(stop)

    (record,) = records(home)
    (finished,) = app.wait([record.job_name], timeout=120)
    assert finished.status == JobStatus.COMPLETED
    assert sorted(manifest_keys(app, finished)) == ["input/a.csv", "input/b.csv", "input/c.csv"]


def test_batch_max_splits_jobs(home, tmp_path, make_app):
    drop_files(home, tmp_path, [f"part-{index}.csv" for index in range(5)])

    result = run_watch(home, "--batch-window", "600", "--batch-max", "2")

    assert result.returncode == 0, result.stderr
    jobs = records(home)
    assert len(jobs) == 3
    app = make_app()
    sizes = sorted(len(manifest_keys(app, record)) for record in jobs)
    assert sizes == [1, 2, 2]


def test_marker_mode_end_to_end(home, tmp_path, make_app):
    drop_files(home, tmp_path, ["part-0.csv", "part-1.csv"], folder="input/run-1")
    drop_files(home, tmp_path, ["part-9.csv"], folder="input/run-1/sub")

    waiting = run_watch(home, "--marker", "_SUCCESS")

    assert waiting.returncode == 0, waiting.stderr
    assert records(home) == []
    assert "wait for a marker object '_SUCCESS'" in waiting.stderr

    (watched(home, "input/run-1") / "_SUCCESS").write_bytes(b"")
    first = run_watch(home, "--marker", "_SUCCESS")

    assert first.returncode == 0, first.stderr
    (record,) = records(home)
    app = make_app()
    assert record.status == JobStatus.COMPLETED
    assert sorted(manifest_keys(app, record)) == [
        "input/run-1/part-0.csv",
        "input/run-1/part-1.csv",
    ]
    assert app.output_files(record)


def test_second_marker_takes_new_files(home, tmp_path, make_app):
    drop_files(home, tmp_path, ["part-0.csv"], folder="input/run-1")
    marker = watched(home, "input/run-1") / "_SUCCESS"
    marker.write_bytes(b"")
    assert run_watch(home, "--marker", "_SUCCESS").returncode == 0
    drop_files(home, tmp_path, ["part-1.csv"], folder="input/run-1")
    marker.unlink()
    marker.write_bytes(b"again")

    second = run_watch(home, "--marker", "_SUCCESS")

    assert second.returncode == 0, second.stderr
    jobs = records(home)
    assert len(jobs) == 2
    app = make_app()
    listed = sorted(key for record in jobs for key in manifest_keys(app, record))
    assert listed == ["input/run-1/part-0.csv", "input/run-1/part-1.csv"]
