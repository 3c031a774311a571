"""The Lambda entry points: ``trigger_handler`` starts jobs, ``job_state_handler`` records ends.

``trigger_handler`` accepts every shape ``prepflow.events`` parses, and a scheduled request:

- An SQS batch (the deployment's path, S3 -> EventBridge -> SQS). Each message is handled on
  its own, and only the ones whose failure a new delivery may resolve come back in
  ``batchItemFailures``, so SQS redelivers those alone. When every message fails,
  Powertools' batch utility raises instead and the whole batch is redelivered. With
  ``PREPFLOW_BATCH_WINDOW_SECONDS`` above 0 (per-batch mode, which the deployment sets from
  the queue's batching window), the objects of all messages go into one job instead, split
  into jobs of at most ``PREPFLOW_BATCH_MAX_OBJECTS``; a message comes back in
  ``batchItemFailures`` when one of its objects could not be put in a job.
- A direct S3 notification, EventBridge "Object Created" event or SNS event. Any failed
  record raises ``TriggerFailedError``, so Lambda's retries and the dead-letter queue see it.
- A manual request ``{"input_data_path": "s3://<raw bucket>/...", "output_data_path": ...,
  "request_id": ...}``. It returns ``{"statusCode": 200, "body": "<JSON>"}`` with
  ``message``, ``job_name``, ``job_arn``, ``input_path``, ``output_path`` and
  ``console_url``. A failure, such as an input outside the raw-data bucket, raises.
- A scheduled request, which starts jobs for the objects under a prefix of the raw-data bucket
  that have no submitted job yet: the AWS twin of the local watcher's reconcile. It is either
  an EventBridge "Scheduled Event" (source ``aws.events``), which covers the whole input
  prefix with the defaults below, or this JSON, given as the schedule's input::

      {"reconcile": true, "prefix": "input/2024/", "max_jobs": 100, "min_age_minutes": 15}

  ``prefix`` (default ``PREPFLOW_INPUT_PREFIX``) must lie inside the input prefix.
  ``max_jobs`` (1 to 1,000) bounds the jobs one request starts. The listing also stops
  30 seconds before the invocation would time out, and the next run goes on. Objects
  modified less than ``min_age_minutes`` ago are left to their own event, which may still be
  on its way. It returns counts and the started job names, and raises ``TriggerFailedError``
  after the listing if any object failed.

``job_state_handler`` consumes EventBridge "SageMaker Processing Job State Change" events.
It ignores jobs whose name does not start with ``PREPFLOW_JOB_NAME_PREFIX`` and a hyphen,
and jobs missing from the job store. Events repeat and arrive out of order. The job store's
compare-and-set decides which event changes the record, so a terminal status is never
overwritten. The SNS message of a job's end is sent once: the delivery that claims the
record's ``notified_at`` publishes, and a failed publish releases the claim, so EventBridge's
retry sends it. Jobs the orchestrator fails before SageMaker runs them (a rejected request,
no capacity after ``PREPFLOW_SUBMIT_ATTEMPTS``) are announced by the trigger function the
same way. A job that failed or stopped gets the tail of its CloudWatch log in its record.

Logs are JSON lines through Powertools' Logger, whose logger is the package's own
(``prepflow``), so every ``prepflow.*`` module logs through it with the same correlation keys
(``job_name``, ``bucket`` and ``object_key``). Metrics go out in CloudWatch's embedded metric
format, one count per ``Metric``, with the namespace and dimensions of
``prepflow.aws.names``; the deployment's alarms and dashboard read them there.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from prepflow.aws.logs import log_tail
from prepflow.aws.names import (
    DEPLOYMENT_DIMENSION,
    METRICS_NAMESPACE,
    SERVICE,
    STATE_CHANGE_DETAIL_TYPE,
    STATE_CHANGE_SOURCE,
    Metric,
)
from prepflow.aws.notify import JobNotifier, console_url
from prepflow.aws.sagemaker import description_from_response
from prepflow.errors import (
    ConfigurationError,
    EventError,
    ObjectNotFoundError,
    PrepflowError,
    StorageError,
    TriggerFailedError,
)
from prepflow.events import (
    ManualRequest,
    ObjectCreated,
    build_s3_notification,
    parse_trigger_event,
)
from prepflow.jobs.backend import JobBackend
from prepflow.jobs.sharding import COUNT_FIELDS, instance_count, merged_counts
from prepflow.jobs.spec import ROLE_ARN_PATTERN, JobDescription, JobStatus
from prepflow.jobs.template import deployed_step
from prepflow.jobstore.base import JobRecord, JobStore, utcnow
from prepflow.naming import object_idempotency_key
from prepflow.orchestrator import Orchestrator, Outcome, OutcomeKind, TriggerResult
from prepflow.settings import Settings, load_settings
from prepflow.storage.base import ObjectInfo, check_key

if TYPE_CHECKING:
    from prepflow.aws.clients import AwsClients

SCHEDULE_SOURCE = "aws.events"
SCHEDULE_DETAIL_TYPE = "Scheduled Event"
RECONCILE_FIELDS = frozenset({"reconcile", "prefix", "max_jobs", "min_age_minutes"})
DEFAULT_RECONCILE_MAX_JOBS = 100
RECONCILE_MAX_JOBS_LIMIT = 1_000
DEFAULT_RECONCILE_MIN_AGE_MINUTES = 15
# A scheduled request stops listing when less time than this remains in its invocation, so it
# ends with a summary instead of a timeout. One object may take a few seconds: HeadObject, a
# job-store read, and CreateProcessingJob with its throttling retries.
RECONCILE_TIME_MARGIN_MS = 30_000
# Newest job records read to match objects without a version id or sequencer (an unversioned
# S3 bucket lists neither) by S3 URI and ETag.
RECONCILE_RECORD_LIMIT = 10_000

# The Logger owns the stdlib logger "prepflow": records of prepflow.* modules propagate to
# its JSON handler, and a filter that Powertools (3.37) adds to the root logger's handlers
# keeps them from being written a second time by the Lambda runtime.
logger = Logger(service=SERVICE)
metrics = Metrics(namespace=METRICS_NAMESPACE, service=SERVICE)


class _ObjectState(StrEnum):
    """A listed object's need for a job, as a scheduled request decides it."""

    WITH_JOB = "with job"
    MISSING = "missing"
    UNDECIDED = "undecided"


