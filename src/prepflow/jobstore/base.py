"""The job store port: the rules of a job's record live here; backends supply five primitives.

Rules:

- ``create`` is put-if-absent by idempotency key: one key, one record; the first writer wins.
- A record may also claim objects (``claims``: their idempotency keys). The record, its key and
  its claims are written in one atomic step, and only if none of those keys belongs to another
  record, so an object is in at most one job. A single-object job claims its object through its
  idempotency key alone.
- A status changes only along ``LEGAL_TRANSITIONS`` (InProgress -> Completed | Failed |
  Stopping, Stopping -> Stopped | Completed | Failed); a terminal status never changes again.
- Every write is a compare-and-set on the record's ``version``, so two processes updating the
  same record never lose each other's change. A stale writer re-reads and tries again.
"""

from __future__ import annotations

import json
import logging
import random
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from prepflow.errors import IllegalTransitionError, JobNotFoundError, JobStoreError
from prepflow.jobs.spec import LEGAL_TRANSITIONS, JobDescription, JobStatus
from prepflow.storage.base import ObjectStore, parse_s3_uri

logger = logging.getLogger(__name__)

# A compare-and-set loses only to another writer of the same record; a handful of retries is
# plenty unless something rewrites the record in a loop.
MAX_WRITE_ATTEMPTS = 20
WRITE_BACKOFF_SECONDS = 0.005


def utcnow() -> datetime:
    return datetime.now(UTC)


class JobRecord(BaseModel):
    """Everything prepflow keeps about one processing job."""

    model_config = ConfigDict(frozen=True)

    job_name: str
    idempotency_key: str
    status: JobStatus = JobStatus.IN_PROGRESS
    # S3 URIs of the objects the job reads (decoded keys) and of its output prefixes.
    inputs: list[str] = Field(default_factory=list)
    # ETag of each input as the triggering event saw it, keyed by S3 URI.
    input_etags: dict[str, str] = Field(default_factory=dict)
    outputs: list[str] = Field(default_factory=list)
    manifest_uri: str | None = None
    log_uri: str | None = None
    created_at: datetime = Field(default_factory=utcnow)
    # Set once the backend accepted the job; None means prepflow must still submit it.
    submitted_at: datetime | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    failure_reason: str | None = None
    exit_message: str | None = None
    # Why an accepted job has not started yet, for example "waiting for a free slot".
    waiting_reason: str | None = None
    # Submissions the backend turned down for lack of capacity (ResourceLimitExceeded) or
    # throttling; the orchestrator gives up after a bound.
    submit_attempts: int = 0
    # 1 for the first job of a trigger. A re-drive after a runner died is attempt 2, 3, ...
    # and names the job it retries in ``retry_of``.
    attempt: int = 1
    retry_of: str | None = None
    rows_in: int | None = None
    rows_out: int | None = None
    rows_rejected: int | None = None
    log_tail: str | None = None
    # When the job's end was announced (SNS on AWS); None until then, so a retried event
    # sends what a failed publish did not.
    notified_at: datetime | None = None
    request: dict[str, Any] = Field(default_factory=dict)
    # Idempotency keys of the objects a batch job processes, beyond its own key; each object
    # belongs to one job only. Empty for a single-object job, whose key is its object's.
    claims: list[str] = Field(default_factory=list)
    version: int = 0

    @property
    def claim_keys(self) -> list[str]:
        """The record's idempotency key and its claims, without repeats."""
        return list(dict.fromkeys([self.idempotency_key, *self.claims]))

    @property
    def duration_s(self) -> float | None:
        start = self.started_at or self.submitted_at
        if start is None or self.ended_at is None:
            return None
        # Times from two clocks (ours and the backend's) may disagree by a little.
        return max(round((self.ended_at - start).total_seconds(), 3), 0.0)


@dataclass(frozen=True)
class ClaimResult:
    """What ``JobStore.create_claiming`` did.

    ``created`` True: ``record`` is the new record. ``record`` set with ``created`` False: a
    record with the same idempotency key existed, and ``record`` is that one. ``record`` None:
    some claim keys belong to other jobs (``taken`` maps each to its job name), and nothing
    was written.
    """

    record: JobRecord | None
    created: bool
    taken: dict[str, str] = field(default_factory=dict)


