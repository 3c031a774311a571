"""The job table, the job-state function and the topic that announces each job's end."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aws_cdk import ArnFormat, Duration, RemovalPolicy, Stack
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda_destinations as destinations
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_sqs as sqs
from constructs import Construct, IConstruct

from infra import nag
from infra.config import DeploymentConfig, env_name
from infra.functions import python_function
from infra.storage import Storage
from prepflow.aws.dynamodb import table_definition
from prepflow.aws.logs import LOG_GROUP
from prepflow.aws.names import STATE_CHANGE_DETAIL_TYPE, STATE_CHANGE_SOURCE
from prepflow.jobs.template import REPORTS_PREFIX

JOB_STATE_HANDLER = "prepflow.aws.handlers.job_state_handler"
# EventBridge retries a failed delivery to the function this often, then sends the event to
# the rule's dead-letter queue.
STATE_EVENT_RETRY_ATTEMPTS = 8
_ATTRIBUTE_TYPES = {"S": dynamodb.AttributeType.STRING, "N": dynamodb.AttributeType.NUMBER}


class JobState(Construct):
    """Records job state changes in the table and publishes each job's end once.

    ``environment`` contains the variables of both functions, and this construct adds the table's
    and the topic's. ``self.environment`` is the result, which the trigger function uses.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: DeploymentConfig,
        code: Path,
        environment: dict[str, str],
        storage: Storage,
    ) -> None:
        super().__init__(scope, construct_id)
        settings = config.settings
        self.table = job_table(self, "Table", config)

        self.topic = sns.Topic(
            self,
            "Topic",
            topic_name=f"{config.app_prefix}-jobs",
            master_key=kms.Alias.from_alias_name(self, "SnsKey", "alias/aws/sns"),
            enforce_ssl=True,
        )
        if config.alarm_email:
            self.topic.add_subscription(subscriptions.EmailSubscription(config.alarm_email))

        self.environment = {
            **environment,
            env_name("jobs_table"): self.table.table_name,
            env_name("topic_arn"): self.topic.topic_arn,
        }
        # One queue for both ways an event can fail. EventBridge sends the event there when
        # delivery to the function fails after STATE_EVENT_RETRY_ATTEMPTS. Lambda sends its
        # invocation record (the event under "requestPayload") there when the function itself
        # still fails after Lambda's retries of the asynchronous invocation.
        self.dead_letter_queue = sqs.Queue(
            self,
            "DeadLetterQueue",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=Duration.days(14),
        )
        self.function = python_function(
            self,
            "Function",
            config=config,
            function_name=f"{config.app_prefix}-job-state",
            handler=JOB_STATE_HANDLER,
            code=code,
            environment=self.environment,
            timeout_seconds=config.job_state_timeout_seconds,
            on_failure=destinations.SqsDestination(self.dead_letter_queue),
        )
        self.table.grant_read_write_data(self.function)
        self.topic.grant_publish(self.function)
        self._grant_reports(storage)
        self.function.add_to_role_policy(
            iam.PolicyStatement(
                actions=["logs:DescribeLogStreams", "logs:GetLogEvents"],
                resources=[
                    Stack.of(self).format_arn(
                        service="logs",
                        resource="log-group",
                        resource_name=f"{LOG_GROUP}:*",
                        arn_format=ArnFormat.COLON_RESOURCE_NAME,
                    )
                ],
            )
        )

        self.rule = events.Rule(
            self,
            "Rule",
            description="SageMaker Processing job state changes of this deployment's jobs",
            event_pattern=events.EventPattern(
                source=[STATE_CHANGE_SOURCE],
                detail_type=[STATE_CHANGE_DETAIL_TYPE],
                detail={"ProcessingJobName": events.Match.prefix(f"{settings.job_name_prefix}-")},
            ),
            targets=[
                targets.LambdaFunction(
                    self.function,
                    retry_attempts=STATE_EVENT_RETRY_ATTEMPTS,
                    dead_letter_queue=self.dead_letter_queue,
                )
            ],
        )
        self._acknowledge_findings()

    def _grant_reports(self, storage: Storage) -> None:
        """Allow reading the jobs' reports: a job on several hosts is counted from them."""
        self.function.add_to_role_policy(
            iam.PolicyStatement(
                actions=["s3:GetObject"],
                resources=[storage.logs.arn_for_objects(f"{REPORTS_PREFIX}*")],
            )
        )
        self.function.add_to_role_policy(
            iam.PolicyStatement(
                actions=["s3:ListBucket"],
                resources=[storage.logs.bucket_arn],
                conditions={"StringLike": {"s3:prefix": [f"{REPORTS_PREFIX}*"]}},
            )
        )
        nag.acknowledge_wildcards(
            self,
            [nag.resource_pattern(storage.logs, f"/{REPORTS_PREFIX}*")],
            "Each job writes its reports under its own folder of the report prefix; the "
            "function reads those of a finished job to sum its hosts' row counts",
            kind="Resource",
        )

    def _acknowledge_findings(self) -> None:
        nag.acknowledge(
            self.dead_letter_queue,
            "AwsSolutions-SQS3",
            "This queue is the dead-letter queue of the state-change rule and the function's "
            "on-failure destination; cdk-nag recognises only queues named in another queue's "
            "redrive policy as dead-letter queues",
        )
        acknowledge_index_access(self, self.table)
        nag.acknowledge_wildcards(
            self,
            [nag.log_group_pattern(LOG_GROUP)],
            "The function reads the tail of a failed job's log, whose stream name SageMaker "
            "derives from the job name at run time",
            kind="Resource",
        )


