"""`prepflow watch`: files written by any program are processed once, also across restarts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from prepflow.errors import StorageError
from prepflow.jobs.spec import JobStatus
from prepflow.jobstore.sqlite import SqliteJobStore
from prepflow.local.watch import Watcher
from tests.helpers import wait_until

RAW = "mlops-lambda-preprocessing-pipeline-raw-data-bucket"


def start_watch(home: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "prepflow", "watch", "--interval", "0.2", "--settle", "0.5"],
        env={**os.environ, "PREPFLOW_HOME": str(home)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def watch_once(home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "prepflow", "watch", "--once", "--settle", "0"],
        env={**os.environ, "PREPFLOW_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def stop_watch(process: subprocess.Popen[str]) -> str:
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    return stderr


def copy_in(home: Path, source: Path, name: str) -> None:
    """Write a file into the watched folder with another program (cp), as a user would."""
    folder = home / "buckets" / RAW / "input"
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cp", str(source), str(folder / name)], check=True)


def completed_inputs(home: Path) -> list[str]:
    database = home / "jobs.db"
    if not database.exists():
        return []
    jobs = SqliteJobStore(database).list_jobs()
    return sorted(uri for r in jobs if r.status == JobStatus.COMPLETED for uri in r.inputs)


def test_watch_processes_each_file_once(home, tmp_path):
    data = tmp_path / "data.csv"
    data.write_text("id,value\n1,a\n2,\n")
    watcher = start_watch(home)
    try:
        copy_in(home, data, "first.csv")
        wait_until(
            lambda: len(completed_inputs(home)) == 1, timeout=60, description="the first job"
        )
    finally:
        stderr = stop_watch(watcher)
    assert "watcher stopped" in stderr

    copy_in(home, data, "second.csv")
    copy_in(home, data, "third.csv")
    restarted = start_watch(home)
    try:
        wait_until(lambda: len(completed_inputs(home)) == 3, timeout=60, description="three jobs")
    finally:
        stop_watch(restarted)

    once = watch_once(home)
    assert once.returncode == 0, once.stderr
    jobs = SqliteJobStore(home / "jobs.db").list_jobs()
    assert len(jobs) == 3
    assert completed_inputs(home) == [
        f"s3://{RAW}/input/{name}.csv" for name in ("first", "second", "third")
    ]


def test_watch_ignores_unsupported_and_empty_files(home, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("not data")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    copy_in(home, notes, "notes.txt")
    copy_in(home, empty, "empty.csv")

    once = watch_once(home)

    assert once.returncode == 0, once.stderr
    assert SqliteJobStore(home / "jobs.db").list_jobs() == []


def test_watch_once_waits_for_fresh_file(home, tmp_path):
    data = tmp_path / "data.csv"
    data.write_text("id,value\n1,a\n")
    copy_in(home, data, "fresh.csv")
    # A modification time in the future keeps the file fresh however slowly the watcher
    # starts, so it must wait the settle time by its own clock before taking the file.
    target = home / "buckets" / RAW / "input" / "fresh.csv"
    os.utime(target, (target.stat().st_atime, time.time() + 3600))

    once = subprocess.run(
        [sys.executable, "-m", "prepflow", "watch", "--once", "--settle", "1", "--interval", "0.2"],
        env={**os.environ, "PREPFLOW_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert once.returncode == 0, once.stderr
    assert "waiting for 1 file(s) that are still changing" in once.stderr
    assert completed_inputs(home) == [f"s3://{RAW}/input/fresh.csv"]


def test_watch_logs_skipped_files(home, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("not data")
    copy_in(home, notes, "notes.txt")

    once = watch_once(home)

    assert once.returncode == 0, once.stderr
    assert f"skipped s3://{RAW}/input/notes.txt: the file type is not one of .csv" in once.stderr


def test_touched_file_not_processed_again(home, tmp_path):
    data = tmp_path / "data.csv"
    data.write_text("id,value\n1,a\n")
    copy_in(home, data, "steady.csv")
    assert watch_once(home).returncode == 0
    target = home / "buckets" / RAW / "input" / "steady.csv"
    os.utime(target, (target.stat().st_atime + 60, target.stat().st_mtime + 60))

    again = watch_once(home)

    assert again.returncode == 0, again.stderr
    assert len(SqliteJobStore(home / "jobs.db").list_jobs()) == 1


def test_watch_logs_links_and_fifos(home, tmp_path):
    folder = home / "buckets" / RAW / "input"
    folder.mkdir(parents=True)
    (tmp_path / "elsewhere.csv").write_text("id\n1\n")
    (folder / "link.csv").symlink_to(tmp_path / "elsewhere.csv")
    os.mkfifo(folder / "pipe.csv")

    once = watch_once(home)

    assert once.returncode == 0, once.stderr
    assert "skipped input/link.csv in the watched folder: it is a symbolic link" in once.stderr
    assert "skipped input/pipe.csv in the watched folder: it is not a regular file" in once.stderr
    assert not (home / "jobs").exists() or not any((home / "jobs").iterdir())


def test_unreadable_file_does_not_stop_watcher(make_app, home, tmp_path):
    app = make_app()
    data = tmp_path / "data.csv"
    data.write_text("id,value\n1,a\n")
    copy_in(home, data, "bad.csv")
    copy_in(home, data, "good.csv")
    real_head = app.store.head_object

    def head(bucket, key):
        if key.endswith("bad.csv"):
            raise StorageError("cannot read s3://raw/input/bad.csv: Permission denied")
        return real_head(bucket, key)

    app.store.head_object = head
    watcher = Watcher(app, interval_seconds=0.1, settle_seconds=0)

    results = watcher.scan_once()

    names = [name for result in results for name in result.job_names]
    (record,) = app.wait(names)
    assert record.inputs == [f"s3://{RAW}/input/good.csv"]
