"""The local runner: SageMaker Processing's container contract, run as processes on this machine.

``submit`` claims the job name by creating ``<home>/jobs/<job-name>/``. ``mkdir`` is atomic,
so two processes can never both start a job of one name. It then starts a detached
supervisor process (``prepflow.jobs.supervisor``), which stages inputs, runs the container
command, enforces ``MaxRuntimeInSeconds``, uploads outputs and records the result. The
supervisor outlives the command that submitted the job, as a SageMaker job outlives the API
call that created it.

``status.json`` in the job folder is this backend's DescribeProcessingJob. The supervisor
writes it at every status change and then applies the change to the job store. That is the
local twin of the EventBridge state-change rule that feeds the job store on AWS.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prepflow.errors import JobExistsError, JobNotFoundError
from prepflow.jobs import isolation
from prepflow.jobs.backend import JobBackend
from prepflow.jobs.spec import (
    JobDescription,
    JobStatus,
    ProcessingJobSpec,
    validate_request,
)
from prepflow.local.sqlite import DEFAULT_LOCK_WAIT_SECONDS

logger = logging.getLogger(__name__)

# How long a stopped or timed-out job gets between SIGTERM and SIGKILL. SageMaker documents
# no grace period for processing jobs; a few seconds lets a script flush its logs.
STOP_GRACE_SECONDS = 5.0
# A supervisor records its pid within a fraction of a second of its start. One that has not
# done so after this long never started, because its submitter died before starting it.
RUNNER_START_SECONDS = 60.0


@dataclass(frozen=True)
class RunnerConfig:
    """Settings a supervisor process needs besides the job request; kept in ``runner.json``."""

    home: str
    logs_bucket: str
    job_store_db: str | None
    isolation: str
    max_concurrent_jobs: int
    region: str
    stop_grace_seconds: float = STOP_GRACE_SECONDS
    # How long the supervisor's writes to jobs.db and store.db wait for another process's lock.
    db_lock_wait_seconds: float = DEFAULT_LOCK_WAIT_SECONDS


class JobFolder:
    """The files of one local job under ``<home>/jobs/<job-name>/``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.name = path.name
        self.request_file = path / "request.json"
        self.config_file = path / "runner.json"
        self.status_file = path / "status.json"
        self.stop_file = path / "stop-requested"
        self.runner_log = path / "runner.log"

    def host_root(self, host: str) -> Path:
        """Return the host folder that appears as ``/opt/ml`` inside the job."""
        return self.path / "hosts" / host / "ml"

    def read_request(self) -> ProcessingJobSpec:
        return ProcessingJobSpec.from_request(json.loads(self.request_file.read_text()))

    def read_config(self) -> RunnerConfig:
        return RunnerConfig(**json.loads(self.config_file.read_text()))

    def read_status(self) -> dict[str, Any]:
        return dict(json.loads(self.status_file.read_text()))

    def write_status(self, **changes: Any) -> dict[str, Any]:
        """Merge ``changes`` into status.json; the rename makes the write atomic."""
        status = self.read_status() if self.status_file.exists() else {}
        status.update({k: _jsonable(v) for k, v in changes.items()})
        temporary = self.status_file.with_suffix(".tmp")
        temporary.write_text(json.dumps(status, indent=1))
        os.replace(temporary, self.status_file)
        return status

    def describe(self) -> JobDescription:
        status = self.read_status()
        return JobDescription(
            job_name=self.name,
            status=JobStatus(status["status"]),
            failure_reason=status.get("failure_reason"),
            exit_message=status.get("exit_message"),
            creation_time=status.get("creation_time"),
            start_time=status.get("start_time"),
            end_time=status.get("end_time"),
        )