@dataclass
class Runtime:
    """The settings and adapters of both functions, built once per cold start."""

    settings: Settings
    orchestrator: Orchestrator
    jobs: JobStore
    backend: JobBackend
    # None when PREPFLOW_TOPIC_ARN is not set; the job-state function then fails loudly.
    notifier: JobNotifier | None
    logs: Any  # a boto3 CloudWatch Logs client


def build_runtime(settings: Settings | None = None, clients: AwsClients | None = None) -> Runtime:
    """Wire the AWS adapters from the settings (default: the environment).

    Raises ConfigurationError for settings a deployment cannot run with, such as a missing
    SAGEMAKER_ROLE_ARN or a region without a known processing image.
    """
    from prepflow.aws.clients import aws_clients
    from prepflow.aws.dynamodb import DynamoJobStore
    from prepflow.aws.images import image_uri
    from prepflow.aws.s3 import S3ObjectStore
    from prepflow.aws.sagemaker import SageMakerBackend

    settings = settings or load_settings()
    if settings.sagemaker_role_arn is None:
        raise ConfigurationError(
            "SAGEMAKER_ROLE_ARN is not set; set it to the IAM role that SageMaker assumes "
            "for processing jobs"
        )
    if settings.processing_image_uri is None and settings.step_script_uri is None:
        raise ConfigurationError(
            "neither PROCESSING_IMAGE_URI nor PREPFLOW_STEP_SCRIPT_URI is set: the built-in "
            "step needs prepflow's image, and the prebuilt scikit-learn image runs only a "
            "script; set PROCESSING_IMAGE_URI to the deployment's ECR image, or "
            "PREPFLOW_STEP_SCRIPT_URI to a script in the model-artifacts bucket"
        )
    # build_spec reads settings.image_uri, which is the local image unless this is set.
    settings = settings.model_copy(update={"processing_image_uri": image_uri(settings)})
    clients = clients or aws_clients(settings)

    jobs = DynamoJobStore(clients.client("dynamodb"), settings.table_name)
    backend = SageMakerBackend(clients.client("sagemaker"))
    orchestrator = Orchestrator(
        settings=settings,
        store=S3ObjectStore(clients.client("s3")),
        backend=backend,
        jobs=jobs,
        step=deployed_step(settings),
    )
    notifier = (
        JobNotifier(clients.client("sns"), settings.topic_arn) if settings.topic_arn else None
    )
    return Runtime(settings, orchestrator, jobs, backend, notifier, clients.client("logs"))


