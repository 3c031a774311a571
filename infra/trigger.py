"""Raw data in, jobs out: EventBridge rule -> SQS queue -> trigger function -> SageMaker.

The raw bucket sends its events to EventBridge (``Storage`` turns that on). EventBridge's
"Object Created" covers every way an object is created: PutObject, POST, CopyObject and
CompleteMultipartUpload, so the rule does not filter on the event's ``reason``.
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

from infra.config import DeploymentConfig
from infra.functions import python_function
from infra.job_state import JobState
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
                settings.buckets.raw, settings.input_prefix, settings.input_suffixes
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
        self._grant(config, storage, job_state, processing_role)

    def _grant(
        self,
        config: DeploymentConfig,
        storage: Storage,
        job_state: JobState,
        processing_role: iam.IRole,
    ) -> None:
        settings = config.settings
        storage.raw.grant_read(self.function, f"{settings.input_prefix}*")
        storage.model_artifacts.grant_put(self.function, f"{MANIFEST_PREFIX}*")
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


def object_created_pattern(
    bucket_name: str, input_prefix: str, suffixes: tuple[str, ...]
) -> events.EventPattern:
    """Return the pattern of "Object Created" events of data objects under ``input_prefix``.

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
    return events.EventPattern(
        source=["aws.s3"],
        detail_type=[OBJECT_CREATED_DETAIL_TYPE],
        detail={"bucket": {"name": [bucket_name]}, "object": {"key": key_patterns}},
    )


def _escape_wildcard(text: str) -> str:
    # In an EventBridge wildcard pattern, "*" and "\" are escaped with a backslash.
    return text.replace("\\", "\\\\").replace("*", "\\*")
