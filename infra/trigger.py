"""Raw data in, jobs out: EventBridge rule -> SQS queue -> trigger function -> SageMaker.

The raw bucket sends its events to EventBridge (``Storage`` turns that on). EventBridge's
"Object Created" covers every way an object is created: PutObject, POST, CopyObject and
CompleteMultipartUpload, so the rule does not filter on the event's ``reason``. An optional
schedule sends the trigger function a reconcile request, which starts the jobs that a lost
event never started.
"""

from __future__ import annotations

from pathlib import Path

from aws_cdk import Duration, Stack
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda_destinations as destinations
from aws_cdk import aws_lambda_event_sources as event_sources
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra import nag
from infra.config import DeploymentConfig
from infra.functions import python_function
from infra.job_state import JobState, acknowledge_index_access
from infra.storage import Storage
from prepflow.orchestrator import MANIFEST_PREFIX

TRIGGER_HANDLER = "prepflow.aws.handlers.trigger_handler"
OBJECT_CREATED_DETAIL_TYPE = "Object Created"
# AWS recommends a visibility timeout of at least six times the function's timeout for an
# SQS event source ("Using Lambda with Amazon SQS" in the Lambda Developer Guide).
VISIBILITY_TIMEOUT_FACTOR = 6
DEAD_LETTER_RETENTION = Duration.days(14)
# EventBridge retries a failed delivery to the queue this often before it dead-letters it.
DELIVERY_RETRY_ATTEMPTS = 8
# The scheduled request (see prepflow.aws.handlers.parse_reconcile_request): every object
# under the input prefix, with the handler's defaults for the job limit and minimum age.
RECONCILE_REQUEST = {"reconcile": True}
SAGEMAKER_ACTIONS = (
    "sagemaker:CreateProcessingJob",
    "sagemaker:DescribeProcessingJob",
    "sagemaker:StopProcessingJob",
)


