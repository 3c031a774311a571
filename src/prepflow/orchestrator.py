"""The orchestrator: trigger events in, processing jobs out, each job recorded once.

For every object in a trigger event: parse, filter, derive the idempotency key and job name,
write a manifest of exactly that object, build the job spec, record the job, submit it. The
same code runs in the local CLI and in the AWS Lambda handler; only the store, backend and
job store passed in differ.

Delivery is at least once everywhere (S3, EventBridge, SQS and Lambda all retry), so the
path is idempotent: a repeated event finds its job by idempotency key and starts nothing.
A job that was never accepted is submitted again on redelivery, unless its record has ended.

A submission turned down for now (no capacity, or throttled) fails the event, so it is
delivered again. The record counts the attempts and states why the job waits. After
``settings.submit_attempts`` attempts the job is marked Failed for good, and the event is no
longer reported for redelivery.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from prepflow import naming
from prepflow.errors import (
    CapacityError,
    InvalidKeyError,
    JobExistsError,
    JobSpecError,
    PrepflowError,
    RecursiveOutputError,
    StorageError,
    ThrottledError,
)
from prepflow.events import (
    MalformedRecord,
    ManualRequest,
    Notification,
    ObjectCreated,
    OtherS3Event,
    S3TestEvent,
    parse_trigger_event,
)
from prepflow.jobs.backend import JobBackend
from prepflow.jobs.spec import JobStatus, ProcessingJobSpec
from prepflow.jobs.template import StepTemplate, build_spec, renamed_spec
from prepflow.jobstore.base import JobRecord, JobStore, utcnow
from prepflow.settings import Settings
from prepflow.storage.base import (
    ObjectInfo,
    ObjectStore,
    check_bucket_name,
    check_key,
    folder_prefix,
    parse_s3_uri,
    relative_key,
    s3_uri,
)

logger = logging.getLogger(__name__)

MANIFEST_PREFIX = "manifests/"
# Times a batch job is recorded again without the objects other jobs claimed meanwhile.
CLAIM_ATTEMPTS = 3
# Failure reasons after which a new job for the same objects may succeed, because the job
# did not end by its own error. Either its runner process died: SageMaker and the local
# runner start the reasons of their own faults with "InternalServerError". Or its command
# was killed by a signal (an operator's kill -9, the kernel's OOM killer).
REDRIVABLE_REASONS = ("InternalServerError:", "AlgorithmError: killed by signal")


class OutcomeKind(StrEnum):
    STARTED = "started"
    DUPLICATE = "duplicate"
    SKIPPED = "skipped"
    FAILED = "failed"


@dataclass(frozen=True)
class Outcome:
    """Result of one notification: a job started or found, a skip, or a failure."""

    kind: OutcomeKind
    subject: str
    job_name: str | None = None
    reason: str | None = None
    message_id: str | None = None
    # False for a failure already recorded in the job's record for good, which a new
    # delivery of the event cannot change.
    retry: bool = True


@dataclass
class TriggerResult:
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.kind == OutcomeKind.FAILED]

    @property
    def retryable_failures(self) -> list[Outcome]:
        """Failures that a new delivery of the event may resolve."""
        return [o for o in self.failures if o.retry]

    @property
    def failed_message_ids(self) -> list[str]:
        """SQS message ids to report as batch item failures, each once, in order."""
        ids = [o.message_id for o in self.retryable_failures if o.message_id is not None]
        return list(dict.fromkeys(ids))

    @property
    def job_names(self) -> list[str]:
        """Jobs this trigger started or found already running, each once, in order."""
        names = [o.job_name for o in self.outcomes if o.job_name is not None]
        return list(dict.fromkeys(names))


@dataclass(frozen=True)
class Location:
    bucket: str
    prefix: str

    @property
    def uri(self) -> str:
        return s3_uri(self.bucket, self.prefix)

    def overlaps(self, other: Location) -> bool:
        return self.bucket == other.bucket and (
            self.prefix.startswith(other.prefix) or other.prefix.startswith(self.prefix)
        )

    def contains(self, bucket: str, key: str) -> bool:
        return bucket == self.bucket and key.startswith(self.prefix)


def watched_location(settings: Settings) -> Location:
    return Location(settings.buckets.raw, settings.input_prefix)


def write_locations(settings: Settings) -> list[Location]:
    """Return every location prepflow writes to; none may lie where new objects start jobs."""
    buckets = settings.buckets
    return [
        Location(buckets.processed, settings.output_prefix),
        Location(buckets.processed, "rejected/"),
        Location(buckets.logs, "logs/"),
        Location(buckets.logs, "reports/"),
        Location(buckets.model_artifacts, MANIFEST_PREFIX),
        Location(buckets.model_artifacts, "scripts/"),
        Location(buckets.model_artifacts, "recipes/"),
        Location(buckets.model_artifacts, "artifacts/"),
    ]


def check_no_recursion(settings: Settings) -> None:
    """Raise RecursiveOutputError if an output location lies inside the watched location."""
    watched = watched_location(settings)
    for location in write_locations(settings):
        if location.overlaps(watched):
            raise RecursiveOutputError(
                f"output location {location.uri} overlaps the watched input location "
                f"{watched.uri}: every output would start another job. Move the output "
                "(PREPFLOW_OUTPUT_PREFIX or the bucket names) or the input prefix "
                "(PREPFLOW_INPUT_PREFIX) so neither lies inside the other"
            )


class Orchestrator:
    """Turns trigger events into processing jobs; see the module docstring."""

    def __init__(
        self,
        *,
        settings: Settings,
        store: ObjectStore,
        backend: JobBackend,
        jobs: JobStore,
        step: StepTemplate,
    ) -> None:
        check_no_recursion(settings)
        self.settings = settings
        self.store = store
        self.backend = backend
        self.jobs = jobs
        self.step = step
        self._watched = watched_location(settings)
        self._outputs = write_locations(settings)

    def handle(
        self, payload: Mapping[str, Any] | str | bytes, *, batch: bool | None = None
    ) -> TriggerResult:
        """Process every notification of a trigger event; a bad one fails alone.

        With ``batch`` (by default when ``settings.batch_window_seconds`` > 0), the objects of
        all ObjectCreated notifications go into one job, or several of at most
        ``settings.batch_max_objects`` objects. Raises EventError only when the payload as a
        whole has no known shape.
        """
        batching = self.settings.batch_window_seconds > 0 if batch is None else batch
        result = TriggerResult()
        batched: list[tuple[ObjectCreated, str | None]] = []
        for message in parse_trigger_event(payload):
            if message.error is not None:
                subject = f"SQS message {message.message_id}"
                result.outcomes.append(
                    Outcome(
                        OutcomeKind.FAILED,
                        subject,
                        reason=message.error,
                        message_id=message.message_id,
                    )
                )
            for notification in message.notifications:
                if batching and isinstance(notification, ObjectCreated):
                    batched.append((notification, message.message_id))
                else:
                    result.outcomes.append(self._handle_one(notification, message.message_id))
        if batched:
            result.outcomes.extend(self._handle_batch(batched))
        _log_summary(result)
        return result

    def skip_reason(self, bucket: str, key: str, size: int | None) -> str | None:
        """Return why an object's own event starts no job, or None if it should be processed.

        In marker mode only a marker starts a job; other data objects wait for one.
        """
        if self.is_marker(key):
            return self._location_skip_reason(bucket, key)
        reason = self.data_skip_reason(bucket, key, size)
        if reason is None and self.settings.marker:
            reason = (
                f"data objects wait for a marker object {self.settings.marker!r} in their folder"
            )
        return reason

    def is_marker(self, key: str) -> bool:
        """Tell whether ``key`` names a marker object (marker mode only)."""
        return bool(self.settings.marker) and key.rsplit("/", 1)[-1] == self.settings.marker

    def data_skip_reason(self, bucket: str, key: str, size: int | None) -> str | None:
        """Return why an object is no data for a job to read, or None if it is."""
        reason = self._location_skip_reason(bucket, key)
        if reason is not None:
            return reason
        if key.endswith("/"):
            return "the object is a folder placeholder"
        if self.is_marker(key):
            return "the object is a marker, not data"
        if not key.lower().endswith(self.settings.input_suffixes):
            return f"the file type is not one of {', '.join(self.settings.input_suffixes)}"
        if size == 0:
            return "the object is empty (0 bytes)"
        return None

    def _location_skip_reason(self, bucket: str, key: str) -> str | None:
        if any(location.contains(bucket, key) for location in self._outputs):
            return "the object lies in one of prepflow's output locations"
        if not self._watched.contains(bucket, key):
            return f"the object is outside the watched location {self._watched.uri}"
        return None

    def _handle_one(self, notification: Notification, message_id: str | None) -> Outcome:
        subject = _subject(notification)
        try:
            outcome = self._dispatch(notification, subject)
        except PrepflowError as error:
            logger.error("failed to start a job for %s: %s", subject, error)
            return Outcome(OutcomeKind.FAILED, subject, reason=str(error), message_id=message_id)
        return replace(outcome, message_id=message_id)

    def _dispatch(self, notification: Notification, subject: str) -> Outcome:
        if isinstance(notification, ObjectCreated):
            return self._handle_object(notification, subject)
        if isinstance(notification, ManualRequest):
            return self._handle_manual(notification, subject)
        if isinstance(notification, S3TestEvent):
            logger.info("acknowledged s3:TestEvent for bucket %s", notification.bucket)
            return Outcome(OutcomeKind.SKIPPED, subject, reason="s3:TestEvent acknowledged")
        if isinstance(notification, OtherS3Event):
            reason = f"{notification.event_name} is not an object creation; nothing to process"
            logger.info("skipped %s: %s", subject, reason)
            return Outcome(OutcomeKind.SKIPPED, subject, reason=reason)
        return Outcome(OutcomeKind.FAILED, subject, reason=notification.reason)

    def _handle_object(self, event: ObjectCreated, subject: str) -> Outcome:
        skip = self.skip_reason(event.bucket, event.key, event.size)
        if skip is not None:
            logger.info("skipped %s: %s", subject, skip)
            return Outcome(OutcomeKind.SKIPPED, subject, reason=skip)
        if self.is_marker(event.key):
            return self._handle_marker(event, subject)

        key = _event_key(event)
        name = naming.job_name(self.settings.job_name_prefix, key, event.key)
        duplicate = self._find_submitted(key, subject)
        if duplicate is not None:
            return duplicate

        info = self.store.head_object(event.bucket, event.key)
        if event.etag and _plain_etag(event.etag) != _plain_etag(info.etag):
            # Either a newer upload replaced the object (both jobs then read the newer content,
            # as on S3 without versioning) or the event was written by hand.
            logger.warning(
                "%s: the event names ETag %s but the object has %s; processing the object as it "
                "is now",
                subject,
                event.etag,
                info.etag,
            )
        if info.size == 0:
            logger.info("skipped %s: the object is empty (0 bytes)", subject)
            return Outcome(OutcomeKind.SKIPPED, subject, reason="the object is empty (0 bytes)")
        prefix_uri = s3_uri(event.bucket, folder_prefix(event.key))
        return self._start(name, key, [info], prefix_uri, self._default_output(name), subject)

    def _handle_manual(self, request: ManualRequest, subject: str) -> Outcome:
        bucket, key = _manual_location("input_data_path", request.input_uri)
        if bucket != self._watched.bucket:
            raise StorageError(
                f"input_data_path {request.input_uri} is outside the raw-data bucket "
                f"s3://{self._watched.bucket}/; upload the data there first"
            )
        output_uri = request.output_uri or None
        if output_uri is not None:
            self._check_manual_output(output_uri)
        objects, prefix = self._resolve_manual_input(bucket, key, request.input_uri)
        idempotency_key = naming.manual_idempotency_key(
            ((o.key, o.etag) for o in objects), output_uri or "default", request.request_id
        )
        name = naming.job_name(self.settings.job_name_prefix, idempotency_key, key or bucket)
        duplicate = self._find_submitted(idempotency_key, subject)
        if duplicate is not None:
            return duplicate
        output = _folder_uri(output_uri) if output_uri else self._default_output(name)
        return self._start(name, idempotency_key, objects, s3_uri(bucket, prefix), output, subject)

    def _resolve_manual_input(
        self, bucket: str, key: str, uri: str
    ) -> tuple[list[ObjectInfo], str]:
        """Return the objects a manual request names (one object, or all under a prefix)."""
        if key and not key.endswith("/"):
            try:
                return [self.store.head_object(bucket, key)], folder_prefix(key)
            except StorageError:
                pass
        prefix = key if not key or key.endswith("/") else key + "/"
        objects = [
            info
            for info in self.store.list_objects(bucket, prefix)
            if self.data_skip_reason(info.bucket, info.key, info.size) is None
        ]
        if not objects:
            raise StorageError(
                f"no data objects ({', '.join(self.settings.input_suffixes)}) found at {uri}"
            )
        return objects, prefix

    # -- batches and markers ------------------------------------------------------------------

    def _handle_batch(self, events: list[tuple[ObjectCreated, str | None]]) -> list[Outcome]:
        """Start one job per chunk of the data objects of ``events``; handle markers alone."""
        outcomes: list[Outcome] = []
        data: list[_Candidate] = []
        for event, message_id in events:
            subject = s3_uri(event.bucket, event.key)
            skip = self.skip_reason(event.bucket, event.key, event.size)
            if skip is not None:
                logger.info("skipped %s: %s", subject, skip)
                outcomes.append(Outcome(OutcomeKind.SKIPPED, subject, None, skip, message_id))
            elif self.is_marker(event.key):
                handle = functools.partial(self._handle_marker, event, subject)
                outcomes.append(self._guarded(handle, subject, message_id))
            else:
                key = _event_key(event)
                data.append(_Candidate(event.bucket, event.key, key, subject, message_id))

        limit = self.settings.batch_max_objects
        for start in range(0, len(data), limit):
            outcomes.extend(self._start_batch(data[start : start + limit]))
        return outcomes

    def _handle_marker(self, marker: ObjectCreated, subject: str) -> Outcome:
        """Start one job over the data objects in the marker's folder that no job holds yet."""
        marker_key = _event_key(marker)
        duplicate = self._find_submitted(marker_key, subject)
        if duplicate is not None:
            return duplicate
        folder = folder_prefix(marker.key)
        candidates = [
            _Candidate(info.bucket, info.key, _listed_key(info), info.uri, info=info)
            for info in self.store.list_objects(marker.bucket, folder)
            # Subfolders have markers of their own.
            if "/" not in info.key[len(folder) :]
            and self.data_skip_reason(info.bucket, info.key, info.size) is None
        ]
        outcomes = self._start_batch(candidates, marker_key=marker_key)
        started = [o for o in outcomes if o.kind == OutcomeKind.STARTED]
        failed = [o for o in outcomes if o.kind == OutcomeKind.FAILED]
        if started:
            return replace(started[0], subject=subject)
        if failed:
            return replace(failed[0], subject=subject, job_name=None)
        marker_owner = self.jobs.find_by_key(marker_key)
        if marker_owner is not None:
            return self._owner_outcome(marker_owner, subject)
        reason = f"no data object in {s3_uri(marker.bucket, folder)} is left without a job"
        logger.info("marker %s starts no job: %s", subject, reason)
        return Outcome(OutcomeKind.SKIPPED, subject, reason=reason)

    def _start_batch(
        self, candidates: list[_Candidate], *, marker_key: str | None = None
    ) -> list[Outcome]:
        """Record and submit one job claiming every candidate no other job holds.

        Returns one outcome per candidate, in the candidates' order. A candidate that another
        job holds, or claims while this one is being recorded, is left out and reported
        DUPLICATE with that job's name.
        """
        outcomes = self._claim_and_submit(candidates, marker_key)
        order: dict[str, int] = {}
        for index, candidate in enumerate(candidates):
            order.setdefault(candidate.subject, index)
        return sorted(outcomes, key=lambda outcome: order.get(outcome.subject, len(order)))

    def _claim_and_submit(
        self, candidates: list[_Candidate], marker_key: str | None
    ) -> list[Outcome]:
        outcomes: list[Outcome] = []
        fresh: list[_Candidate] = []
        for candidate in candidates:
            owner = self.jobs.find_by_key(candidate.key)
            if owner is None:
                fresh.append(candidate)
            else:
                handle = functools.partial(self._owner_outcome, owner, candidate.subject)
                outcomes.append(self._guarded(handle, candidate.subject, candidate.message_id))
        fresh = self._read_candidates(fresh, outcomes)

        for attempt in range(1, CLAIM_ATTEMPTS + 1):
            if not fresh:
                return outcomes
            try:
                claimed = self._record_batch(fresh, marker_key)
            except PrepflowError as error:
                logger.error("failed to start a job for %d objects: %s", len(fresh), error)
                outcomes.extend(c.outcome(OutcomeKind.FAILED, reason=str(error)) for c in fresh)
                return outcomes
            if isinstance(claimed, Outcome):
                outcomes.extend(
                    c.outcome(claimed.kind, claimed.job_name, claimed.reason, retry=claimed.retry)
                    for c in fresh
                )
                return outcomes
            if marker_key is not None and marker_key in claimed:
                # Another delivery of this marker recorded its job first.
                outcomes.extend(
                    c.outcome(OutcomeKind.DUPLICATE, claimed[marker_key], "marker already handled")
                    for c in fresh
                )
                return outcomes
            logger.info(
                "%d of %d objects were claimed by other jobs meanwhile (attempt %d of %d)",
                len(claimed),
                len(fresh),
                attempt,
                CLAIM_ATTEMPTS,
            )
            outcomes.extend(
                c.outcome(OutcomeKind.DUPLICATE, claimed[c.key], "object already in a job")
                for c in fresh
                if c.key in claimed
            )
            fresh = [c for c in fresh if c.key not in claimed]

        reason = (
            f"other jobs kept claiming objects of this batch ({CLAIM_ATTEMPTS} attempts); "
            "a redelivery retries the rest"
        )
        outcomes.extend(c.outcome(OutcomeKind.FAILED, reason=reason) for c in fresh)
        return outcomes

    def _read_candidates(
        self, candidates: list[_Candidate], outcomes: list[Outcome]
    ) -> list[_Candidate]:
        """Return the candidates with their ObjectInfo; report missing and empty ones."""
        readable = []
        for candidate in candidates:
            if candidate.info is None:
                try:
                    candidate = replace(
                        candidate,
                        info=self.store.head_object(candidate.bucket, candidate.object_key),
                    )
                except PrepflowError as error:
                    logger.error("failed to read %s: %s", candidate.subject, error)
                    outcomes.append(candidate.outcome(OutcomeKind.FAILED, reason=str(error)))
                    continue
            if candidate.info is not None and candidate.info.size == 0:
                reason = "the object is empty (0 bytes)"
                logger.info("skipped %s: %s", candidate.subject, reason)
                outcomes.append(candidate.outcome(OutcomeKind.SKIPPED, reason=reason))
                continue
            readable.append(candidate)
        return readable

    def _record_batch(
        self, candidates: list[_Candidate], marker_key: str | None
    ) -> Outcome | dict[str, str]:
        """Record and submit the job of ``candidates``; return its outcome, or the taken claims."""
        objects = [c.info for c in candidates if c.info is not None]
        keys = [c.key for c in candidates]
        claim_keys = [*keys, marker_key] if marker_key is not None else keys
        idempotency_key = naming.batch_idempotency_key(claim_keys)
        prefix = common_folder([info.key for info in objects])
        source = objects[0].key if len(objects) == 1 else prefix or objects[0].bucket
        name = naming.job_name(self.settings.job_name_prefix, idempotency_key, source)
        subject = (
            objects[0].uri
            if len(objects) == 1
            else f"{len(objects)} objects under {s3_uri(objects[0].bucket, prefix)}"
        )

        existing = self.jobs.find_by_key(idempotency_key)
        if existing is not None and existing.idempotency_key == idempotency_key:
            return self._owner_outcome(existing, subject)
        record, spec = self._prepare(
            name,
            idempotency_key,
            objects,
            s3_uri(objects[0].bucket, prefix),
            self._default_output(name),
            claims=[k for k in dict.fromkeys(claim_keys) if k != idempotency_key],
        )
        result = self.jobs.create_claiming(record)
        if result.record is None:
            return result.taken
        if not result.created:
            return self._owner_outcome(result.record, subject)
        logger.info(
            "job %s claims %d objects under %s",
            name,
            len(objects),
            s3_uri(objects[0].bucket, prefix),
        )
        return self._submit(result.record, spec, subject)

    def _owner_outcome(self, owner: JobRecord, subject: str) -> Outcome:
        """Return the outcome for an object that ``owner`` holds; submit ``owner`` if due.

        A job recorded but never submitted (its delivery stopped in between) is submitted
        from its stored request, whichever event finds it first.
        """
        duplicate = _duplicate_outcome(owner, subject)
        if duplicate is not None:
            return duplicate
        return self._submit(owner, ProcessingJobSpec.from_request(owner.request), subject)

    def _guarded(
        self, step: Callable[[], Outcome], subject: str, message_id: str | None = None
    ) -> Outcome:
        """Run ``step``; turn a PrepflowError into the FAILED outcome of ``subject``."""
        try:
            outcome = step()
        except PrepflowError as error:
            logger.error("failed to start a job for %s: %s", subject, error)
            return Outcome(OutcomeKind.FAILED, subject, reason=str(error), message_id=message_id)
        return replace(outcome, subject=subject, message_id=message_id)

    def _check_manual_output(self, output_uri: str) -> None:
        bucket, prefix = _manual_location("output_data_path", output_uri)
        deployment = sorted(set(vars(self.settings.buckets).values()))
        if bucket not in deployment:
            raise StorageError(
                f"output_data_path {output_uri} is outside the deployment's buckets "
                f"({', '.join(deployment)}); write the output to one of them"
            )
        location = Location(bucket, prefix if prefix.endswith("/") or not prefix else prefix + "/")
        if location.overlaps(self._watched):
            raise RecursiveOutputError(
                f"output_data_path {output_uri} overlaps the watched input location "
                f"{self._watched.uri}: its outputs would start more jobs; choose another path"
            )

    def _find_submitted(self, idempotency_key: str, subject: str) -> Outcome | None:
        return _duplicate_outcome(self.jobs.find_by_key(idempotency_key), subject)

    def _prepare(
        self,
        name: str,
        idempotency_key: str,
        objects: list[ObjectInfo],
        prefix_uri: str,
        output_uri: str,
        *,
        claims: list[str] | None = None,
    ) -> tuple[JobRecord, ProcessingJobSpec]:
        """Write the job's manifest and return its record (not stored yet) and spec."""
        manifest = self._write_manifest(name, prefix_uri, objects)
        spec = build_spec(
            self.settings, self.step, name=name, manifest_uri=manifest, output_uri=output_uri
        )
        record = JobRecord(
            job_name=name,
            idempotency_key=idempotency_key,
            inputs=[o.uri for o in objects],
            input_etags={o.uri: o.etag for o in objects},
            outputs=[output_uri],
            manifest_uri=manifest,
            request=spec.to_request(),
            claims=claims or [],
        )
        return record, spec

    def _start(
        self,
        name: str,
        idempotency_key: str,
        objects: list[ObjectInfo],
        prefix_uri: str,
        output_uri: str,
        subject: str,
    ) -> Outcome:
        draft, spec = self._prepare(name, idempotency_key, objects, prefix_uri, output_uri)
        record, created = self.jobs.create(draft)
        if not created and record.job_name != name:
            # A batch job claimed the object between the check above and this write.
            return self._owner_outcome(record, subject)
        duplicate = None if created else _duplicate_outcome(record, subject)
        if duplicate is not None:
            return duplicate
        return self._submit(record, spec, subject)

    def _submit(self, record: JobRecord, spec: Any, subject: str) -> Outcome:
        name = record.job_name
        try:
            self.backend.submit(spec)
        except JobExistsError:
            # The job name derives from the idempotency key: in use means already started.
            self.jobs.update(name, submitted_at=record.submitted_at or utcnow())
            logger.info("job %s for %s was already started", name, subject)
            return Outcome(OutcomeKind.DUPLICATE, subject, name, "job already started")
        except JobSpecError as error:
            reason = f"ValidationException: {error}"
            self.jobs.transition(name, JobStatus.FAILED, failure_reason=reason, ended_at=utcnow())
            logger.error("failed to start a job for %s: %s", subject, error)
            return Outcome(OutcomeKind.FAILED, subject, name, reason=str(error), retry=False)
        except (CapacityError, ThrottledError) as error:
            return self._defer(name, error, subject)

        changes: dict[str, Any] = {"submitted_at": utcnow()}
        if record.submit_attempts:
            changes["waiting_reason"] = None
        self.jobs.update(name, **changes)
        logger.info("started job %s for %s", name, subject)
        return Outcome(OutcomeKind.STARTED, subject, name)

    def _defer(self, name: str, error: CapacityError | ThrottledError, subject: str) -> Outcome:
        """Count a submission turned down for now, and mark the job Failed at the bound."""
        if isinstance(error, CapacityError):
            waiting = f"waiting for capacity: {error}"
        else:
            waiting = f"throttled by SageMaker: {error}"

        def count(stored: JobRecord) -> dict[str, Any]:
            if stored.submitted_at is not None or stored.status.is_terminal:
                return {}
            return {"submit_attempts": stored.submit_attempts + 1, "waiting_reason": waiting}

        record = self.jobs.modify(name, count)
        duplicate = _duplicate_outcome(record, subject)
        if duplicate is not None:
            # Another delivery of the same event started or ended the job meanwhile.
            return duplicate

        bound = self.settings.submit_attempts
        if record.submit_attempts < bound:
            logger.warning(
                "job %s for %s not submitted (attempt %d of %d), so the event is left for "
                "redelivery: %s",
                name,
                subject,
                record.submit_attempts,
                bound,
                error,
            )
            return Outcome(OutcomeKind.FAILED, subject, reason=waiting)

        failure = (
            f"{error}. Not started after {record.submit_attempts} attempts "
            f"(PREPFLOW_SUBMIT_ATTEMPTS={bound}). Upload the object again or send a manual "
            "request to start a new job"
        )
        # NOTE: if another delivery submits the job between the count above and this
        # transition, the job runs under a Failed record.
        self.jobs.transition(
            name, JobStatus.FAILED, failure_reason=failure, waiting_reason=None, ended_at=utcnow()
        )
        logger.error("job %s for %s failed: %s", name, subject, failure)
        return Outcome(OutcomeKind.FAILED, subject, name, reason=failure, retry=False)

    def latest_attempt(self, idempotency_key: str) -> JobRecord | None:
        """Return the newest job of a trigger: its first job or the latest re-drive of it."""
        latest = self.jobs.find_by_key(idempotency_key)
        attempt = 2
        while latest is not None:
            following = self.jobs.find_by_key(naming.attempt_key(idempotency_key, attempt))
            if following is None:
                return latest
            latest = following
            attempt += 1
        return None

    def redrive(self, failed: JobRecord) -> Outcome | None:
        """Start the next attempt of a job that failed for a reason outside its own work.

        Returns None when no attempt is due: the job did not fail that way, its attempts
        (``PREPFLOW_JOB_ATTEMPTS``) are used up, or an input changed since, so the newer
        upload has a job of its own. The attempt's record is put-if-absent by its own
        idempotency key, so processes that re-drive the same job at once start one job.
        """
        subject = ", ".join(failed.inputs) or failed.job_name
        if not is_redrivable(failed):
            return None
        bound = self.settings.job_attempts
        if failed.attempt >= bound:
            logger.error(
                "job %s for %s failed on attempt %d of %d (PREPFLOW_JOB_ATTEMPTS); no new job "
                "is started: %s",
                failed.job_name,
                subject,
                failed.attempt,
                bound,
                failed.failure_reason,
            )
            return None
        try:
            return self._redrive(failed, subject)
        except PrepflowError as error:
            logger.error("cannot re-drive job %s for %s: %s", failed.job_name, subject, error)
            return Outcome(OutcomeKind.FAILED, subject, failed.job_name, reason=str(error))

    def _redrive(self, failed: JobRecord, subject: str) -> Outcome | None:
        for uri, etag in failed.input_etags.items():
            current = self.store.head_object(*parse_s3_uri(uri)).etag
            if _plain_etag(current) != _plain_etag(etag):
                logger.info(
                    "job %s is not re-driven: %s changed since, and the newer upload has its "
                    "own job",
                    failed.job_name,
                    uri,
                )
                return None

        attempt = failed.attempt + 1
        first_key = naming.first_attempt_key(failed.idempotency_key, failed.attempt)
        key = naming.attempt_key(first_key, attempt)
        source = parse_s3_uri(failed.inputs[0])[1] if failed.inputs else failed.job_name
        name = naming.job_name(self.settings.job_name_prefix, key, source)
        manifest = self._copy_manifest(failed, name)
        spec = renamed_spec(ProcessingJobSpec.from_request(failed.request), name, manifest)

        record, created = self.jobs.create(
            JobRecord(
                job_name=name,
                idempotency_key=key,
                inputs=failed.inputs,
                input_etags=failed.input_etags,
                outputs=[_renamed_output(uri, failed.job_name, name) for uri in failed.outputs],
                manifest_uri=manifest,
                request=spec.to_request(),
                attempt=attempt,
                retry_of=failed.job_name,
            )
        )
        duplicate = None if created else _duplicate_outcome(record, subject)
        if duplicate is not None:
            return duplicate
        logger.warning(
            "re-driving job %s for %s as job %s (attempt %d of %d) after: %s",
            failed.job_name,
            subject,
            name,
            attempt,
            self.settings.job_attempts,
            failed.failure_reason,
        )
        return self._submit(record, spec, subject)

    def _copy_manifest(self, failed: JobRecord, name: str) -> str:
        """Write the failed job's manifest again under the new job's name; return its URI."""
        if failed.manifest_uri is None:
            raise StorageError(
                f"job {failed.job_name!r} has no manifest, so its inputs are unknown; upload "
                "the file again to start a new job"
            )
        prefix_uri, relatives = self.store.read_manifest(*parse_s3_uri(failed.manifest_uri))
        bucket = self.settings.buckets.model_artifacts
        key = f"{MANIFEST_PREFIX}{name}.manifest"
        self.store.put_manifest(bucket, key, prefix_uri, relatives)
        return s3_uri(bucket, key)

    def _write_manifest(self, name: str, prefix_uri: str, objects: list[ObjectInfo]) -> str:
        bucket = self.settings.buckets.model_artifacts
        key = f"{MANIFEST_PREFIX}{name}.manifest"
        prefix_key = parse_s3_uri(prefix_uri)[1]
        relative = [relative_key(info.key, prefix_key) for info in objects]
        self.store.put_manifest(bucket, key, prefix_uri, relative)
        return s3_uri(bucket, key)

    def _default_output(self, name: str) -> str:
        return s3_uri(self.settings.buckets.processed, f"{self.settings.output_prefix}{name}/")