_RUNTIME: Runtime | None = None


def current_runtime() -> Runtime:
    """Return this execution environment's Runtime, building it on the first invocation."""
    global _RUNTIME
    if _RUNTIME is None:
        _RUNTIME = build_runtime()
    return _RUNTIME


# -- trigger function --------------------------------------------------------------------------


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def trigger_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """Lambda entry point of the trigger function; see the module docstring."""
    runtime = current_runtime()
    _tag_metrics(runtime.settings)
    return handle_trigger(event, runtime, context)


def handle_trigger(
    event: Mapping[str, Any], runtime: Runtime, context: LambdaContext | None = None
) -> dict[str, Any]:
    """Handle one invocation of the trigger function with ``runtime``'s adapters."""
    if not isinstance(event, Mapping):
        raise EventError(f"the trigger event must be a JSON object, got {type(event).__name__}")
    request = parse_reconcile_request(event, runtime.settings)
    if request is not None:
        return reconcile(runtime, request, context)
    if _is_sqs_batch(event):
        return _handle_sqs_batch(event, runtime, context)

    result = _run_orchestrator(event, event, runtime)
    _announce_final_failures(result, runtime)
    if result.failures:
        raise TriggerFailedError(result.failures)
    if "input_data_path" in event:
        return _manual_response(result, runtime)
    return _summary(result)


def _handle_sqs_batch(
    event: Mapping[str, Any], runtime: Runtime, context: LambdaContext | None
) -> dict[str, Any]:
    if runtime.settings.batch_window_seconds > 0:
        return _handle_sqs_batch_as_one(event, runtime)

    def handle_record(record: SQSRecord) -> list[str]:
        # A batch of one keeps the message id on each outcome.
        result = _run_orchestrator({"Records": [record.raw_event]}, record.body, runtime)
        _announce_final_failures(result, runtime)
        # A failure the orchestrator recorded for good (a request SageMaker rejects, or no
        # capacity after PREPFLOW_SUBMIT_ATTEMPTS) is acknowledged: a new delivery of the
        # message would change nothing.
        if result.retryable_failures:
            raise TriggerFailedError(result.retryable_failures)
        return result.job_names

    response = process_partial_response(
        event=dict(event),
        record_handler=handle_record,
        processor=BatchProcessor(event_type=EventType.SQS),
        context=context,
    )
    return dict(response)


def _handle_sqs_batch_as_one(event: Mapping[str, Any], runtime: Runtime) -> dict[str, Any]:
    """Start one job for the objects of every message of the batch (per-batch mode).

    A message is reported in ``batchItemFailures`` when one of its objects is in no job and
    a redelivery may change that; the others are acknowledged. When every message fails, it
    raises instead, as Powertools' batch utility does, so the whole batch is redelivered.
    """
    result = _run_orchestrator(event, event, runtime)
    _announce_final_failures(result, runtime)
    failed = result.failed_message_ids
    message_ids = [record.get("messageId") for record in event.get("Records", [])]
    if failed and set(failed) >= set(message_ids):
        raise TriggerFailedError(result.retryable_failures)
    return {"batchItemFailures": [{"itemIdentifier": message_id} for message_id in failed]}


def _announce_final_failures(result: TriggerResult, runtime: Runtime) -> None:
    """Announce the jobs the orchestrator marked Failed before SageMaker ever ran them
    (a rejected request, or no capacity after PREPFLOW_SUBMIT_ATTEMPTS): no state-change
    event will come for them.
    """
    if runtime.notifier is None:
        return
    for outcome in result.failures:
        if outcome.retry or outcome.job_name is None:
            continue
        record = runtime.jobs.find(outcome.job_name)
        if record is not None and record.status.is_terminal:
            notify_once(runtime.jobs, runtime.notifier, record)


