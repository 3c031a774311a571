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

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from prepflow import naming
from prepflow.errors import (
    CapacityError,
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
from prepflow.jobs.spec import JobStatus
from prepflow.jobs.template import StepTemplate, build_spec
from prepflow.jobstore.base import JobRecord, JobStore, utcnow
from prepflow.settings import Settings
from prepflow.storage.base import (
    ObjectInfo,
    ObjectStore,
    folder_prefix,
    parse_s3_uri,
    relative_key,
    s3_uri,
)

logger = logging.getLogger(__name__)

MANIFEST_PREFIX = "manifests/"


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

    def handle(self, payload: Mapping[str, Any] | str | bytes) -> TriggerResult:
        """Process every notification of a trigger event; a bad one fails alone.

        Raises EventError only when the payload as a whole has no known shape.
        """
        result = TriggerResult()
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
                result.outcomes.append(self._handle_one(notification, message.message_id))
        _log_summary(result)
        return result

    def skip_reason(self, bucket: str, key: str, size: int | None) -> str | None:
        """Return why an object starts no job, or None if it should be processed."""
        if any(location.contains(bucket, key) for location in self._outputs):
            return "the object lies in one of prepflow's output locations"
        if not self._watched.contains(bucket, key):
            return f"the object is outside the watched location {self._watched.uri}"
        if key.endswith("/"):
            return "the object is a folder placeholder"
        if not key.lower().endswith(self.settings.input_suffixes):
            return f"the file type is not one of {', '.join(self.settings.input_suffixes)}"
        if size == 0:
            return "the object is empty (0 bytes)"
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

        key = naming.object_idempotency_key(
            event.bucket, event.key, version_id=event.version_id, sequencer=event.sequencer
        )
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
        bucket, key = parse_s3_uri(request.input_uri)
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
            if self.skip_reason(info.bucket, info.key, info.size) is None
        ]
        if not objects:
            raise StorageError(
                f"no data objects ({', '.join(self.settings.input_suffixes)}) found at {uri}"
            )
        return objects, prefix

    def _check_manual_output(self, output_uri: str) -> None:
        bucket, prefix = parse_s3_uri(output_uri)
        location = Location(bucket, prefix if prefix.endswith("/") or not prefix else prefix + "/")
        if location.overlaps(self._watched):
            raise RecursiveOutputError(
                f"output_data_path {output_uri} overlaps the watched input location "
                f"{self._watched.uri}: its outputs would start more jobs; choose another path"
            )

    def _find_submitted(self, idempotency_key: str, subject: str) -> Outcome | None:
        return _duplicate_outcome(self.jobs.find_by_key(idempotency_key), subject)

    def _start(
        self,
        name: str,
        idempotency_key: str,
        objects: list[ObjectInfo],
        prefix_uri: str,
        output_uri: str,
        subject: str,
    ) -> Outcome:
        manifest = self._write_manifest(name, prefix_uri, objects)
        spec = build_spec(
            self.settings, self.step, name=name, manifest_uri=manifest, output_uri=output_uri
        )
        record, created = self.jobs.create(
            JobRecord(
                job_name=name,
                idempotency_key=idempotency_key,
                inputs=[o.uri for o in objects],
                input_etags={o.uri: o.etag for o in objects},
                outputs=[output_uri],
                manifest_uri=manifest,
                request=spec.to_request(),
            )
        )
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

    def _write_manifest(self, name: str, prefix_uri: str, objects: list[ObjectInfo]) -> str:
        bucket = self.settings.buckets.model_artifacts
        key = f"{MANIFEST_PREFIX}{name}.manifest"
        prefix_key = parse_s3_uri(prefix_uri)[1]
        relative = [relative_key(info.key, prefix_key) for info in objects]
        self.store.put_manifest(bucket, key, prefix_uri, relative)
        return s3_uri(bucket, key)

    def _default_output(self, name: str) -> str:
        return s3_uri(self.settings.buckets.processed, f"{self.settings.output_prefix}{name}/")


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