def is_redrivable(record: JobRecord) -> bool:
    """Tell whether a job failed for a reason a new attempt may not meet; see REDRIVABLE_REASONS."""
    reason = record.failure_reason or ""
    return record.status == JobStatus.FAILED and reason.startswith(REDRIVABLE_REASONS)


def _renamed_output(uri: str, old_name: str, new_name: str) -> str:
    # The same rule as renamed_spec: only a prefix named after the job follows the new name.
    suffix = f"/{old_name}/"
    return uri[: -len(suffix)] + f"/{new_name}/" if uri.endswith(suffix) else uri


@dataclass(frozen=True)
class _Candidate:
    """An object a batch job may claim: named by an event, or listed in a marker's folder."""

    bucket: str
    object_key: str
    # The object's idempotency key, which the job claims.
    key: str
    subject: str
    message_id: str | None = None
    info: ObjectInfo | None = None

    def outcome(
        self,
        kind: OutcomeKind,
        job_name: str | None = None,
        reason: str | None = None,
        *,
        retry: bool = True,
    ) -> Outcome:
        return Outcome(kind, self.subject, job_name, reason, self.message_id, retry)


def common_folder(keys: list[str]) -> str:
    """Return the longest folder prefix (ending in '/', or empty) shared by every key."""
    folders = [folder_prefix(key).split("/")[:-1] for key in keys]
    shared: list[str] = []
    for segments in zip(*folders, strict=False):
        if len(set(segments)) != 1:
            break
        shared.append(segments[0])
    return "".join(f"{segment}/" for segment in shared)


