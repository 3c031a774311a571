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
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra.config import DeploymentConfig, env_name
from infra.functions import python_function
from prepflow.aws.dynamodb import table_definition
from prepflow.aws.handlers import STATE_CHANGE_DETAIL_TYPE, STATE_CHANGE_SOURCE
from prepflow.aws.logs import LOG_GROUP

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
        self.function = python_function(
            self,
            "Function",
            config=config,
            function_name=f"{config.app_prefix}-job-state",
            handler=JOB_STATE_HANDLER,
            code=code,
            environment=self.environment,
            timeout_seconds=config.job_state_timeout_seconds,
        )
        self.table.grant_read_write_data(self.function)
        self.topic.grant_publish(self.function)
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

        self.dead_letter_queue = sqs.Queue(
            self,
            "DeadLetterQueue",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=Duration.days(14),
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
