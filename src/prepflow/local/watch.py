"""The folder watcher: every settled file under the raw bucket's input prefix starts a job once.

Any program may write into ``<home>/buckets/<raw bucket>/<input prefix>``. A file is taken
when it has not changed for ``settle_seconds`` (so half-copied files wait), then the store
records it (ETag, sequencer) and the watcher hands the orchestrator the S3 notification a PUT
would have sent. The first scan is the reconcile: files that arrived while no watcher ran are
processed then. Nothing is processed twice: a file already recorded keeps its sequencer, so
its idempotency key finds the existing job.

With ``PREPFLOW_BATCH_WINDOW_SECONDS`` above 0, settled files are collected instead: from the
first one, for that many seconds or until ``PREPFLOW_BATCH_MAX_OBJECTS`` files wait, and then
handed to the orchestrator as one event, which starts one job for them. When the watcher
stops, the files still waiting are handed over before it exits.

The first scan also looks at every job still recorded as running: a job whose runner process
died while no watcher ran is marked Failed then. A job that failed that way, or whose
command was killed by a signal, is re-driven: the orchestrator starts a new job for the same
file, until ``PREPFLOW_JOB_ATTEMPTS`` jobs were started for it.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from prepflow.errors import PrepflowError
from prepflow.events import build_s3_notification
from prepflow.jobs.spec import JobStatus
from prepflow.jobstore.base import JobRecord
from prepflow.local.app import LocalApp
from prepflow.naming import object_idempotency_key
from prepflow.orchestrator import Outcome, OutcomeKind, TriggerResult

logger = logging.getLogger(__name__)

FileIdentity = tuple[int, int, int]
# Running jobs the first scan looks at; far more than one machine's job slots.
ADOPT_LIMIT = 10_000


@dataclass
class Watcher:
    app: LocalApp
    interval_seconds: float = 1.0
    settle_seconds: float = 2.0
    # Files that changed within settle_seconds at the last scan; they wait for a later one.
    unsettled: int = 0
    # Each file's identity and the monotonic time it was first seen with it.
    _seen_since: dict[str, tuple[FileIdentity, float]] = field(default_factory=dict)
    _first_scan: bool = True
    _handled: dict[str, FileIdentity] = field(default_factory=dict)
    _running: dict[str, str] = field(default_factory=dict)
    _skip_logged: dict[str, str] = field(default_factory=dict)
    # S3 notification records of settled files waiting for their batch, and the monotonic
    # time the first of them was queued.
    _pending: list[dict[str, Any]] = field(default_factory=list)
    _pending_since: float | None = None

    def run(self, stop: threading.Event | None = None) -> None:
        """Scan until ``stop`` is set (or forever); errors of one scan are logged, not fatal."""
        stop = stop or threading.Event()
        settings = self.app.settings
        logger.info(
            "watching s3://%s/%s (%s)",
            settings.buckets.raw,
            settings.input_prefix,
            self.app.store.buckets_root / settings.buckets.raw / settings.input_prefix,
        )
        while not stop.is_set():
            try:
                self.scan_once()
            except PrepflowError as error:
                logger.error("scan failed, retrying in %.1f s: %s", self.interval_seconds, error)
            self.report_finished()
            stop.wait(self.interval_seconds)
        self.flush()
        logger.info("watcher stopped")

    def scan_once(self, *, now: float | None = None) -> list[TriggerResult]:
        """Start jobs for every settled, unhandled file; return the orchestrator's results."""
        now = time.time() if now is None else now
        bucket = self.app.settings.buckets.raw
        files = self.app.store.scan(
            bucket, self.app.settings.input_prefix, on_skip=self._log_skip_once
        )

        if self._first_scan:
            self._adopt_unfinished_jobs()
        results = []
        present = set()
        self.unsettled = 0
        for key, _, stat in files:
            present.add(key)
            identity = (stat.st_size, stat.st_mtime_ns, stat.st_ino)
            if self._handled.get(key) == identity:
                continue
            if not self._settled(key, identity, stat, now):
                self.unsettled += 1
                continue
            self._handled[key] = identity
            result = self._take(bucket, key, stat.st_size)
            if result is not None:
                results.append(result)
            if len(self._pending) >= self.app.settings.batch_max_objects:
                results.extend(self._flush_results())
        if self._pending_since is not None and (
            time.monotonic() - self._pending_since >= self.app.settings.batch_window_seconds
        ):
            results.extend(self._flush_results())

        self._seen_since = {key: v for key, v in self._seen_since.items() if key in present}
        self._first_scan = False
        return results

    def _take(self, bucket: str, key: str, size: int) -> TriggerResult | None:
        """Hand one settled file to the orchestrator, unless it is to be skipped."""
        skip = self.app.orchestrator.skip_reason(bucket, key, size)
        if skip is not None:
            logger.info("skipped s3://%s/%s: %s", bucket, key, skip)
            return None
        try:
            return self._process(bucket, key)
        except PrepflowError as error:
            # One unreadable file must not stop the watcher; a restart retries it.
            logger.error("cannot process s3://%s/%s: %s", bucket, key, error)
            return None

    def report_finished(self) -> None:
        """Log each job this watcher started once it ends."""
        for name in list(self._running):
            try:
                record = self.app.refresh(name)
            except PrepflowError as error:
                logger.warning("cannot read the state of job %s: %s", name, error)
                continue
            if not record.status.is_terminal:
                continue
            subject = self._running.pop(name)
            if record.failure_reason:
                logger.warning(
                    "job %s for %s %s: %s", name, subject, record.status, record.failure_reason
                )
            else:
                logger.info(
                    "job %s for %s %s (rows in %s, out %s)",
                    name,
                    subject,
                    record.status,
                    record.rows_in,
                    record.rows_out,
                )
            self._redrive_if_due(record, subject)

    def _adopt_unfinished_jobs(self) -> None:
        """Follow every job recorded as running, so one whose runner died is found and re-driven.

        Reading a job's state marks it Failed when its runner process is gone.
        """
        for status in (JobStatus.IN_PROGRESS, JobStatus.STOPPING):
            for record in self.app.jobs.list_jobs(status=status, limit=ADOPT_LIMIT):
                if record.submitted_at is not None:
                    self._running.setdefault(record.job_name, ", ".join(record.inputs))
        self.report_finished()

    def _redrive_if_due(self, record: JobRecord, subject: str) -> Outcome | None:
        """Start the next attempt of a failed job when the orchestrator finds one due."""
        outcome = self.app.orchestrator.redrive(record)
        if outcome is not None and outcome.kind == OutcomeKind.STARTED and outcome.job_name:
            self._running[outcome.job_name] = subject
        return outcome

    def _log_skip_once(self, key: str, reason: str) -> None:
        if self._skip_logged.get(key) != reason:
            self._skip_logged[key] = reason
            logger.info("skipped %s in the watched folder: %s", key, reason)

    def _settled(self, key: str, identity: FileIdentity, stat: os.stat_result, now: float) -> bool:
        """Tell whether a file has stayed unchanged for settle_seconds.

        The watcher's own clock decides, so a file with a modification time in the future
        (clock skew, a restored backup) still settles. On the first scan, a file whose
        modification time is old enough counts as settled at once.
        """
        since = self._seen_since.get(key)
        if since is None or since[0] != identity:
            since = (identity, time.monotonic())
            self._seen_since[key] = since
        age = now - stat.st_mtime
        if self._first_scan and age >= max(self.settle_seconds, 0):
            return True
        return time.monotonic() - since[1] >= self.settle_seconds

    def _process(self, bucket: str, key: str) -> TriggerResult | None:
        info = self.app.store.head_object(bucket, key)
        idempotency_key = object_idempotency_key(
            bucket, key, version_id=info.version_id, sequencer=info.sequencer
        )
        existing = self.app.orchestrator.latest_attempt(idempotency_key)
        if existing is not None and existing.submitted_at is not None:
            return self._follow(existing, f"s3://{bucket}/{key}")
        notification = build_s3_notification(
            bucket=bucket,
            key=key,
            size=info.size,
            etag=info.etag,
            sequencer=info.sequencer or "",
            region=self.app.settings.region,
            event_time=info.last_modified,
            configuration_id="prepflow-watch",
        )
        if self.app.settings.batch_window_seconds > 0:
            self._queue(notification)
            return None
        return self._hand_over(notification, batch=False)

    def flush(self) -> TriggerResult | None:
        """Hand the files waiting for their batch to the orchestrator now, as one event."""
        if not self._pending:
            return None
        payload = {"Records": self._pending}
        count = len(self._pending)
        self._pending = []
        self._pending_since = None
        logger.info("handing over a batch of %d file(s)", count)
        try:
            return self._hand_over(payload, batch=True)
        except PrepflowError as error:
            # The files stay recorded without a job, so the next start's first scan retries.
            logger.error("cannot process a batch of %d file(s): %s", count, error)
            return None

    def _flush_results(self) -> list[TriggerResult]:
        result = self.flush()
        return [] if result is None else [result]

    def _queue(self, notification: dict[str, Any]) -> None:
        if self._pending_since is None:
            self._pending_since = time.monotonic()
        self._pending.extend(notification["Records"])

    def _hand_over(self, payload: dict[str, Any], *, batch: bool) -> TriggerResult:
        result = self.app.orchestrator.handle(payload, batch=batch)
        for outcome in result.outcomes:
            if outcome.kind == OutcomeKind.STARTED and outcome.job_name:
                self._running[outcome.job_name] = outcome.subject
            elif outcome.kind == OutcomeKind.FAILED:
                logger.error("no job for %s: %s", outcome.subject, outcome.reason)
        return result

    def _follow(self, latest: JobRecord, subject: str) -> TriggerResult | None:
        """Track a file's existing job; re-drive it if it failed for a reason outside its work."""
        record = self.app.refresh(latest.job_name)
        if not record.status.is_terminal:
            self._running.setdefault(record.job_name, subject)
            return None
        outcome = self._redrive_if_due(record, subject)
        return None if outcome is None else TriggerResult(outcomes=[outcome])