class LocalRunner(JobBackend):
    """Runs each job in its own supervisor process; see the module docstring."""

    def __init__(self, config: RunnerConfig) -> None:
        self.config = config
        self.jobs_root = Path(config.home) / "jobs"
        self.jobs_root.mkdir(parents=True, exist_ok=True)

    def submit(self, spec: ProcessingJobSpec) -> None:
        validate_request(spec)
        folder = self._claim(spec)
        # From here on only the supervisor writes status.json, so no update of it is lost.
        process = self._start_supervisor(folder)
        logger.info("started job %s (supervisor pid %d)", spec.processing_job_name, process.pid)

    def describe(self, job_name: str) -> JobDescription:
        folder = self._folder(job_name)
        if not folder.status_file.exists():
            # Claimed a moment ago; the submitting process is still writing the first status.
            return JobDescription(job_name=job_name, status=JobStatus.IN_PROGRESS)
        self._fail_if_supervisor_died(folder)
        return folder.describe()

    def stop(self, job_name: str) -> None:
        folder = self._folder(job_name)
        status = folder.read_status()
        if JobStatus(status["status"]).is_terminal:
            logger.info("job %s already ended as %s; nothing to stop", job_name, status["status"])
            return
        folder.stop_file.touch()
        pid = status.get("supervisor_pid")
        if pid and _alive(pid, status.get("supervisor_start")):
            os.kill(pid, signal.SIGTERM)
        logger.info("stop requested for job %s", job_name)

    def is_running(self, job_name: str) -> bool:
        """Return True while the job's supervisor process is alive."""
        status = self._folder(job_name).read_status()
        pid = status.get("supervisor_pid")
        return pid is not None and _alive(int(pid), status.get("supervisor_start"))

    def _claim(self, spec: ProcessingJobSpec) -> JobFolder:
        """Create the job's folder, complete, under its name; raise JobExistsError if taken.

        The folder is filled under a temporary name and renamed into place, so a job folder
        never exists without its request and status, even if this process dies midway. The
        rename fails when a job of that name exists, which makes it the name check too.
        """
        draft = Path(tempfile.mkdtemp(dir=self.jobs_root, prefix=".claim-"))
        folder = JobFolder(draft)
        folder.request_file.write_text(json.dumps(spec.to_request(), indent=1))
        folder.config_file.write_text(json.dumps(asdict(self.config), indent=1))
        folder.write_status(status=JobStatus.IN_PROGRESS, creation_time=_now())
        path = self.jobs_root / spec.processing_job_name
        try:
            draft.rename(path)
        except OSError as error:
            shutil.rmtree(draft, ignore_errors=True)
            if path.exists():
                raise JobExistsError(spec.processing_job_name) from error
            raise
        return JobFolder(path)

    def _start_supervisor(self, folder: JobFolder) -> subprocess.Popen[bytes]:
        with folder.runner_log.open("ab") as log:
            return subprocess.Popen(
                [sys.executable, "-m", "prepflow.jobs.supervisor", str(folder.path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Its own session: a Ctrl-C in the terminal that submitted the job does not
                # reach it, and the job keeps running, as it would on SageMaker.
                start_new_session=True,
                close_fds=True,
            )

    def _folder(self, job_name: str) -> JobFolder:
        path = self.jobs_root / job_name
        if not job_name or "/" in job_name or not path.is_dir():
            raise JobNotFoundError(job_name)
        return JobFolder(path)

    def _fail_if_supervisor_died(self, folder: JobFolder) -> None:
        status = folder.read_status()
        if JobStatus(status["status"]).is_terminal:
            return
        if "supervisor_pid" not in status:
            self._fail_if_never_started(folder, status)
            return
        pid = int(status["supervisor_pid"])
        if _alive(pid, status.get("supervisor_start")):
            return
        # Re-read: the supervisor may have written its last status just before exiting.
        status = folder.read_status()
        if JobStatus(status["status"]).is_terminal:
            return
        reason = (
            f"InternalServerError: the local runner process (pid {pid}) ended without "
            "recording a result: it was killed or crashed. 'prepflow watch' starts a new "
            "job for the same file while PREPFLOW_JOB_ATTEMPTS allows; otherwise upload the "
            f"file again. The runner's log is {folder.runner_log}"
        )
        logger.error("job %s: %s", folder.name, reason)
        # One process group per host; "process_group" is what older supervisors wrote.
        groups = status.get("process_groups", [])
        if "process_group" in status:
            groups = [*groups, status["process_group"]]
        for group in groups:
            isolation.kill_group(int(group))
        folder.write_status(status=JobStatus.FAILED, failure_reason=reason, end_time=_now())

    def _fail_if_never_started(self, folder: JobFolder, status: dict[str, Any]) -> None:
        created = datetime.fromisoformat(status["creation_time"])
        if (_now() - created).total_seconds() < RUNNER_START_SECONDS:
            return
        reason = (
            f"InternalServerError: the local runner for this job never started within "
            f"{RUNNER_START_SECONDS:.0f} s of its submission; see {folder.runner_log}"
        )
        logger.error("job %s: %s", folder.name, reason)
        folder.write_status(status=JobStatus.FAILED, failure_reason=reason, end_time=_now())


def _now() -> datetime:
    return datetime.now(UTC)


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def start_ticks(pid: int) -> int | None:
    """Return the process start time from /proc, to tell a live pid from a reused one."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[19])


def _alive(pid: int, recorded_ticks: int | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if _is_zombie(pid):
        return False
    return recorded_ticks is None or start_ticks(pid) in (None, recorded_ticks)


def _is_zombie(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state == "Z"
