"""The supervisor of one local processing job: ``python -m prepflow.jobs.supervisor JOB_FOLDER``.

It does what SageMaker does around a processing container. In order: wait for a free slot,
stage inputs under their LocalPath, and write ``/opt/ml/config``. Then run the container
command with the job's Environment, stream its output to the logs bucket and enforce
MaxRuntimeInSeconds. Last, upload outputs after a successful exit and record Completed,
Failed or Stopped.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import BinaryIO

from prepflow.errors import PrepflowError, StorageError
from prepflow.jobs import isolation, slots, staging
from prepflow.jobs.local import JobFolder, RunnerConfig, start_ticks
from prepflow.jobs.spec import MAX_REASON_LENGTH, JobStatus, ProcessingJobSpec
from prepflow.jobstore.base import JobStore
from prepflow.jobstore.sqlite import SqliteJobStore
from prepflow.storage.base import parse_s3_uri
from prepflow.storage.local import LocalObjectStore

logger = logging.getLogger("prepflow.jobs.supervisor")

HOST = "algo-1"
STDERR_TAIL_LINES = 20
# Enough for 20 long lines; the failure reason keeps at most 1 KB of it anyway.
STDERR_TAIL_BYTES = 16_384
PUMP_CHUNK_BYTES = 65_536
# After the command exits, how long its output may still drain into the log.
PUMP_DRAIN_SECONDS = 2.0
POLL_SECONDS = 0.1


@dataclass
class Outcome:
    status: JobStatus
    failure_reason: str | None = None
    exit_message: str | None = None


class Supervisor:
    def __init__(self, folder: JobFolder) -> None:
        self.folder = folder
        self.spec: ProcessingJobSpec = folder.read_request()
        self.config: RunnerConfig = folder.read_config()
        self.store = LocalObjectStore(Path(self.config.home), region=self.config.region)
        self.stop_requested = threading.Event()
        self.stderr_tail = bytearray()
        self.log_key = f"logs/{self.spec.name}/{HOST}.log"
        self._jobs: SqliteJobStore | None = None

    def run(self) -> None:
        signal.signal(signal.SIGTERM, self._on_stop_signal)
        pid = os.getpid()
        self.folder.write_status(supervisor_pid=pid, supervisor_start=start_ticks(pid))
        try:
            with slots.acquire(
                Path(self.config.home) / "slots",
                self.config.max_concurrent_jobs,
                on_wait=self._on_waiting,
                cancelled=self._stop_was_requested,
            ):
                outcome = self._run_in_slot()
        except slots.Cancelled:
            outcome = Outcome(JobStatus.STOPPED, "Stopped before it started: stop requested")
        except Exception as error:  # the supervisor must record every failure it can
            logger.exception("job %s: runner failed", self.spec.name)
            outcome = Outcome(JobStatus.FAILED, _cut(f"InternalServerError: {error}"))
        self._remove_staged_files()
        self._finish(outcome)

    def _run_in_slot(self) -> Outcome:
        self._record(JobStatus.IN_PROGRESS, start_time=_now(), waiting_reason=None)
        root = self.folder.host_root(HOST)
        try:
            staging.stage_inputs(self.store, self.spec, root)
            self._check_inputs_unchanged()
            staging.write_config(self.spec, root, host=HOST, hosts=[HOST])
            command = isolation.build_command(
                self.spec, root, mode=self.config.isolation, hidden=(Path(self.config.home),)
            )
        except PrepflowError as error:
            return Outcome(JobStatus.FAILED, _cut(f"ClientError: {error}"))
        outcome = self._execute(command, root)
        if outcome.status == JobStatus.COMPLETED:
            try:
                warnings = staging.upload_outputs(self.store, self.spec, root)
            except PrepflowError as error:
                return Outcome(JobStatus.FAILED, _cut(f"ClientError: {error}"))
            self._log_to_job(warnings)
        return outcome

    def _execute(self, command: isolation.Command, root: Path) -> Outcome:
        logger.info("job %s: running %s", self.spec.name, command.argv)
        with self.store.open_log(self.config.logs_bucket, self.log_key) as log:
            try:
                process = subprocess.Popen(
                    command.argv,
                    env=command.env,
                    cwd=command.cwd,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    start_new_session=True,
                    preexec_fn=isolation.die_with_parent,
                )
            except OSError as error:
                reason = f"AlgorithmError: cannot start {command.argv[0]!r}: {error.strerror}"
                return Outcome(JobStatus.FAILED, reason)
            # The process group outlives a killed supervisor only in 'none' mode; recorded
            # so the next reader of the job can end it.
            self.folder.write_status(process_group=process.pid)
            pumps = self._start_pumps(process, log)
            stop_reason = self._wait(process, command.namespaced)
            self._end_leftovers(process, pumps)
        exit_message = staging.read_exit_message(root)
        if stop_reason is not None:
            return Outcome(JobStatus.STOPPED, stop_reason, exit_message)
        if process.returncode != 0:
            return Outcome(
                JobStatus.FAILED, self._algorithm_error(process.returncode), exit_message
            )
        return Outcome(JobStatus.COMPLETED, None, exit_message)

    def _wait(self, process: subprocess.Popen[bytes], namespaced: bool) -> str | None:
        """Wait for the process. On timeout or a stop request, kill its tree; return the reason."""
        limit = self.spec.stopping_condition.max_runtime_in_seconds
        deadline = time.monotonic() + limit
        # A thread blocks in wait() so the end of the process is seen at once, while this
        # loop checks the deadline and stop requests every POLL_SECONDS.
        exited = threading.Event()

        def reap() -> None:
            process.wait()
            exited.set()

        threading.Thread(target=reap, daemon=True).start()
        while not exited.wait(POLL_SECONDS):
            if self.stop_requested.is_set() or self.folder.stop_file.exists():
                reason = "Stopped: stop requested by the user"
            elif time.monotonic() >= deadline:
                reason = f"Stopped: MaxRuntimeInSeconds ({limit} s) exceeded"
            else:
                continue
            self._record(JobStatus.STOPPING)
            isolation.kill_tree(
                process, namespaced=namespaced, grace_seconds=self.config.stop_grace_seconds
            )
            logger.warning("job %s: %s", self.spec.name, reason)
            return reason
        return None

    def _end_leftovers(
        self, process: subprocess.Popen[bytes], pumps: list[threading.Thread]
    ) -> None:
        """End what the command left running, as a container's end does on SageMaker.

        In namespace mode the namespace is gone already. Otherwise the process group is
        killed, and a process that left it (setsid) may still hold the output pipes: the
        job does not wait for it.
        """
        isolation.kill_group(process.pid)
        deadline = time.monotonic() + PUMP_DRAIN_SECONDS
        for pump in pumps:
            pump.join(timeout=max(deadline - time.monotonic(), 0))
        if any(pump.is_alive() for pump in pumps):
            self._log_to_job(
                [
                    "processes the command detached still hold its output; they are not waited "
                    "for and their further output is not logged"
                ]
            )

    def _start_pumps(
        self, process: subprocess.Popen[bytes], log: BinaryIO
    ) -> list[threading.Thread]:
        """Copy stdout and stderr to the job log as they come, keeping the end of stderr.

        Reads in chunks rather than lines, so a single huge line never has to fit in memory.
        """
        lock = threading.Lock()

        def pump(stream: BinaryIO, keep_tail: bool) -> None:
            while chunk := stream.read1(PUMP_CHUNK_BYTES):  # type: ignore[attr-defined]
                with lock:
                    log.write(chunk)
                    log.flush()
                if keep_tail:
                    self.stderr_tail.extend(chunk)
                    del self.stderr_tail[:-STDERR_TAIL_BYTES]

        assert process.stdout is not None and process.stderr is not None
        threads = [
            threading.Thread(target=pump, args=(process.stdout, False), daemon=True),
            threading.Thread(target=pump, args=(process.stderr, True), daemon=True),
        ]
        for thread in threads:
            thread.start()
        return threads

    def _stderr_lines(self) -> str:
        text = self.stderr_tail.decode("utf-8", "replace")
        lines = text.splitlines()[-STDERR_TAIL_LINES:]
        return "\n".join(line.rstrip() for line in lines).strip()

    def _algorithm_error(self, returncode: int) -> str:
        if returncode < 0:
            name = signal.Signals(-returncode).name
            cause = f"killed by signal {name} (exit code {128 - returncode})"
        else:
            cause = f"exit code: {returncode}"
        tail = self._stderr_lines()
        head = f"AlgorithmError: {cause}. Last lines of stderr:\n"
        if not tail:
            return f"AlgorithmError: {cause}. The process wrote nothing to stderr."
        room = MAX_REASON_LENGTH - len(head)
        return head + (tail if len(tail) <= room else "..." + tail[-(room - 3) :])

    def _check_inputs_unchanged(self) -> None:
        """Raise StorageError if an input was replaced after the event that started the job.

        Without this, two uploads of one key in quick succession would both be processed
        from the second upload's content. The newer upload has a job of its own.
        """
        jobs = self._job_store()
        record = jobs.find(self.spec.name) if jobs is not None else None
        for uri, expected in (record.input_etags if record else {}).items():
            current = self.store.head_object(*parse_s3_uri(uri)).etag
            if current != expected:
                raise StorageError(
                    f"{uri} changed after the upload that started this job (ETag {expected}, "
                    f"now {current}); a newer upload replaced it and is processed by its own job"
                )

    def _log_to_job(self, lines: list[str]) -> None:
        """Append prepflow's own remarks to the job's log, where its user looks."""
        if not lines:
            return
        with self.store.open_log(self.config.logs_bucket, self.log_key) as log:
            for line in lines:
                logger.warning("job %s: %s", self.spec.name, line)
                log.write(f"[prepflow] {line}\n".encode())

    def _remove_staged_files(self) -> None:
        """Delete the job's copies of its inputs and outputs, as an instance's disk goes away.

        The config files and the exit message stay for inspection.
        """
        host = self.folder.host_root(HOST)
        for folder in (host / "processing", host.parent / "overlay"):
            if not folder.exists():
                continue
            try:
                shutil.rmtree(folder)
            except OSError as error:
                logger.warning("job %s: cannot remove %s: %s", self.spec.name, folder, error)

    def _finish(self, outcome: Outcome) -> None:
        fields: dict[str, object] = {
            "failure_reason": outcome.failure_reason,
            "exit_message": outcome.exit_message,
            "end_time": _now(),
        }
        if outcome.status == JobStatus.STOPPED:
            self._record(JobStatus.STOPPING)
        self._record(outcome.status, **fields)
        logger.info(
            "job %s ended: %s %s", self.spec.name, outcome.status, outcome.failure_reason or ""
        )

    def _record(self, status: JobStatus, **fields: object) -> None:
        """Write status.json, then apply the change to the job store (when one is configured)."""
        self.folder.write_status(status=status, **fields)
        jobs = self._job_store()
        if jobs is None:
            return
        if status == JobStatus.IN_PROGRESS:
            changes = {"waiting_reason": fields.get("waiting_reason")}
            if "start_time" in fields:
                changes["started_at"] = fields["start_time"]
            jobs.update(self.spec.name, **changes)
            return
        extra: dict[str, object] = {}
        if status.is_terminal:
            extra["log_tail"] = self._stderr_lines()[-MAX_REASON_LENGTH:] or None
            extra["log_uri"] = f"s3://{self.config.logs_bucket}/{self.log_key}"
        jobs.apply_description(self.folder.describe(), **extra)

    def _job_store(self) -> JobStore | None:
        if self.config.job_store_db is None:
            return None
        if self._jobs is None:
            self._jobs = SqliteJobStore(Path(self.config.job_store_db))
        if self._jobs.find(self.spec.name) is None:
            logger.warning(
                "job %s has no record in the job store; its status is kept in %s only",
                self.spec.name,
                self.folder.status_file,
            )
            return None
        return self._jobs

    def _on_waiting(self, message: str) -> None:
        self._record(JobStatus.IN_PROGRESS, waiting_reason=message)

    def _stop_was_requested(self) -> bool:
        return self.stop_requested.is_set() or self.folder.stop_file.exists()

    def _on_stop_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stop_requested.set()


def _cut(reason: str) -> str:
    return reason if len(reason) <= MAX_REASON_LENGTH else reason[: MAX_REASON_LENGTH - 3] + "..."


def _now() -> datetime:
    return datetime.now(UTC)


def main(argv: list[str]) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if len(argv) != 1:
        print("usage: python -m prepflow.jobs.supervisor JOB_FOLDER", file=sys.stderr)
        return 2
    Supervisor(JobFolder(Path(argv[0]))).run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