def _event_key(event: ObjectCreated) -> str:
    return naming.object_idempotency_key(
        event.bucket, event.key, version_id=event.version_id, sequencer=event.sequencer
    )


def _listed_key(info: ObjectInfo) -> str:
    # S3's listing gives no version id or sequencer; the ETag then tells two uploads apart.
    return naming.object_idempotency_key(
        info.bucket,
        info.key,
        version_id=info.version_id,
        sequencer=info.sequencer,
        etag=_plain_etag(info.etag),
    )


def _duplicate_outcome(record: JobRecord | None, subject: str) -> Outcome | None:
    """Return the DUPLICATE outcome for a job already submitted or ended, else None.

    A job whose record ended without a submission (rejected, or out of attempts) is never
    submitted again.
    """
    if record is None:
        return None
    if record.submitted_at is not None:
        logger.info("duplicate event for %s: job %s exists", subject, record.job_name)
        return Outcome(OutcomeKind.DUPLICATE, subject, record.job_name, "job already started")
    if record.status.is_terminal:
        logger.info(
            "duplicate event for %s: job %s is %s and is not submitted again",
            subject,
            record.job_name,
            record.status,
        )
        reason = f"job already {record.status}: {record.failure_reason}"
        return Outcome(OutcomeKind.DUPLICATE, subject, record.job_name, reason)
    return None


