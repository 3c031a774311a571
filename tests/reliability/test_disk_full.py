"""The disk filling up during a job: it fails naming the lack of space, and nothing is lost.

The test mounts a size-limited tmpfs in a private mount namespace of its own and puts
PREPFLOW_HOME on it, so the buckets, the job folders and the databases share one small file
system. prepflow's commands run in that namespace through ``nsenter``; the test reads the
files there through ``/proc/<pid>/root`` of the process that keeps the namespace alive.

An earlier job first fills the home with a completed output. A second input of the same
shape then meets a ballast file that leaves room for staging its input but not for its
output (while the job writes), or for its output but not for the copy that publishes it.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from prepflow.errors import describe_write_error, is_no_space
from prepflow.jobs.spec import JobStatus
from prepflow.jobstore.base import JobRecord
from tests.reliability.pipeline import PROCESSED, RAW, job_records

ROWS = 60_000
# Raw data, one output and the ballast fit with room to spare; the ballast fills the rest.
DISK_MB = 32
COMMAND_TIMEOUT_SECONDS = 300
LOGS = "mlops-lambda-preprocessing-pipeline-logs-bucket"


def namespace_command() -> list[str]:
    """Return the util-linux command that starts a private mount namespace for this user."""
    if os.geteuid() == 0:
        return ["unshare", "--mount", "--propagation", "private"]
    return ["unshare", "--user", "--map-root-user", "--mount", "--propagation", "private"]


@functools.cache
def mount_namespace_problem() -> str | None:
    """Return why this test cannot mount a tmpfs in a private namespace, or None if it can."""
    if not sys.platform.startswith("linux"):
        return f"private mount namespaces exist on Linux only, this is {sys.platform}"
    for tool in ("unshare", "nsenter"):
        if shutil.which(tool) is None:
            return f"the util-linux {tool!r} command is not installed"
    probe = [*namespace_command(), "sh", "-c", "mount -t tmpfs -o size=1m probe /mnt"]
    result = subprocess.run(probe, capture_output=True, text=True, timeout=30, check=False)
    if result.returncode != 0:
        return f"mounting a tmpfs in a private namespace was refused: {result.stderr.strip()}"
    return None


requires_mount_namespace = pytest.mark.skipif(
    mount_namespace_problem() is not None, reason=f"{mount_namespace_problem()}"
)


@dataclass
class SmallDisk:
    """A tmpfs of DISK_MB mounted at ``mount_point`` inside the namespace of ``holder``."""

    mount_point: Path
    holder: subprocess.Popen[str]

    @property
    def home(self) -> Path:
        """PREPFLOW_HOME as the processes in the namespace see it."""
        return self.mount_point / "home"

    def seen(self, path: Path) -> Path:
        """Return ``path`` of the namespace as this process can open it."""
        return Path(f"/proc/{self.holder.pid}/root") / path.relative_to("/")

    def prepflow(self, *arguments: str) -> subprocess.CompletedProcess[str]:
        enter = ["nsenter", "--target", str(self.holder.pid), "--mount"]
        if os.geteuid() != 0:
            enter += ["--user", "--preserve-credentials"]
        return subprocess.run(
            [*enter, "--", sys.executable, "-m", "prepflow", *arguments],
            env={**os.environ, "PREPFLOW_HOME": str(self.home), "PREPFLOW_ISOLATION": "none"},
            cwd="/",
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_SECONDS,
            check=False,
        )

    def job_records(self, copy_to: Path) -> list[JobRecord]:
        """Return the job records, read from a copy of the job database made outside.

        SQLite resolves the ``/proc/<pid>/root`` link to this process's own root, so it
        cannot open the database in place. No prepflow process runs while this is called.
        """
        copy_to.mkdir(parents=True, exist_ok=True)
        for name in ("jobs.db", "jobs.db-wal"):
            source = self.seen(self.home / name)
            if source.exists():
                shutil.copyfile(source, copy_to / name)
        return job_records(copy_to)

    def free_bytes(self) -> int:
        stats = os.statvfs(self.seen(self.mount_point))
        return stats.f_bavail * stats.f_frsize

    def leave_free(self, free: int) -> None:
        """Write a ballast file so that about ``free`` bytes stay free on the disk."""
        ballast = self.seen(self.mount_point / "ballast")
        size = self.free_bytes() - free
        assert size > 0, f"the disk has {self.free_bytes()} bytes free, fewer than {free}"
        with ballast.open("wb") as handle:
            chunk = b"\0" * (1 << 20)
            while size > 0:
                size -= handle.write(chunk[: min(size, len(chunk))])


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[SmallDisk]:
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    script = f'mount -t tmpfs -o size={DISK_MB}m prepflow-test "$0" && echo mounted && exec cat'
    holder = subprocess.Popen(
        [*namespace_command(), "sh", "-c", script, str(mount_point)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        line = holder.stdout.readline()
        if line.strip() != "mounted":
            _, stderr = holder.communicate(timeout=30)
            pytest.fail(f"could not mount the tmpfs: {stderr}")
        yield SmallDisk(mount_point, holder)
    finally:
        # Closing cat's input ends the last process of the namespace, which unmounts the tmpfs.
        holder.communicate(timeout=30)


def write_rows(path: Path, first: int) -> None:
    """Write ROWS rows of fixed width, so two files from different ``first`` have one size."""
    lines = ["id,name,amount\n"]
    lines += [f"{n:07d},name-{n:07d},{n * 0.25:010.2f}\n" for n in range(first, first + ROWS)]
    path.write_text("".join(lines))


def hashes(root: Path) -> dict[str, str]:
    """Return the SHA-256 of every file below ``root``, keyed by its path below ``root``."""
    return {
        path.relative_to(root).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def folder_size(root: Path) -> int:
    return sum(path.stat().st_size for path in root.rglob("*") if path.is_file())


@requires_mount_namespace
@pytest.mark.timeout(2 * COMMAND_TIMEOUT_SECONDS)
@pytest.mark.parametrize(
    ("where", "reason_starts"),
    [
        # The step's output and the runner's own files (status, log) share the job folder,
        # so either may meet the full disk first: the step fails, or the runner does.
        (
            "while the job writes",
            (
                "AlgorithmError: exit code: 1.",
                "ClientError: No space left on device while writing the job folder",
            ),
        ),
        (
            "while publishing the output",
            (f"ClientError: No space left on device while writing s3://{PROCESSED}/output/",),
        ),
    ],
)
def test_disk_full_fails_job_and_keeps_data(small_disk, tmp_path, where, reason_starts, figures):
    earlier = tmp_path / "earlier.csv"
    write_rows(earlier, first=0)
    first = small_disk.prepflow("run", "--json", str(earlier))
    assert first.returncode == 0, first.stdout + first.stderr
    (earlier_job,) = small_disk.job_records(tmp_path / "first-read")
    assert earlier_job.status == JobStatus.COMPLETED

    buckets = small_disk.seen(small_disk.home / "buckets")
    raw = buckets / RAW / "input"
    write_rows(raw / "later.csv", first=ROWS)
    input_size = (raw / "later.csv").stat().st_size
    # The later output has the earlier one's size: same rows, same widths.
    output_size = folder_size(buckets / PROCESSED / "output" / earlier_job.job_name)
    hashes_before = {
        "raw": hashes(buckets / RAW),
        "processed": hashes(buckets / PROCESSED),
        "reports": hashes(buckets / LOGS / "reports"),
    }
    # Room for the staged input, and half of the output (while the job writes), or the
    # whole output and half of the copy that publishes it.
    if where == "while the job writes":
        small_disk.leave_free(input_size + output_size // 2)
    else:
        small_disk.leave_free(input_size + output_size + output_size // 2)

    later = small_disk.prepflow("watch", "--once", "--settle", "0")

    assert later.returncode == 1, later.stderr
    records = small_disk.job_records(tmp_path / "second-read")
    (failed,) = [r for r in records if r.job_name != earlier_job.job_name]
    assert failed.status == JobStatus.FAILED, later.stderr
    assert failed.inputs == [f"s3://{RAW}/input/later.csv"]
    assert failed.ended_at is not None
    reason = failed.failure_reason or ""
    assert reason.startswith(reason_starts), reason
    assert "No space left on device while writing " in reason, reason
    assert "free space on that file system" in reason, reason
    # Disk full is not one of the failures that a new attempt is started for.
    assert [r.job_name for r in records if r.retry_of] == []
    assert hashes(buckets / RAW) == hashes_before["raw"]
    assert hashes(buckets / PROCESSED) == hashes_before["processed"]
    assert hashes(buckets / LOGS / "reports") == hashes_before["reports"]
    assert list(small_disk.seen(small_disk.home / "tmp").iterdir()) == []

    figures.record(
        f"disk full {where} ({input_size / 1e6:.1f} MB input, {DISK_MB} MiB tmpfs)",
        1,
        "job Failed naming no space left; raw data and the earlier output hash-identical; "
        "no output of the failed job published",
    )


@pytest.mark.parametrize(
    "error",
    [
        OSError(errno.ENOSPC, "No space left on device"),
        # polars raises OSError without errno, with Rust's text.
        OSError("No space left on device (os error 28)"),
    ],
)
def test_no_space_message_names_fix(error):
    assert is_no_space(error)
    assert describe_write_error(error, "/data/out.csv") == (
        "No space left on device while writing /data/out.csv: free space on that file "
        "system (or raise the quota), then upload the file again"
    )


def test_other_write_error_not_no_space():
    error = OSError(errno.EACCES, "Permission denied")

    assert not is_no_space(error)
    assert describe_write_error(error, "/data/out.csv") == (
        "cannot write /data/out.csv: Permission denied"
    )