def _run_orchestrator(
    payload: Mapping[str, Any], message: Mapping[str, Any] | str, runtime: Runtime
) -> TriggerResult:
    """Hand ``payload`` to the orchestrator with the objects of ``message`` as log keys."""
    keys = _correlation_keys(message)
    logger.append_keys(**keys)
    try:
        result = runtime.orchestrator.handle(payload)
        _count_outcomes(result)
        if result.job_names:
            logger.info(
                "jobs for this message: %s",
                ", ".join(result.job_names),
                extra={"job_name": _one_or_list(result.job_names)},
            )
        return result
    finally:
        logger.remove_keys(keys)


def _correlation_keys(message: Mapping[str, Any] | str) -> dict[str, Any]:
    """Return the bucket and key (or the lists of them) that ``message`` names."""
    try:
        notifications = [n for m in parse_trigger_event(message) for n in m.notifications]
    except EventError:
        # The orchestrator reports the same error as the message's failure.
        return {}
    buckets: list[str] = []
    keys: list[str] = []
    for notification in notifications:
        if isinstance(notification, ObjectCreated):
            buckets.append(notification.bucket)
            keys.append(notification.key)
        elif isinstance(notification, ManualRequest):
            bucket, _, key = notification.input_uri.removeprefix("s3://").partition("/")
            buckets.append(bucket)
            keys.append(key)
    if not keys:
        return {}
    return {"bucket": _one_or_list(sorted(set(buckets))), "object_key": _one_or_list(keys)}


def _one_or_list(values: list[str]) -> str | list[str]:
    return values[0] if len(values) == 1 else values


def _manual_response(result: TriggerResult, runtime: Runtime) -> dict[str, Any]:
    # A manual request is one notification; without a failure, it started or found a job.
    (outcome,) = result.outcomes
    record = runtime.jobs.get(str(outcome.job_name))
    if outcome.kind == OutcomeKind.DUPLICATE and record.submitted_at is None:
        # The job of an earlier, identical request ended without being accepted (SageMaker
        # rejected its request, or capacity never came): the same request cannot start it.
        raise TriggerFailedError([outcome])
    started = outcome.kind == OutcomeKind.STARTED
    body = {
        "message": "processing job started"
        if started
        else "processing job already started for this request",
        "job_name": record.job_name,
        "job_arn": job_arn(runtime.settings, record.job_name),
        "input_path": outcome.subject,
        "output_path": record.outputs[0] if record.outputs else None,
        "console_url": console_url(runtime.settings.region, record.job_name),
    }
    return {"statusCode": 200, "body": json.dumps(body)}


def job_arn(settings: Settings, job_name: str) -> str:
    """Return the ARN of a processing job of this deployment.

    The partition and account are those of SAGEMAKER_ROLE_ARN: SageMaker can only assume a
    role passed from the job's own account. NOTE: SageMaker itself sometimes writes the name
    in lower case in ARNs it returns; this ARN keeps the job name as it is.
    """
    role = settings.sagemaker_role_arn
    if role is None or not ROLE_ARN_PATTERN.match(role):
        raise ConfigurationError(
            "SAGEMAKER_ROLE_ARN is not set; it names the account of the processing jobs"
        )
    partition, account = role.split(":")[1], role.split(":")[4]
    return f"arn:{partition}:sagemaker:{settings.region}:{account}:processing-job/{job_name}"


def _summary(result: TriggerResult) -> dict[str, Any]:
    return {
        "started": [o.job_name for o in result.outcomes if o.kind == OutcomeKind.STARTED],
        "duplicate": [o.job_name for o in result.outcomes if o.kind == OutcomeKind.DUPLICATE],
        "skipped": [
            {"subject": o.subject, "reason": o.reason}
            for o in result.outcomes
            if o.kind == OutcomeKind.SKIPPED
        ],
    }


def _count_outcomes(result: TriggerResult) -> None:
    counts = Counter(o.kind for o in result.outcomes)
    _add_metric(Metric.JOBS_STARTED, counts[OutcomeKind.STARTED])
    _add_metric(Metric.DUPLICATE_EVENTS, counts[OutcomeKind.DUPLICATE])
    _add_metric(Metric.EVENTS_SKIPPED, counts[OutcomeKind.SKIPPED])
    _add_metric(Metric.TRIGGER_FAILURES, counts[OutcomeKind.FAILED])