def _manual_location(field_name: str, uri: str) -> tuple[str, str]:
    """Split a manual request's S3 URI; raise StorageError naming the field when it is invalid."""
    bucket, key = parse_s3_uri(uri)
    try:
        check_bucket_name(bucket)
        if key:
            check_key(key)
    except StorageError as error:
        raise InvalidKeyError(f"{field_name} {uri!r} is invalid: {error}") from error
    return bucket, key


def _plain_etag(etag: str) -> str:
    # HeadObject quotes ETags; event notifications do not.
    return etag.strip('"').lower()


def _folder_uri(uri: str) -> str:
    return uri if uri.endswith("/") else uri + "/"


def _subject(notification: Notification) -> str:
    if isinstance(notification, ObjectCreated):
        return s3_uri(notification.bucket, notification.key)
    if isinstance(notification, ManualRequest):
        return notification.input_uri
    if isinstance(notification, S3TestEvent):
        return f"s3:TestEvent for {notification.bucket}"
    if isinstance(notification, OtherS3Event):
        return notification.subject
    if isinstance(notification, MalformedRecord):
        return "invalid trigger record"
    return repr(notification)


def _log_summary(result: TriggerResult) -> None:
    counts = {kind: 0 for kind in OutcomeKind}
    for outcome in result.outcomes:
        counts[outcome.kind] += 1
    logger.info(
        "trigger handled: %d started, %d duplicate, %d skipped, %d failed",
        counts[OutcomeKind.STARTED],
        counts[OutcomeKind.DUPLICATE],
        counts[OutcomeKind.SKIPPED],
        counts[OutcomeKind.FAILED],
    )