def output_files(store: ObjectStore, record: JobRecord) -> list[str]:
    """Return the S3 URIs of the objects a completed job wrote (none for other jobs)."""
    if record.status != JobStatus.COMPLETED:
        return []
    uris: list[str] = []
    for output in record.outputs:
        bucket, prefix = parse_s3_uri(output)
        uris.extend(info.uri for info in store.list_objects(bucket, prefix))
    return uris


class JobStore(ABC):
    """Durable job records shared by every prepflow process of one deployment."""

    # -- primitives each backend implements --------------------------------------------------

    @abstractmethod
    def _insert_if_absent(self, record: JobRecord) -> bool:
        """Insert ``record`` unless its job name or any of its ``claim_keys`` exists.

        The key of every stored record and each of its claims count as existing. Returns True
        if inserted; nothing is written otherwise.
        """

    @abstractmethod
    def _load(self, job_name: str) -> JobRecord | None: ...

    @abstractmethod
    def _load_by_key(self, idempotency_key: str) -> JobRecord | None:
        """Return the record whose idempotency key or one of whose claims is the key."""

    @abstractmethod
    def _replace_if_version(self, record: JobRecord, expected_version: int) -> bool:
        """Store ``record`` if the stored version is still ``expected_version``."""

    @abstractmethod
    def _scan(self, status: JobStatus | None, limit: int) -> list[JobRecord]:
        """Return up to ``limit`` records, newest first, optionally of one status."""

    # -- rules ------------------------------------------------------------------------------

    def create(self, record: JobRecord) -> tuple[JobRecord, bool]:
        """Insert ``record`` unless its idempotency key has one; return (stored record, created)."""
        if self._insert_if_absent(record):
            logger.info("recorded job %s", record.job_name)
            return record, True
        existing = self._load_by_key(record.idempotency_key) or self._load(record.job_name)
        if existing is None:
            raise JobStoreError(
                f"job {record.job_name!r} was neither inserted nor found; the store is "
                "inconsistent, check that its database file is writable"
            )
        return existing, False

    def create_claiming(self, record: JobRecord) -> ClaimResult:
        """Insert ``record`` with its claims unless another record holds one of its keys.

        A record with the same idempotency key is returned as it is stored. A claim held by
        another job writes nothing and names that job, so the caller can leave the object out
        and try again with the rest.
        """
        if self._insert_if_absent(record):
            logger.info("recorded job %s claiming %d keys", record.job_name, len(record.claims))
            return ClaimResult(record, True)
        existing = self._load_by_key(record.idempotency_key)
        if existing is not None and existing.idempotency_key == record.idempotency_key:
            return ClaimResult(existing, False)
        taken = self._claim_owners(record.claim_keys)
        if taken:
            return ClaimResult(None, False, taken)
        existing = self._load(record.job_name)
        if existing is not None:
            # Two idempotency keys gave one job name: the name's hash suffix collided.
            raise JobStoreError(
                f"job {record.job_name!r} exists for another idempotency key "
                f"({existing.idempotency_key[:80]!r}); the name's hash collided, so retry "
                "the batch with other objects"
            )
        raise JobStoreError(
            f"job {record.job_name!r} was neither inserted nor found; the store is "
            "inconsistent, check that it is writable"
        )

    def _claim_owners(self, keys: Iterable[str]) -> dict[str, str]:
        """Return the job name holding each of ``keys`` that a record holds."""
        owners: dict[str, str] = {}
        for key in keys:
            owner = self._load_by_key(key)
            if owner is not None:
                owners[key] = owner.job_name
        return owners

    def get(self, job_name: str) -> JobRecord:
        record = self._load(job_name)
        if record is None:
            raise JobNotFoundError(job_name)
        return record

    def find(self, job_name: str) -> JobRecord | None:
        return self._load(job_name)

    def find_by_key(self, idempotency_key: str) -> JobRecord | None:
        return self._load_by_key(idempotency_key)

    def list_jobs(self, *, status: JobStatus | None = None, limit: int = 100) -> list[JobRecord]:
        return self._scan(status, limit)

    def update(self, job_name: str, **changes: Any) -> JobRecord:
        """Change fields other than ``status``."""
        if "status" in changes:
            raise JobStoreError("use transition() to change a job's status")
        return self._write(job_name, lambda record: changes)

    def modify(self, job_name: str, change: Callable[[JobRecord], dict[str, Any]]) -> JobRecord:
        """Change fields other than ``status`` from the stored record, atomically.

        ``change`` gets the current record and returns the fields to set. It runs again on
        the fresh record if another writer got there first, so a counter never loses a step.
        """

        def checked(record: JobRecord) -> dict[str, Any]:
            changes = change(record)
            if "status" in changes:
                raise JobStoreError("use transition() to change a job's status")
            return changes

        return self._write(job_name, checked)

    def transition(self, job_name: str, status: JobStatus, **changes: Any) -> JobRecord:
        """Move the job to ``status``; raise IllegalTransitionError for a change not allowed.

        Moving to the status a job already has only updates the other fields.
        """

        def change(record: JobRecord) -> dict[str, Any]:
            if record.status != status and status not in LEGAL_TRANSITIONS[record.status]:
                raise IllegalTransitionError(
                    f"job {job_name!r} cannot go from {record.status} to {status}; allowed: "
                    f"{sorted(LEGAL_TRANSITIONS[record.status]) or 'none (terminal)'}"
                )
            return {**changes, "status": status}

        return self._write(job_name, change)

    def apply_description(self, description: JobDescription, **changes: Any) -> JobRecord:
        """Record what the backend reports; repeats and out-of-order reports change nothing.

        A report of a status the record has already passed is ignored, so a late
        ``InProgress`` never overwrites ``Completed``. A ``Stopped`` report for a job still
        ``InProgress`` is recorded at once: the backend may report no ``Stopping`` between.
        """
        return self.record_description(description, **changes)[0]

    def record_description(
        self, description: JobDescription, **changes: Any
    ) -> tuple[JobRecord, bool]:
        """Like ``apply_description``; also return whether this call changed the status.

        Of several processes given the same report at once, exactly one gets True, because
        the status change is a compare-and-set on the record: one notification per change.
        """
        target = description.status
        fields = {**_description_fields(description), **changes}
        changed = [False]

        def change(record: JobRecord) -> dict[str, Any]:
            changed[0] = False
            if record.status.is_terminal or target == JobStatus.IN_PROGRESS:
                return {}
            if record.status == target:
                return {}
            if target not in LEGAL_TRANSITIONS[record.status] and not (
                target == JobStatus.STOPPED and record.status == JobStatus.IN_PROGRESS
            ):
                raise IllegalTransitionError(
                    f"job {record.job_name!r} cannot go from {record.status} to {target}"
                )
            changed[0] = True
            return {**fields, "status": target}

        record = self.get(description.job_name)
        if record.status.is_terminal or target == JobStatus.IN_PROGRESS or record.status == target:
            if record.status != target:
                logger.info(
                    "ignored %s report for job %s, which is %s",
                    target,
                    record.job_name,
                    record.status,
                )
            return record, False
        updated = self._write(description.job_name, change)
        if changed[0]:
            logger.info("job %s is %s", updated.job_name, updated.status)
        return updated, changed[0]

    def _write(self, job_name: str, change: Any) -> JobRecord:
        for attempt in range(MAX_WRITE_ATTEMPTS):
            record = self.get(job_name)
            changes = change(record)
            if not changes:
                return record  # nothing to change: no write, no new version
            updated = record.model_copy(update={**changes, "version": record.version + 1})
            if self._replace_if_version(updated, record.version):
                return updated
            # Writers that lost the same race would collide again at once; a random pause,
            # growing with each loss, spreads them out.
            time.sleep(random.uniform(0, WRITE_BACKOFF_SECONDS * (attempt + 1)))
        raise JobStoreError(
            f"job {job_name!r} changed {MAX_WRITE_ATTEMPTS} times while being updated; "
            "another process rewrites it in a loop"
        )


def _description_fields(description: JobDescription) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "failure_reason": description.failure_reason,
        "exit_message": description.exit_message,
        "ended_at": description.end_time,
    }
    if description.start_time is not None:
        fields["started_at"] = description.start_time
    fields.update(_counts_from_exit_message(description.exit_message))
    return fields


def _counts_from_exit_message(message: str | None) -> dict[str, int]:
    """Read the row counts from a built-in step's ExitMessage (a JSON object)."""
    if not message:
        return {}
    try:
        parsed = json.loads(message)
    except ValueError:
        return {}
    if not isinstance(parsed, dict):
        return {}
    return {
        name: parsed[name]
        for name in ("rows_in", "rows_out", "rows_rejected")
        if isinstance(parsed.get(name), int) and not isinstance(parsed.get(name), bool)
    }
