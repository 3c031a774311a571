"""The supervisor of one local processing job: ``python -m prepflow.jobs.supervisor JOB_FOLDER``.

It does what SageMaker does around a processing container. In order: wait for a free slot,
stage inputs under their LocalPath, and write ``/opt/ml/config``. Then run the container
command with the job's Environment, stream its output to the logs bucket and enforce
MaxRuntimeInSeconds. Last, upload outputs after a successful exit and record Completed,
Failed or Stopped.

A job with InstanceCount N runs N hosts, ``algo-1`` to ``algo-N``, as N processes at once,
each with its own ``/opt/ml`` folder, resourceconfig.json, log and share of every
ShardedByS3Key input (``prepflow.jobs.sharding``). The job holds one slot for all of them.
It completes when every host exits 0; the first host to fail fails the job, and the others
are stopped, as on SageMaker.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

from prepflow.errors import (
    DatabaseBusyError,
    PrepflowError,
    StorageError,
    describe_write_error,
    is_no_space,
)
from prepflow.jobs import hosts, isolation, sharding, slots, staging
from prepflow.jobs.local import JobFolder, RunnerConfig, start_ticks
from prepflow.jobs.spec import MAX_REASON_LENGTH, JobStatus, ProcessingJobSpec
from prepflow.jobstore.base import JobStore
from prepflow.jobstore.sqlite import SqliteJobStore
from prepflow.storage.base import parse_s3_uri
from prepflow.storage.local import LocalObjectStore

logger = logging.getLogger("prepflow.jobs.supervisor")

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
        self.store = LocalObjectStore(
            Path(self.config.home),
            region=self.config.region,
            lock_wait_seconds=self.config.db_lock_wait_seconds,
        )
        self.stop_requested = threading.Event()
        count = self.spec.processing_resources.cluster_config.instance_count
        self.roots = {host: folder.host_root(host) for host in sharding.host_names(count)}
        self.first_host = next(iter(self.roots))
        # The host whose stderr goes into the record's log tail: the failed one, if any.
        self.reported: hosts.HostRun | None = None
        # Row counts summed over the hosts' reports, for a job on several hosts.
        self.merged_counts: dict[str, int | None] | None = None
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
            ) as slot:
                # The slot and the times it was held are this job's share of the limit on
                # running jobs, kept so the limit can be checked afterwards.
                self.folder.write_status(slot=slot, slot_acquired_time=_now())
                try:
                    outcome = self._run_in_slot()
                finally:
                    # The job's copies go before anything else is written: on a disk that the
                    # job filled, removing them frees the space to record its end.
                    self._remove_staged_files()
                    self.folder.write_status(slot_released_time=_now())
        except slots.Cancelled:
            outcome = Outcome(JobStatus.STOPPED, "Stopped before it started: stop requested")
        except Exception as error:  # the supervisor must record every failure it can
            logger.exception("job %s: runner failed", self.spec.name)
            outcome = Outcome(JobStatus.FAILED, _cut(_runner_failure_reason(error)))
        self._remove_staged_files()
        self._finish(outcome)

    def _run_in_slot(self) -> Outcome:
        self._record(JobStatus.IN_PROGRESS, start_time=_now(), waiting_reason=None)
        try:
            commands = self._prepare_hosts()
        except PrepflowError as error:
            return Outcome(JobStatus.FAILED, _cut(f"ClientError: {error}"))
        outcome = self._execute(commands)
        if outcome.status == JobStatus.COMPLETED:
            try:
                warnings = staging.upload_outputs(self.store, self.spec, self.roots)
                if len(self.roots) > 1:
                    self.merged_counts = sharding.merged_counts(self.store, self.spec.to_request())
            except PrepflowError as error:
                return Outcome(JobStatus.FAILED, _cut(f"ClientError: {error}"))
            self._log_to_job(warnings)
        return outcome

    def _prepare_hosts(self) -> dict[str, isolation.Command]:
        """Stage each host's inputs and config; return each host's command."""
        for index, root in enumerate(self.roots.values()):
            staging.stage_inputs(
                self.store, self.spec, root, host_index=index, host_count=len(self.roots)
            )
        self._check_inputs_unchanged()
        commands = {}
        for host, root in self.roots.items():
            staging.write_config(self.spec, root, host=host, hosts=list(self.roots))
            commands[host] = isolation.build_command(
                self.spec, root, mode=self.config.isolation, hidden=(Path(self.config.home),)
            )
        return commands

    def _execute(self, commands: dict[str, isolation.Command]) -> Outcome:
        namespaced = any(command.namespaced for command in commands.values())
        with contextlib.ExitStack() as logs:
            runs: list[hosts.HostRun] = []
            for host, command in commands.items():
                logger.info("job %s: running %s on %s", self.spec.name, command.argv, host)
                log = logs.enter_context(
                    self.store.open_log(self.config.logs_bucket, self._log_key(host))
                )
                try:
                    runs.append(hosts.start(host, self.roots[host], command, log))
                except OSError as error:
                    self._kill(runs, namespaced)
                    reason = f"cannot start {command.argv[0]!r}: {error.strerror}"
                    if len(commands) > 1:
                        reason = f"host {host}: {reason}"
                    return Outcome(JobStatus.FAILED, f"AlgorithmError: {reason}")
                # The process groups outlive a killed supervisor only in 'none' mode;
                # recorded so the next reader of the job can end them.
                self.folder.write_status(process_groups=[run.process.pid for run in runs])
            stop_reason, failed = self._wait(runs, namespaced)
            self._end_leftovers(runs)
        self.reported = failed or runs[0]
        exit_message = staging.read_exit_message(self.reported.root)
        if stop_reason is not None:
            return Outcome(JobStatus.STOPPED, stop_reason, exit_message)
        if failed is not None:
            reason = failed.algorithm_error(name_host=len(runs) > 1)
            return Outcome(JobStatus.FAILED, reason, exit_message)
        return Outcome(JobStatus.COMPLETED, None, exit_message)

    def _wait(
        self, runs: list[hosts.HostRun], namespaced: bool
    ) -> tuple[str | None, hosts.HostRun | None]:
        """Wait until every host exits, one fails, the deadline passes or a stop is requested.

        Returns the stop reason (or None) and the first host that failed (or None). A failed
        host, a timeout or a stop ends the hosts still running.
        """
        limit = self.spec.stopping_condition.max_runtime_in_seconds
        deadline = time.monotonic() + limit
        # A thread per host blocks in wait(), so each end is seen at once and in order,
        # while this loop checks the deadline and stop requests every POLL_SECONDS.
        exited: list[hosts.HostRun] = []
        changed = threading.Event()
        lock = threading.Lock()

        def reap(run: hosts.HostRun) -> None:
            run.process.wait()
            with lock:
                exited.append(run)
            changed.set()

        for run in runs:
            threading.Thread(target=reap, args=(run,), daemon=True).start()
        while True:
            with lock:
                ended = list(exited)
            failed = next((run for run in ended if run.process.returncode != 0), None)
            if failed is not None:
                if len(runs) > 1:
                    logger.warning(
                        "job %s: host %s failed; stopping the others", self.spec.name, failed.host
                    )
                self._kill(runs, namespaced)
                return None, failed
            if len(ended) == len(runs):
                return None, None
            if self.stop_requested.is_set() or self.folder.stop_file.exists():
                reason = "Stopped: stop requested by the user"
            elif time.monotonic() >= deadline:
                reason = f"Stopped: MaxRuntimeInSeconds ({limit} s) exceeded"
            else:
                changed.wait(POLL_SECONDS)
                changed.clear()
                continue
            self._record(JobStatus.STOPPING)
            self._kill(runs, namespaced)
            logger.warning("job %s: %s", self.spec.name, reason)
            return reason, None

    def _kill(self, runs: list[hosts.HostRun], namespaced: bool) -> None:
        """End every host still running: SIGTERM to all at once, SIGKILL after the grace."""
        running = [run for run in runs if run.process.poll() is None]
        threads = [
            threading.Thread(
                target=isolation.kill_tree,
                args=(run.process,),
                kwargs={"namespaced": namespaced, "grace_seconds": self.config.stop_grace_seconds},
            )
            for run in running
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def _end_leftovers(self, runs: list[hosts.HostRun]) -> None:
        """End what the commands left running, as a container's end does on SageMaker.

        In namespace mode the namespace is gone already. Otherwise each process group is
        killed, and a process that left it (setsid) may still hold the output pipes: the
        job does not wait for it.
        """
        for run in runs:
            isolation.kill_group(run.process.pid)
        deadline = time.monotonic() + PUMP_DRAIN_SECONDS
        for run in runs:
            for pump in run.pumps:
                pump.join(timeout=max(deadline - time.monotonic(), 0))
            if any(pump.is_alive() for pump in run.pumps):
                self._log_to_job(
                    [
                        "processes the command detached still hold its output; they are not "
                        "waited for and their further output is not logged"
                    ],
                    host=run.host,
                )

    def _stderr_lines(self) -> str:
        return self.reported.stderr_lines() if self.reported is not None else ""

    def _log_key(self, host: str) -> str:
        return f"logs/{self.spec.name}/{host}.log"

    def _log_uri(self) -> str:
        """Return the log of a job on one host, or the folder of every host's log."""
        if len(self.roots) == 1:
            return f"s3://{self.config.logs_bucket}/{self._log_key(self.first_host)}"
        return f"s3://{self.config.logs_bucket}/logs/{self.spec.name}/"

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

    def _log_to_job(self, lines: list[str], host: str | None = None) -> None:
        """Append prepflow's own remarks to a host's log (the first), where its user looks."""
        if not lines:
            return
        key = self._log_key(host or self.first_host)
        with self.store.open_log(self.config.logs_bucket, key) as log:
            for line in lines:
                logger.warning("job %s: %s", self.spec.name, line)
                log.write(f"[prepflow] {line}\n".encode())

    def _remove_staged_files(self) -> None:
        """Delete the job's copies of its inputs and outputs, as an instance's disk goes away.

        The config files and the exit message stay for inspection.
        """
        for root in self.roots.values():
            for folder in (root / "processing", root.parent / "overlay"):
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
        try:
            if outcome.status == JobStatus.STOPPED:
                self._record(JobStatus.STOPPING)
            self._record(outcome.status, **fields)
        except DatabaseBusyError as error:
            # status.json contains the end already, and the next reader of the job (prepflow
            # jobs, wait, watch) applies it to the record, so the end is late, not lost.
            self.folder.write_status(status=outcome.status, **fields)
            logger.error(
                "job %s ended %s, but its record in the job store was not updated: %s",
                self.spec.name,
                outcome.status,
                error,
            )
            return
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
            extra["log_uri"] = self._log_uri()
        if status == JobStatus.COMPLETED and self.merged_counts is not None:
            # The ExitMessage is one host's; the record counts every host's rows.
            extra.update(self.merged_counts)
        jobs.apply_description(self.folder.describe(), **extra)

    def _job_store(self) -> JobStore | None:
        if self.config.job_store_db is None:
            return None
        if self._jobs is None:
            self._jobs = SqliteJobStore(
                Path(self.config.job_store_db), lock_wait_seconds=self.config.db_lock_wait_seconds
            )
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


def _runner_failure_reason(error: Exception) -> str:
    """Return the failure reason of an error the supervisor did not expect.

    A full disk is a state of the machine rather than a fault of the runner, so its reason
    names the file and what to free. It does not start with "InternalServerError", because
    ``watch`` would then start the job again on the same full disk.
    """
    if isinstance(error, OSError) and is_no_space(error):
        return "ClientError: " + describe_write_error(error, error.filename or "the job folder")
    return f"InternalServerError: {error}"


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
