"""Helpers shared by the reliability tests: real `prepflow` processes on one home, and reads of
the product's own records (job database, job folders) to check what they did.

Reads never take the job database's write lock, so they work while a test holds it.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from prepflow.jobstore.base import JobRecord
from tests.helpers import wait_until

RAW = "mlops-lambda-preprocessing-pipeline-raw-data-bucket"
PROCESSED = "mlops-lambda-preprocessing-pipeline-processed-data-bucket"
# Seconds `stop_watch` gives the watcher to exit after SIGINT before it sends SIGKILL.
STOP_SECONDS = 60.0

# Copies each CSV input to the output folder. It imports nothing heavy, so a job costs little
# more than prepflow's own work around it, which is what the load tests measure. It finds its
# folders under PREPFLOW_ML_ROOT, so it runs with PREPFLOW_ISOLATION=none.
COPY_SCRIPT = """\
import os
from pathlib import Path

root = Path(os.environ.get("PREPFLOW_ML_ROOT", "/opt/ml"))
output = root / "processing" / "output"
output.mkdir(parents=True, exist_ok=True)
for source in sorted((root / "processing" / "input").glob("*.csv")):
    (output / f"copied_{source.name}").write_bytes(source.read_bytes())
"""

# Holds SQLite's write lock on the database named in argv[1] until a line arrives on stdin.
LOCK_HOLDER = """\
import sqlite3, sys
connection = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=120)
connection.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.readline()
connection.execute("ROLLBACK")
"""


def raw_folder(home: Path) -> Path:
    """Return the watched folder: the raw bucket's input prefix in the local store."""
    return home / "buckets" / RAW / "input"


def output_folder(home: Path, job_name: str) -> Path:
    """Return the folder of a job's processed output in the local store."""
    return home / "buckets" / PROCESSED / "output" / job_name


def prepflow_env(home: Path, **variables: str) -> dict[str, str]:
    """Return the environment of a prepflow process on ``home`` with extra ``variables``."""
    return {**os.environ, "PREPFLOW_HOME": str(home), **variables}


def write_copy_script(folder: Path) -> Path:
    """Write COPY_SCRIPT into ``folder`` and return its path."""
    script = folder / "copy_inputs.py"
    script.write_text(COPY_SCRIPT)
    return script


@dataclass
class WatchProcess:
    """A `prepflow watch` process; its stdout and stderr go to ``log_path``."""

    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_watch(
    home: Path, *arguments: str, env: dict[str, str] | None = None, log_path: Path | None = None
) -> WatchProcess:
    """Start `prepflow watch ARGUMENTS` on ``home`` with extra environment variables ``env``.

    Its output goes to a file rather than a pipe, so a long run never blocks on a full pipe.
    Stop it with `stop_watch`, or use `running_watch`, which always does.
    """
    log_path = log_path or home.parent / "watch.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "prepflow", "watch", *arguments],
            env=prepflow_env(home, **(env or {})),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return WatchProcess(process, log_path)


def stop_watch(watch: WatchProcess, *, timeout: float = STOP_SECONDS) -> int:
    """Send SIGINT, wait up to ``timeout`` seconds, then SIGKILL; return the exit code."""
    if watch.process.poll() is None:
        watch.process.send_signal(signal.SIGINT)
        try:
            return watch.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            watch.process.kill()
    return watch.process.wait()


@contextmanager
def running_watch(
    home: Path, *arguments: str, env: dict[str, str] | None = None
) -> Iterator[WatchProcess]:
    """Run `prepflow watch` for the block and stop it afterwards, also when the block fails."""
    watch = start_watch(home, *arguments, env=env)
    try:
        yield watch
    finally:
        stop_watch(watch)


def job_records(home: Path) -> list[JobRecord]:
    """Return every job record in the home's job database, oldest first (none if no database).

    Opens the file read-only, so it neither waits for nor takes the write lock.
    """
    database = home / "jobs.db"
    if not database.exists():
        return []
    connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=30)
    try:
        rows = connection.execute("SELECT body FROM jobs ORDER BY created_at, job_name").fetchall()
    except sqlite3.OperationalError as error:
        if "no such table" in str(error):
            return []
        raise
    finally:
        connection.close()
    return [JobRecord.model_validate_json(body) for (body,) in rows]


def job_record(home: Path, job_name: str) -> JobRecord | None:
    """Return one job's record as stored, or None."""
    return next((r for r in job_records(home) if r.job_name == job_name), None)


def wait_for_terminal_jobs(home: Path, count: int, *, timeout: float) -> list[JobRecord]:
    """Poll until at least ``count`` records exist and all are terminal; return them."""

    def ended() -> list[JobRecord] | None:
        records = job_records(home)
        if len(records) >= count and all(r.status.is_terminal for r in records):
            return records
        return None

    result: list[JobRecord] = wait_until(
        ended, timeout=timeout, description=f"{count} jobs to end in {home}"
    )
    return result


def job_status(home: Path, job_name: str) -> dict[str, Any]:
    """Return the job's status.json: the local runner's own record of the job."""
    loaded: dict[str, Any] = json.loads((home / "jobs" / job_name / "status.json").read_text())
    return loaded


def job_folders(home: Path) -> list[str]:
    """Return the names of the claimed job folders (drafts being claimed are left out)."""
    root = home / "jobs"
    if not root.is_dir():
        return []
    return sorted(path.name for path in root.iterdir() if not path.name.startswith("."))


@dataclass(frozen=True)
class SlotHold:
    """One job's hold of a local job slot, as its supervisor recorded it in status.json."""

    job_name: str
    slot: int
    acquired: datetime
    released: datetime


def slot_holds(home: Path, job_names: Sequence[str]) -> list[SlotHold]:
    """Return the slot holds of ``job_names`` from their status files."""
    holds = []
    for name in job_names:
        status = job_status(home, name)
        holds.append(
            SlotHold(
                job_name=name,
                slot=int(status["slot"]),
                acquired=datetime.fromisoformat(status["slot_acquired_time"]),
                released=datetime.fromisoformat(status["slot_released_time"]),
            )
        )
    return holds


def max_concurrent(holds: Sequence[SlotHold]) -> int:
    """Return the most holds that overlap in time; a release counts before an equal start."""
    events = [(hold.acquired, 1) for hold in holds] + [(hold.released, -1) for hold in holds]
    running = peak = 0
    for _, change in sorted(events):
        running += change
        peak = max(peak, running)
    return peak


@contextmanager
def hold_database_lock(database: Path) -> Iterator[subprocess.Popen[str]]:
    """Hold SQLite's write lock on ``database`` from another process for the block.

    The holder runs `BEGIN EXCLUSIVE` and keeps the transaction open until the block ends.
    """
    holder = subprocess.Popen(
        [sys.executable, "-c", LOCK_HOLDER, str(database)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        first_line = holder.stdout.readline()
        if first_line.strip() != "locked":
            _, stderr = holder.communicate(timeout=30)
            raise AssertionError(f"the lock holder did not take the lock: {stderr}")
        yield holder
    finally:
        if holder.poll() is None:
            try:
                holder.communicate("release\n", timeout=30)
            except subprocess.TimeoutExpired:
                holder.kill()
                holder.wait()