def _tag_metrics(settings: Settings) -> None:
    # Deployments in one account and region share the namespace, so every metric carries
    # its deployment's APP_PREFIX, which the deployment's alarms select. Powertools warns when
    # a dimension is set twice, so it is set once per execution environment.
    if metrics.default_dimensions.get(DEPLOYMENT_DIMENSION) != settings.app_prefix:
        metrics.set_default_dimensions(**{DEPLOYMENT_DIMENSION: settings.app_prefix})


def _add_metric(metric: Metric, value: int) -> None:
    if value:
        metrics.add_metric(name=metric.value, unit=MetricUnit.Count, value=value)


def _is_sqs_batch(event: Mapping[str, Any]) -> bool:
    records = event.get("Records")
    return (
        isinstance(records, list)
        and bool(records)
        and all(isinstance(r, Mapping) and r.get("eventSource") == "aws:sqs" for r in records)
    )


# -- scheduled reconcile -----------------------------------------------------------------------


@dataclass(frozen=True)
class ReconcileRequest:
    """The prefix and minimum age of the objects a scheduled request examines, and its job limit."""

    prefix: str
    max_jobs: int = DEFAULT_RECONCILE_MAX_JOBS
    min_age: timedelta = timedelta(minutes=DEFAULT_RECONCILE_MIN_AGE_MINUTES)


@dataclass
class ReconcileSummary:
    started: list[str] = field(default_factory=list)
    # Objects that already have a job, or a record that another delivery is working on.
    with_job: int = 0
    skipped: int = 0
    too_recent: int = 0
    # Objects without a version id or sequencer that match no record among the newest
    # RECONCILE_RECORD_LIMIT ones, while the store contains more: they may have an older job.
    undecided: int = 0
    failed: list[Outcome] = field(default_factory=list)
    # True when max_jobs or the time left stopped the listing; the next run goes on.
    truncated: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "started": self.started,
            "with_job": self.with_job,
            "skipped": self.skipped,
            "too_recent": self.too_recent,
            "undecided": self.undecided,
            "failed": [{"subject": o.subject, "reason": o.reason} for o in self.failed],
            "truncated": self.truncated,
        }


def parse_reconcile_request(
    event: Mapping[str, Any], settings: Settings
) -> ReconcileRequest | None:
    """Return the scheduled request in ``event``, or None if it is another kind of event.

    Raises EventError for a request with unknown fields or values out of range.
    """
    if event.get("source") == SCHEDULE_SOURCE and event.get("detail-type") == SCHEDULE_DETAIL_TYPE:
        return ReconcileRequest(prefix=settings.input_prefix)
    if "reconcile" not in event:
        return None
    unknown = sorted(set(event) - RECONCILE_FIELDS)
    if unknown or event["reconcile"] is not True:
        raise EventError(
            f"invalid scheduled request: unknown fields {unknown}, reconcile "
            f"{event['reconcile']!r}; expected {{'reconcile': true}} with optional 'prefix', "
            "'max_jobs' and 'min_age_minutes'"
        )
    prefix = event.get("prefix", settings.input_prefix)
    if not isinstance(prefix, str) or not prefix.startswith(settings.input_prefix):
        raise EventError(
            f"scheduled request prefix {prefix!r} is outside the input prefix "
            f"{settings.input_prefix!r} of the raw-data bucket; only objects there start jobs"
        )
    if prefix:
        try:
            check_key(prefix)
        except StorageError as error:
            raise EventError(f"scheduled request prefix {prefix!r} is invalid: {error}") from error
    max_jobs = _whole_number(
        event, "max_jobs", DEFAULT_RECONCILE_MAX_JOBS, 1, RECONCILE_MAX_JOBS_LIMIT
    )
    min_age = _whole_number(
        event, "min_age_minutes", DEFAULT_RECONCILE_MIN_AGE_MINUTES, 0, 7 * 24 * 60
    )
    return ReconcileRequest(prefix, max_jobs, timedelta(minutes=min_age))


