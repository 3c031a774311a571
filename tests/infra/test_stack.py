"""The synthesized stack of every environment, checked resource by resource."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aws_cdk.assertions import Match, Template
from infra.config import ENVIRONMENTS, DeploymentConfig
from infra.storage import ACCESS_LOGS_PREFIX

from prepflow.aws.doctor import REQUIRED_VARIABLES
from prepflow.aws.dynamodb import table_definition
from prepflow.aws.logs import LOG_GROUP

pytestmark = pytest.mark.parametrize("environment", ENVIRONMENTS)


def resources(template: Template, resource_type: str) -> dict[str, dict[str, Any]]:
    return template.find_resources(resource_type)


def function_named(template: Template, name: str) -> dict[str, Any]:
    found = resources(template, "AWS::Lambda::Function")
    matches = [r for r in found.values() if r["Properties"].get("FunctionName") == name]
    assert len(matches) == 1, f"expected one function named {name}, found {len(matches)}"
    return matches[0]


def logical_id(template: Template, resource_type: str, **properties: Any) -> str:
    found = template.find_resources(resource_type, {"Properties": properties})
    assert len(found) == 1, f"expected one {resource_type} with {properties}, found {len(found)}"
    return next(iter(found))


def policy_statements(template: Template) -> list[dict[str, Any]]:
    statements = []
    for policy in resources(template, "AWS::IAM::Policy").values():
        statements += policy["Properties"]["PolicyDocument"]["Statement"]
    return statements


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def test_buckets_named_from_settings(
    environment: str, templates: dict[str, Template], configs: dict[str, DeploymentConfig]
) -> None:
    names = {
        r["Properties"]["BucketName"]
        for r in resources(templates[environment], "AWS::S3::Bucket").values()
    }
    assert names == set(vars(configs[environment].settings.buckets).values())


def test_buckets_encrypted_private_tls_only(
    environment: str, templates: dict[str, Template]
) -> None:
    template = templates[environment]
    buckets = resources(template, "AWS::S3::Bucket")
    assert len(buckets) == 5
    tls_only = {
        policy["Properties"]["Bucket"]["Ref"]
        for policy in resources(template, "AWS::S3::BucketPolicy").values()
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
        if statement["Effect"] == "Deny"
        and statement.get("Condition") == {"Bool": {"aws:SecureTransport": "false"}}
    }
    for bucket_id, bucket in buckets.items():
        properties = bucket["Properties"]
        rules = properties["BucketEncryption"]["ServerSideEncryptionConfiguration"]
        assert rules[0]["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
        assert properties["PublicAccessBlockConfiguration"] == {
            "BlockPublicAcls": True,
            "BlockPublicPolicy": True,
            "IgnorePublicAcls": True,
            "RestrictPublicBuckets": True,
        }
        assert bucket_id in tls_only, f"{properties['BucketName']} has no TLS-only policy"


def test_raw_bucket_versioned_and_sends_events(
    environment: str, templates: dict[str, Template], configs: dict[str, DeploymentConfig]
) -> None:
    templates[environment].has_resource_properties(
        "AWS::S3::Bucket",
        {
            "BucketName": configs[environment].settings.buckets.raw,
            "VersioningConfiguration": {"Status": "Enabled"},
            "NotificationConfiguration": {"EventBridgeConfiguration": {"EventBridgeEnabled": True}},
            "LifecycleConfiguration": {
                "Rules": Match.array_with(
                    [Match.object_like({"NoncurrentVersionExpiration": Match.any_value()})]
                )
            },
        },
    )


def test_access_logs_go_to_logs_bucket(
    environment: str, templates: dict[str, Template], configs: dict[str, DeploymentConfig]
) -> None:
    template = templates[environment]
    logs_name = configs[environment].settings.buckets.logs
    logs_id = logical_id(template, "AWS::S3::Bucket", BucketName=logs_name)
    for bucket in resources(template, "AWS::S3::Bucket").values():
        properties = bucket["Properties"]
        if properties["BucketName"] == logs_name:
            assert "LoggingConfiguration" not in properties
            continue
        assert properties["LoggingConfiguration"] == {
            "DestinationBucketName": {"Ref": logs_id},
            "LogFilePrefix": f"{ACCESS_LOGS_PREFIX}{properties['BucketName']}/",
        }


def test_removal_policy_by_environment(environment: str, templates: dict[str, Template]) -> None:
    expected = "Retain" if environment == "prod" else "Delete"
    template = templates[environment]
    for resource_type in ("AWS::S3::Bucket", "AWS::DynamoDB::Table"):
        for resource in resources(template, resource_type).values():
            assert resource["DeletionPolicy"] == expected


def test_rule_matches_prefix_and_suffixes(
    environment: str, templates: dict[str, Template], configs: dict[str, DeploymentConfig]
) -> None:
    settings = configs[environment].settings
    rules = templates[environment].find_resources(
        "AWS::Events::Rule",
        {"Properties": {"EventPattern": {"source": ["aws.s3"], "detail-type": ["Object Created"]}}},
    )
    assert len(rules) == 1
    pattern = next(iter(rules.values()))["Properties"]["EventPattern"]
    assert pattern["detail"]["bucket"] == {"name": [settings.buckets.raw]}
    keys = [condition["wildcard"] for condition in pattern["detail"]["object"]["key"]]
    for suffix in settings.input_suffixes:
        assert f"{settings.input_prefix}*{suffix}" in keys
    assert all(key.startswith(settings.input_prefix) for key in keys)
    # Every way of creating an object counts, so the rule must not filter on the reason.
    assert "reason" not in pattern["detail"]


def test_queue_has_dead_letter_queue(
    environment: str, templates: dict[str, Template], configs: dict[str, DeploymentConfig]
) -> None:
    template = templates[environment]
    queues = resources(template, "AWS::SQS::Queue")
    redriven = [
        q["Properties"]["RedrivePolicy"]
        for q in queues.values()
        if "RedrivePolicy" in q["Properties"]
    ]
    assert len(redriven) == 1
    assert redriven[0]["maxReceiveCount"] == configs[environment].max_receive_count
    dead_letter_id = redriven[0]["deadLetterTargetArn"]["Fn::GetAtt"][0]
    assert dead_letter_id in queues
    for queue in queues.values():
        assert queue["Properties"]["SqsManagedSseEnabled"] is True


def test_trigger_consumes_queue_with_batching(
    environment: str, templates: dict[str, Template], configs: dict[str, DeploymentConfig]
) -> None:
    config = configs[environment]
    template = templates[environment]
    trigger_id = logical_id(
        template, "AWS::Lambda::Function", FunctionName=config.settings.trigger_function
    )
    mappings = resources(template, "AWS::Lambda::EventSourceMapping")
    assert len(mappings) == 1
    mapping = next(iter(mappings.values()))["Properties"]
    assert mapping["FunctionName"] == {"Ref": trigger_id}
    assert mapping["BatchSize"] == config.trigger_batch_size
    assert mapping["MaximumBatchingWindowInSeconds"] == config.trigger_batching_window_seconds
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    queue_id = mapping["EventSourceArn"]["Fn::GetAtt"][0]
    assert "RedrivePolicy" in resources(template, "AWS::SQS::Queue")[queue_id]["Properties"]


def test_trigger_function_configuration(
    environment: str, templates: dict[str, Template], configs: dict[str, DeploymentConfig]
) -> None:
    config = configs[environment]
    function = function_named(templates[environment], config.settings.trigger_function)
    properties = function["Properties"]
    assert properties["Handler"] == "prepflow.aws.handlers.trigger_handler"
    assert properties["Runtime"] == "python3.13"
    assert properties["ReservedConcurrentExecutions"] == config.trigger_reserved_concurrency
    variables = properties["Environment"]["Variables"]
    missing = [name for name in REQUIRED_VARIABLES if name not in variables]
    assert missing == []
    assert "PREPFLOW_TOPIC_ARN" in variables
    assert variables["APP_PREFIX"] == config.app_prefix


def test_job_table_mirrors_definition(
    environment: str, templates: dict[str, Template], configs: dict[str, DeploymentConfig]
) -> None:
    definition = table_definition(configs[environment].settings.table_name)
    tables = resources(templates[environment], "AWS::DynamoDB::Table")
    assert len(tables) == 1
    properties = next(iter(tables.values()))["Properties"]
    assert properties["TableName"] == definition["TableName"]
    assert properties["BillingMode"] == definition["BillingMode"]
    assert properties["KeySchema"] == definition["KeySchema"]
    assert sorted(properties["AttributeDefinitions"], key=json.dumps) == sorted(
        definition["AttributeDefinitions"], key=json.dumps
    )
    assert properties["GlobalSecondaryIndexes"] == definition["GlobalSecondaryIndexes"]
    assert properties["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}


def test_job_state_rule_limited_to_prefix(
    environment: str, templates: dict[str, Template], configs: dict[str, DeploymentConfig]
) -> None:
    config = configs[environment]
    template = templates[environment]
    function_id = logical_id(
        template, "AWS::Lambda::Function", FunctionName=f"{config.app_prefix}-job-state"
    )
    template.has_resource_properties(
        "AWS::Events::Rule",
        {
            "EventPattern": {
                "source": ["aws.sagemaker"],
                "detail-type": ["SageMaker Processing Job State Change"],
                "detail": {
                    "ProcessingJobName": [{"prefix": f"{config.settings.job_name_prefix}-"}]
                },
            },
            "Targets": [Match.object_like({"Arn": {"Fn::GetAtt": [function_id, "Arn"]}})],
        },
    )


def test_topics_encrypted(environment: str, templates: dict[str, Template]) -> None:
    topics = resources(templates[environment], "AWS::SNS::Topic")
    assert len(topics) == 2  # job notifications and alarms
    for topic in topics.values():
        assert "KmsMasterKeyId" in topic["Properties"]


def test_no_full_access_managed_policy(environment: str, templates: dict[str, Template]) -> None:
    text = json.dumps(resources(templates[environment], "AWS::IAM::Role"))
    assert "FullAccess" not in text


def test_pass_role_scoped_to_processing_role(
    environment: str, templates: dict[str, Template], configs: dict[str, DeploymentConfig]
) -> None:
    template = templates[environment]
    role_id = logical_id(
        template, "AWS::IAM::Role", RoleName=f"{configs[environment].app_prefix}-processing"
    )
    passing = [s for s in policy_statements(template) if "iam:PassRole" in as_list(s["Action"])]
    assert passing, "no statement allows iam:PassRole"
    for statement in passing:
        assert statement["Resource"] == {"Fn::GetAtt": [role_id, "Arn"]}
        assert statement["Condition"] == {
            "StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}
        }


def test_sagemaker_actions_scoped_to_job_prefix(
    environment: str, templates: dict[str, Template], configs: dict[str, DeploymentConfig]
) -> None:
    prefix = configs[environment].settings.job_name_prefix
    statements = [
        s
        for s in policy_statements(templates[environment])
        if any(action.startswith("sagemaker:") for action in as_list(s["Action"]))
    ]
    assert statements, "no statement allows a SageMaker action"
    for statement in statements:
        for resource in as_list(statement["Resource"]):
            assert resource["Fn::Join"][1][-1] == f":processing-job/{prefix}-*", resource


def test_log_permissions_name_known_log_groups(
    environment: str, templates: dict[str, Template], configs: dict[str, DeploymentConfig]
) -> None:
    config = configs[environment]
    function_groups = {
        f"/aws/lambda/{config.settings.trigger_function}",
        f"/aws/lambda/{config.app_prefix}-job-state",
    }
    named = []
    for statement in policy_statements(templates[environment]):
        if not any(action.startswith("logs:") for action in as_list(statement["Action"])):
            continue
        arn_end = statement["Resource"]["Fn::Join"][1][-1]
        group = arn_end.removeprefix(":log-group:").removesuffix(":*")
        assert arn_end == f":log-group:{group}:*"
        named.append(group)
    # The processing role writes the SageMaker group and the job-state function reads it.
    # Each function writes its own group.
    assert sorted(named) == sorted([LOG_GROUP, LOG_GROUP, *function_groups])


def test_functions_dead_letter_failed_invokes(
    environment: str, templates: dict[str, Template], configs: dict[str, DeploymentConfig]
) -> None:
    config = configs[environment]
    template = templates[environment]
    invoke_configs = {
        c["Properties"]["FunctionName"]["Ref"]: c["Properties"]
        for c in resources(template, "AWS::Lambda::EventInvokeConfig").values()
    }
    queues = resources(template, "AWS::SQS::Queue")
    for name in (config.settings.trigger_function, f"{config.app_prefix}-job-state"):
        function_id = logical_id(template, "AWS::Lambda::Function", FunctionName=name)
        destination = invoke_configs[function_id]["DestinationConfig"]["OnFailure"]["Destination"]
        queue_id = destination["Fn::GetAtt"][0]
        assert queue_id in queues, name
        # The destination is a dead-letter queue, not the trigger's source queue (the only
        # queue with a redrive policy).
        assert "RedrivePolicy" not in queues[queue_id]["Properties"]


def test_state_rule_dead_letters_to_function_queue(
    environment: str, templates: dict[str, Template], configs: dict[str, DeploymentConfig]
) -> None:
    config = configs[environment]
    template = templates[environment]
    function_id = logical_id(
        template, "AWS::Lambda::Function", FunctionName=f"{config.app_prefix}-job-state"
    )
    (invoke_config,) = [
        c["Properties"]
        for c in resources(template, "AWS::Lambda::EventInvokeConfig").values()
        if c["Properties"]["FunctionName"] == {"Ref": function_id}
    ]
    rules = template.find_resources(
        "AWS::Events::Rule", {"Properties": {"EventPattern": {"source": ["aws.sagemaker"]}}}
    )
    (rule,) = rules.values()
    (target,) = rule["Properties"]["Targets"]
    assert (
        target["DeadLetterConfig"]["Arn"]
        == invoke_config["DestinationConfig"]["OnFailure"]["Destination"]
    )
