"""The local mode, wired: folder store, SQLite job store, local runner and the orchestrator.

Everything lives under ``settings.home``; several prepflow processes (``run``, ``watch``) may
share one home at once.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from prepflow.errors import ConfigurationError, JobStoreError
from prepflow.jobs.local import LocalRunner, RunnerConfig
from prepflow.jobs.template import StepTemplate
from prepflow.jobstore.base import JobRecord, output_files
from prepflow.jobstore.sqlite import SqliteJobStore
from prepflow.orchestrator import Orchestrator
from prepflow.settings import Settings
from prepflow.storage.base import parse_s3_uri
from prepflow.storage.local import LocalObjectStore

logger = logging.getLogger(__name__)

# How long ``wait`` keeps polling while the job database cannot be read.
READ_RETRY_SECONDS = 60.0


@dataclass
class LocalApp:
    settings: Settings
    store: LocalObjectStore
    jobs: SqliteJobStore
    runner: LocalRunner
    orchestrator: Orchestrator

    def refresh(self, job_name: str) -> JobRecord:
        """Return the job's record, bringing it up to date if its supervisor died unseen."""
        record = self.jobs.get(job_name)
        if record.status.is_terminal or record.submitted_at is None:
            return record
        description = self.runner.describe(job_name)
        if description.status.is_terminal and not self.runner.is_running(job_name):
            # The supervisor records its own end; it is gone, so record what it left.
            return self.jobs.apply_description(description)
        return record

    def wait(
        self,
        job_names: list[str],
        *,
        timeout: float | None = None,
        on_poll: Callable[[list[str]], object] | None = None,
    ) -> list[JobRecord]:
        """Poll until every job has ended; raise TimeoutError after ``timeout`` seconds.

        ``on_poll`` receives the names of the jobs still running after each poll.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        # Short sleeps: a local job often ends within a second, and each read is a file stat
        # and one SQLite row.
        delay = 0.01
        pending = list(job_names)
        failing_since: float | None = None
        while True:
            try:
                pending = [name for name in pending if not self.refresh(name).status.is_terminal]
                failing_since = None
            except JobStoreError as error:
                # A full disk fails even reads, because SQLite recreates its -shm file on each
                # open. The runner of the job that filled it frees the space when it cleans
                # up, so reads are tried again for a while before the error counts.
                now = time.monotonic()
                if failing_since is None:
                    failing_since = now
                    logger.warning(
                        "cannot read job states; trying again for up to %.0f s: %s",
                        READ_RETRY_SECONDS,
                        error,
                    )
                elif now - failing_since > READ_RETRY_SECONDS:
                    raise
            if on_poll is not None:
                on_poll(pending)
            if not pending:
                return [self.jobs.get(name) for name in job_names]
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"jobs still running after {timeout:.0f} s: {pending}")
            time.sleep(delay)
            delay = min(delay * 1.5, 0.1)

    def output_files(self, record: JobRecord) -> list[str]:
        """Return the S3 URIs of the objects a completed job wrote."""
        return output_files(self.store, record)

    def local_path(self, uri: str) -> Path:
        """Return the file or folder of an S3 URI in the local store."""
        bucket, key = parse_s3_uri(uri)
        return self.store.buckets_root / bucket / key


def build_local_app(settings: Settings, step: StepTemplate | None = None) -> LocalApp:
    """Wire the local mode under ``settings.home``, creating the folder if needed.

    Raises ConfigurationError for a home that cannot be used.
    """
    home = settings.home.resolve()
    try:
        home.mkdir(parents=True, exist_ok=True)
        lock_wait = settings.db_lock_wait_seconds
        store = LocalObjectStore(home, region=settings.region, lock_wait_seconds=lock_wait)
        jobs = SqliteJobStore(home / "jobs.db", lock_wait_seconds=lock_wait)
        runner = LocalRunner(
            RunnerConfig(
                home=str(home),
                logs_bucket=settings.buckets.logs,
                job_store_db=str(home / "jobs.db"),
                isolation=settings.isolation,
                max_concurrent_jobs=settings.max_concurrent_jobs,
                region=settings.region,
                db_lock_wait_seconds=lock_wait,
            )
        )
    except (OSError, sqlite3.Error, JobStoreError) as error:
        detail = error.strerror if isinstance(error, OSError) else str(error)
        if _damaged_database(detail):
            # Permissions are not the problem here, so point to the check that names the file.
            raise ConfigurationError(
                f"cannot use PREPFLOW_HOME={str(settings.home)!r}: {detail}; a database in "
                "it (jobs.db or store.db) is damaged: run 'prepflow doctor' to find which, "
                "then move that file aside"
            ) from error
        raise ConfigurationError(
            f"cannot use PREPFLOW_HOME={str(settings.home)!r}: {detail}; "
            "choose a folder you can write to"
        ) from error
    orchestrator = Orchestrator(
        settings=settings,
        store=store,
        backend=runner,
        jobs=jobs,
        step=step or StepTemplate.built_in(),
    )
    return LocalApp(settings, store, jobs, runner, orchestrator)


def _damaged_database(detail: str | None) -> bool:
    """Return True when SQLite's message reports a corrupt file or one that is not a database."""
    text = (detail or "").lower()
    return "file is not a database" in text or "malformed" in text