def _whole_number(event: Mapping[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = event.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise EventError(
            f"scheduled request field {name!r} is {value!r}; expected a whole number from "
            f"{low} to {high}"
        )
    return value


def reconcile(
    runtime: Runtime, request: ReconcileRequest, context: LambdaContext | None = None
) -> dict[str, Any]:
    """Start jobs for the objects under ``request.prefix`` that have no submitted job yet.

    An object counts as having a job when its idempotency key (version id or sequencer, as
    its event would give it) names a submitted or ended record. An object without either is
    matched by S3 URI and ETag against the newest job records. The listing stops at
    ``request.max_jobs`` started jobs, or when ``context`` reports less than
    RECONCILE_TIME_MARGIN_MS left. Raises TriggerFailedError after the listing if any object
    failed.

    NOTE: each run lists from the start of the prefix. A prefix with more objects than one
    invocation can examine never gets past its first ones, so schedule narrower prefixes then.
    """
    orchestrator = runtime.orchestrator
    bucket = runtime.settings.buckets.raw
    recorded = _RecordedInputs(runtime.jobs)
    summary = ReconcileSummary()
    now = utcnow()
    logger.info("reconcile started", extra={"bucket": bucket, "prefix": request.prefix})

    for info in orchestrator.store.list_objects(bucket, request.prefix):
        if len(summary.started) >= request.max_jobs or _out_of_time(context):
            summary.truncated = True
            break
        if orchestrator.skip_reason(info.bucket, info.key, info.size) is not None:
            summary.skipped += 1
        elif now - info.last_modified < request.min_age:
            summary.too_recent += 1
        else:
            _reconcile_object(runtime, recorded, info, summary)

    logger.info("reconcile finished", extra={"bucket": bucket, **summary.as_dict()})
    _add_metric(Metric.JOBS_STARTED, len(summary.started))
    _add_metric(Metric.TRIGGER_FAILURES, len(summary.failed))
    if summary.failed:
        raise TriggerFailedError(summary.failed)
    return summary.as_dict()


def _out_of_time(context: LambdaContext | None) -> bool:
    if context is None:
        return False
    return context.get_remaining_time_in_millis() < RECONCILE_TIME_MARGIN_MS


def _reconcile_object(
    runtime: Runtime, recorded: _RecordedInputs, info: ObjectInfo, summary: ReconcileSummary
) -> None:
    try:
        state = _job_state(runtime, recorded, info)
        if state == _ObjectState.WITH_JOB:
            summary.with_job += 1
            return
        if state == _ObjectState.UNDECIDED:
            summary.undecided += 1
            return
        result = runtime.orchestrator.handle(_notification_for(info, runtime.settings.region))
    except ObjectNotFoundError:
        logger.info("skipped %s: deleted while the reconcile ran", info.uri)
        summary.skipped += 1
        return
    except PrepflowError as error:
        logger.error("reconcile failed for %s: %s", info.uri, error)
        summary.failed.append(Outcome(OutcomeKind.FAILED, info.uri, reason=str(error)))
        return
    for outcome in result.outcomes:
        if outcome.kind == OutcomeKind.STARTED and outcome.job_name:
            summary.started.append(outcome.job_name)
        elif outcome.kind == OutcomeKind.FAILED:
            summary.failed.append(outcome)
        elif outcome.kind == OutcomeKind.DUPLICATE:
            summary.with_job += 1
        else:
            summary.skipped += 1


def _job_state(runtime: Runtime, recorded: _RecordedInputs, info: ObjectInfo) -> _ObjectState:
    identity = info
    if not (info.version_id or info.sequencer):
        # ListObjectsV2 returns no version ids; HeadObject does, in a versioned bucket.
        identity = runtime.orchestrator.store.head_object(info.bucket, info.key)
    if identity.version_id or identity.sequencer:
        key = object_idempotency_key(
            info.bucket, info.key, version_id=identity.version_id, sequencer=identity.sequencer
        )
        record = runtime.jobs.find_by_key(key)
        # A record neither submitted nor ended is submitted again, as on a redelivery.
        if record is not None and (record.submitted_at or record.status.is_terminal):
            return _ObjectState.WITH_JOB
        return _ObjectState.MISSING

    # An unversioned S3 bucket: the event's key held the sequencer, which no listing gives.
    if recorded.contains(identity):
        return _ObjectState.WITH_JOB
    bare_key = object_idempotency_key(info.bucket, info.key, version_id=None, sequencer=None)
    if runtime.jobs.find_by_key(bare_key) is not None:
        return _ObjectState.WITH_JOB
    if not recorded.complete:
        logger.warning(
            "reconcile left %s alone: it has no version id, and its job may be older than the "
            "newest %d records read; enable versioning on the raw-data bucket for exact matches",
            info.uri,
            RECONCILE_RECORD_LIMIT,
        )
        return _ObjectState.UNDECIDED
    return _ObjectState.MISSING


def _notification_for(info: ObjectInfo, region: str) -> dict[str, Any]:
    """Return the S3 notification a PUT of ``info`` would have sent, as the watcher does."""
    return build_s3_notification(
        bucket=info.bucket,
        key=info.key,
        size=info.size,
        etag=info.etag.strip('"'),
        sequencer=info.sequencer or "",
        region=region,
        version_id=info.version_id,
        event_time=info.last_modified,
        configuration_id="prepflow-reconcile",
    )


class _RecordedInputs:
    """The (S3 URI, ETag) pairs of the newest job records, read on first use."""

    def __init__(self, jobs: JobStore) -> None:
        self._jobs = jobs
        self._pairs: set[tuple[str, str]] | None = None
        self._complete = True

    def contains(self, info: ObjectInfo) -> bool:
        return (info.uri, _plain_etag(info.etag)) in self._load()

    @property
    def complete(self) -> bool:
        """Whether the pairs cover every record in the store."""
        self._load()
        return self._complete

    def _load(self) -> set[tuple[str, str]]:
        if self._pairs is None:
            records = self._jobs.list_jobs(limit=RECONCILE_RECORD_LIMIT)
            self._complete = len(records) < RECONCILE_RECORD_LIMIT
            self._pairs = {
                (uri, _plain_etag(etag)) for r in records for uri, etag in r.input_etags.items()
            }
        return self._pairs


def _plain_etag(etag: str) -> str:
    # HeadObject and ListObjectsV2 quote ETags; event notifications do not.
    return etag.strip('"').lower()


# -- job-state function ------------------------------------------------------------------------


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def job_state_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """Lambda entry point of the job-state function; see the module docstring."""
    runtime = current_runtime()
    _tag_metrics(runtime.settings)
    return handle_job_state(event, runtime)


def handle_job_state(event: Mapping[str, Any], runtime: Runtime) -> dict[str, Any]:
    """Record one state-change event; publish the job's notification if it just ended.

    Raises EventError for an event of another kind, ConfigurationError without a topic, and
    NotificationError when SNS rejects the message (EventBridge then retries the event).
    """
    detail = _state_change_detail(event)
    name = str(detail.get("ProcessingJobName", ""))
    if not name.startswith(runtime.settings.job_name_prefix + "-"):
        logger.info(
            "ignored state change of job %s: its name does not start with %s-",
            name,
            runtime.settings.job_name_prefix,
        )
        _add_metric(Metric.EVENTS_SKIPPED, 1)
        return {"job_name": name, "action": "ignored"}
    notifier = runtime.notifier
    if notifier is None:
        raise ConfigurationError(
            "PREPFLOW_TOPIC_ARN is not set; the job-state function needs the SNS topic for "
            "job notifications"
        )

    logger.append_keys(job_name=name)
    # The detail has DescribeProcessingJob's field names, with times in epoch milliseconds.
    description = description_from_response(detail)
    record = runtime.jobs.find(name)
    if record is None:
        logger.warning(
            "state change %s of job %s, which is not in the job store", description.status, name
        )
        _add_metric(Metric.EVENTS_SKIPPED, 1)
        return {"job_name": name, "action": "unknown job"}
    logger.append_keys(**_record_keys(record))

    updated, changed = _record(runtime, record, description)
    if changed and updated.status.is_terminal:
        _add_metric(_END_METRICS[updated.status], 1)
    # A record that ended but was never announced (its publish failed, and EventBridge
    # retried the event) is announced now.
    if updated.status.is_terminal and notify_once(runtime.jobs, notifier, updated):
        return {"job_name": name, "status": str(updated.status), "action": "notified"}
    if not changed:
        logger.info(
            "state change %s of job %s changed nothing; it is %s",
            description.status,
            name,
            updated.status,
        )
        _add_metric(Metric.DUPLICATE_EVENTS, 1)
        return {"job_name": name, "status": str(updated.status), "action": "unchanged"}
    return {"job_name": name, "status": str(updated.status), "action": "recorded"}


def notify_once(jobs: JobStore, notifier: JobNotifier, record: JobRecord) -> bool:
    """Publish the end of the job once: claim it on the record, then publish.

    The claim is a compare-and-set on the record, so of several deliveries of one event
    exactly one publishes. If SNS fails, the claim is released and the error raised, so the
    retried event publishes. Returns False when another delivery already claimed it.
    """
    claimed = [False]

    def claim(stored: JobRecord) -> dict[str, Any]:
        claimed[0] = stored.notified_at is None
        return {"notified_at": utcnow()} if claimed[0] else {}

    jobs.modify(record.job_name, claim)
    if not claimed[0]:
        return False
    try:
        notifier.publish(record)
    except PrepflowError:
        logger.exception("notification of job %s (%s) failed", record.job_name, record.status)
        jobs.update(record.job_name, notified_at=None)
        raise
    return True


_END_METRICS = {
    JobStatus.COMPLETED: Metric.JOBS_COMPLETED,
    JobStatus.FAILED: Metric.JOBS_FAILED,
    JobStatus.STOPPED: Metric.JOBS_STOPPED,
}


def _record(
    runtime: Runtime, record: JobRecord, description: JobDescription
) -> tuple[JobRecord, bool]:
    """Apply the description; a job that failed or stopped gets its log tail with it.

    A completed job on several instances gets the sum of its hosts' row counts, read from
    their report files, in place of the counts in the one ExitMessage.
    """
    changes: dict[str, Any] = {}
    if (
        description.status == JobStatus.COMPLETED
        and not record.status.is_terminal
        and instance_count(record.request) > 1
    ):
        changes.update(_merged_counts(runtime, record))
    ends_badly = description.status in (JobStatus.FAILED, JobStatus.STOPPED)
    if ends_badly and not record.status.is_terminal:
        try:
            changes["log_tail"] = log_tail(runtime.logs, record.job_name)
        except PrepflowError as error:
            # The status and the notification matter more than the log lines.
            logger.warning("recording job %s without its log tail: %s", record.job_name, error)
    return runtime.jobs.record_description(description, **changes)


def _merged_counts(runtime: Runtime, record: JobRecord) -> dict[str, int | None]:
    """Return the job's row counts summed over its hosts' reports; None each when unreadable."""
    # The job-state function's role may list and read the report prefix of the logs bucket
    # (infra/job_state.py); a report elsewhere (a manual output location) stays unreadable.
    try:
        return merged_counts(runtime.orchestrator.store, record.request)
    except PrepflowError as error:
        logger.warning("row counts of job %s stay unknown: %s", record.job_name, error)
        return dict.fromkeys(COUNT_FIELDS)


def _state_change_detail(event: Mapping[str, Any]) -> Mapping[str, Any]:
    if not isinstance(event, Mapping):
        raise EventError(
            f"the state-change event must be a JSON object, got {type(event).__name__}"
        )
    detail = event.get("detail")
    if (
        event.get("source") != STATE_CHANGE_SOURCE
        or event.get("detail-type") != STATE_CHANGE_DETAIL_TYPE
        or not isinstance(detail, Mapping)
    ):
        raise EventError(
            f"expected an EventBridge {STATE_CHANGE_DETAIL_TYPE!r} event from "
            f"{STATE_CHANGE_SOURCE}, got source {event.get('source')!r} and detail-type "
            f"{event.get('detail-type')!r}; check the rule's event pattern"
        )
    return detail


def _record_keys(record: JobRecord) -> dict[str, Any]:
    if len(record.inputs) != 1:
        return {}
    bucket, _, key = record.inputs[0].removeprefix("s3://").partition("/")
    return {"bucket": bucket, "object_key": key}