class Trigger(Construct):
    """Starts one processing job per new data object under the input prefix."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: DeploymentConfig,
        code: Path,
        storage: Storage,
        job_state: JobState,
        processing_role: iam.IRole,
    ) -> None:
        super().__init__(scope, construct_id)
        settings = config.settings

        self.dead_letter_queue = sqs.Queue(
            self,
            "DeadLetterQueue",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=DEAD_LETTER_RETENTION,
        )
        self.queue = sqs.Queue(
            self,
            "Queue",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            visibility_timeout=Duration.seconds(
                VISIBILITY_TIMEOUT_FACTOR * config.trigger_timeout_seconds
            ),
            dead_letter_queue=sqs.DeadLetterQueue(
                queue=self.dead_letter_queue, max_receive_count=config.max_receive_count
            ),
        )
        self.rule = events.Rule(
            self,
            "Rule",
            description="New data objects under the input prefix of the raw-data bucket",
            event_pattern=object_created_pattern(
                settings.buckets.raw,
                settings.input_prefix,
                settings.input_suffixes,
                marker=settings.marker,
            ),
            targets=[
                targets.SqsQueue(
                    self.queue,
                    dead_letter_queue=self.dead_letter_queue,
                    retry_attempts=DELIVERY_RETRY_ATTEMPTS,
                )
            ],
        )

        self.function = python_function(
            self,
            "Function",
            config=config,
            function_name=settings.trigger_function,
            handler=TRIGGER_HANDLER,
            code=code,
            environment=job_state.environment,
            timeout_seconds=config.trigger_timeout_seconds,
            reserved_concurrent_executions=config.trigger_reserved_concurrency,
            # Direct invokes (an S3 notification, a manual or scheduled request) that still
            # fail after Lambda's retries land in the dead-letter queue too.
            on_failure=destinations.SqsDestination(self.dead_letter_queue),
        )
        self.function.add_event_source(
            event_sources.SqsEventSource(
                self.queue,
                batch_size=config.trigger_batch_size,
                max_batching_window=Duration.seconds(config.trigger_batching_window_seconds),
                report_batch_item_failures=True,
            )
        )
        self.schedule = self._schedule(config)
        self._grant(config, storage, job_state, processing_role)
        self._acknowledge_findings(config, storage, job_state)

    def _acknowledge_findings(
        self, config: DeploymentConfig, storage: Storage, job_state: JobState
    ) -> None:
        settings = config.settings
        acknowledge_index_access(self, job_state.table)
        nag.acknowledge_wildcards(
            self,
            [
                nag.resource_pattern(storage.raw, f"/{settings.input_prefix}*"),
                nag.resource_pattern(storage.model_artifacts, f"/{MANIFEST_PREFIX}*"),
            ],
            "The function reads new objects under the input prefix and writes one manifest per "
            "job under the manifest prefix; the object names are known only at run time",
            kind="Resource",
        )
        nag.acknowledge_wildcards(
            self,
            [
                "arn:<AWS::Partition>:sagemaker:<AWS::Region>:<AWS::AccountId>:"
                f"processing-job/{settings.job_name_prefix}-*"
            ],
            "Job names are derived at run time from each object's idempotency key; the "
            "wildcard covers only names with this deployment's job-name prefix",
            kind="Resource",
        )

    def _schedule(self, config: DeploymentConfig) -> events.Rule | None:
        """Return the rule that sends the reconcile request, if the configuration has one."""
        if config.reconcile_schedule_minutes is None:
            return None
        return events.Rule(
            self,
            "Schedule",
            description="Scheduled reconcile: start jobs for input objects that have none",
            schedule=events.Schedule.rate(Duration.minutes(config.reconcile_schedule_minutes)),
            targets=[
                targets.LambdaFunction(
                    self.function,
                    event=events.RuleTargetInput.from_object(RECONCILE_REQUEST),
                    retry_attempts=DELIVERY_RETRY_ATTEMPTS,
                    dead_letter_queue=self.dead_letter_queue,
                )
            ],
        )

    def _grant(
        self,
        config: DeploymentConfig,
        storage: Storage,
        job_state: JobState,
        processing_role: iam.IRole,
    ) -> None:
        settings = config.settings
        self._grant_storage(config, storage)
        job_state.table.grant_read_write_data(self.function)
        job_state.topic.grant_publish(self.function)

        jobs_arn = Stack.of(self).format_arn(
            service="sagemaker",
            resource="processing-job",
            resource_name=f"{settings.job_name_prefix}-*",
        )
        self.function.add_to_role_policy(
            iam.PolicyStatement(actions=list(SAGEMAKER_ACTIONS), resources=[jobs_arn])
        )
        self.function.add_to_role_policy(
            iam.PolicyStatement(
                actions=["iam:PassRole"],
                resources=[processing_role.role_arn],
                conditions={"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}},
            )
        )

    def _grant_storage(self, config: DeploymentConfig, storage: Storage) -> None:
        """Allow reading the raw input prefix and writing manifests, and nothing else in S3."""
        input_prefix = config.settings.input_prefix
        # HeadObject needs s3:GetObject, and s3:GetObjectVersion when it names a version.
        self.function.add_to_role_policy(
            iam.PolicyStatement(
                actions=["s3:GetObject", "s3:GetObjectVersion"],
                resources=[storage.raw.arn_for_objects(f"{input_prefix}*")],
            )
        )
        # Reconcile and manual requests for a folder list the input prefix (ListObjectsV2).
        # NOTE: S3 returns 404 for HeadObject on a missing key only to a caller that may list
        # the bucket. Whether S3 applies this prefix condition to that check is not
        # documented, so an object deleted before its event is handled may give 403 instead.
        self.function.add_to_role_policy(
            iam.PolicyStatement(
                actions=["s3:ListBucket"],
                resources=[storage.raw.bucket_arn],
                conditions={"StringLike": {"s3:prefix": [f"{input_prefix}*"]}},
            )
        )
        self.function.add_to_role_policy(
            iam.PolicyStatement(
                actions=["s3:PutObject"],
                resources=[storage.model_artifacts.arn_for_objects(f"{MANIFEST_PREFIX}*")],
            )
        )


def object_created_pattern(
    bucket_name: str, input_prefix: str, suffixes: tuple[str, ...], *, marker: str = ""
) -> events.EventPattern:
    """Return the pattern of "Object Created" events of data objects under ``input_prefix``.

    With a ``marker`` (marker mode), objects of that file name match too: they start the jobs.

    EventBridge joins the conditions on one field with OR, so prefix and suffix are combined
    in one wildcard per suffix, such as ``input/*.csv``. Wildcards are case-sensitive, so
    each suffix is given in lower and upper case.
    """
    # NOTE: the orchestrator compares suffixes in lower case, so a mixed-case name such as
    # "data.Csv" would start a job locally, but this rule does not deliver it.
    prefix = _escape_wildcard(input_prefix)
    key_patterns = [
        {"wildcard": f"{prefix}*{_escape_wildcard(variant)}"}
        for suffix in suffixes
        for variant in dict.fromkeys((suffix.lower(), suffix.upper()))
    ]
    if marker:
        key_patterns.append({"wildcard": f"{prefix}*{_escape_wildcard(marker)}"})
    return events.EventPattern(
        source=["aws.s3"],
        detail_type=[OBJECT_CREATED_DETAIL_TYPE],
        detail={"bucket": {"name": [bucket_name]}, "object": {"key": key_patterns}},
    )


def _escape_wildcard(text: str) -> str:
    # In an EventBridge wildcard pattern, "*" and "\" are escaped with a backslash.
    return text.replace("\\", "\\\\").replace("*", "\\*")