def acknowledge_index_access(scope: IConstruct, table: dynamodb.Table) -> None:
    """Accept the ``<table>/index/*`` resource that ``grant_read_write_data`` adds to a
    function role under ``scope``."""
    nag.acknowledge_wildcards(
        scope,
        [nag.resource_pattern(table, "/index/*")],
        "The job store queries the table's jobs-by-created-at index; CDK's grant names the "
        "table's indexes with a wildcard, and this table has only that one",
        kind="Resource",
    )


def job_table(scope: Construct, construct_id: str, config: DeploymentConfig) -> dynamodb.Table:
    """Return the job table as ``prepflow.aws.dynamodb.table_definition`` describes it."""
    definition = table_definition(config.settings.table_name)
    types = {
        attribute["AttributeName"]: _ATTRIBUTE_TYPES[attribute["AttributeType"]]
        for attribute in definition["AttributeDefinitions"]
    }
    # The definition uses on-demand billing; Table's default is provisioned capacity.
    assert definition["BillingMode"] == "PAY_PER_REQUEST"
    table = dynamodb.Table(
        scope,
        construct_id,
        table_name=definition["TableName"],
        billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
        encryption=dynamodb.TableEncryption.AWS_MANAGED,
        point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
            point_in_time_recovery_enabled=True
        ),
        removal_policy=RemovalPolicy.RETAIN if config.retain_data else RemovalPolicy.DESTROY,
        **_keys(definition["KeySchema"], types),
    )
    for index in definition.get("GlobalSecondaryIndexes", []):
        assert index["Projection"]["ProjectionType"] == "ALL"
        table.add_global_secondary_index(
            index_name=index["IndexName"],
            projection_type=dynamodb.ProjectionType.ALL,
            **_keys(index["KeySchema"], types),
        )
    return table


def _keys(
    key_schema: list[dict[str, str]], types: dict[str, dynamodb.AttributeType]
) -> dict[str, Any]:
    roles = {"HASH": "partition_key", "RANGE": "sort_key"}
    return {
        roles[key["KeyType"]]: dynamodb.Attribute(
            name=key["AttributeName"], type=types[key["AttributeName"]]
        )
        for key in key_schema
    }
