"""Least privilege of every role, decided by evaluating the synthesized policies."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aws_cdk.assertions import Template
from infra.config import ENVIRONMENTS, DeploymentConfig

from prepflow.jobs.template import REJECTED_PREFIX
from prepflow.orchestrator import MANIFEST_PREFIX
from tests.infra.policy import (
    ACCOUNT,
    PARTITION,
    REGION,
    PolicyEvaluator,
    UnsupportedPolicyError,
    wildcard_match,
)

SAGEMAKER = {"iam:PassedToService": "sagemaker.amazonaws.com"}


def object_arn(bucket: str, key: str) -> str:
    return f"arn:{PARTITION}:s3:::{bucket}/{key}"


def job_arn(job_name: str) -> str:
    return f"arn:{PARTITION}:sagemaker:{REGION}:{ACCOUNT}:processing-job/{job_name}"


def log_stream_arn(group: str) -> str:
    return f"arn:{PARTITION}:logs:{REGION}:{ACCOUNT}:log-group:{group}:log-stream:2024/01/01/x"


@pytest.fixture(scope="module")
def evaluators(templates: dict[str, Template]) -> dict[str, PolicyEvaluator]:
    return {env: PolicyEvaluator(template.to_json()) for env, template in templates.items()}


class Deployment:
    """The roles and names of one environment's template."""

    def __init__(self, evaluator: PolicyEvaluator, config: DeploymentConfig) -> None:
        settings = config.settings
        self.policy = evaluator
        self.settings = settings
        self.buckets = settings.buckets
        self.trigger = evaluator.role_of_function(settings.trigger_function)
        self.job_state = evaluator.role_of_function(f"{config.app_prefix}-job-state")
        self.processing = evaluator.role_named(f"{config.app_prefix}-processing")

    def may(self, role: str, action: str, resource: str, **context: str) -> bool:
        return self.policy.allows(role, action, resource, context)


@pytest.fixture(params=ENVIRONMENTS)
def deployment(
    request: pytest.FixtureRequest,
    evaluators: dict[str, PolicyEvaluator],
    configs: dict[str, DeploymentConfig],
) -> Deployment:
    return Deployment(evaluators[request.param], configs[request.param])


# -- the trigger function ----------------------------------------------------------------------


def test_trigger_reads_only_input_prefix(deployment: Deployment) -> None:
    raw = deployment.buckets.raw
    inside = object_arn(raw, f"{deployment.settings.input_prefix}x.csv")
    assert deployment.may(deployment.trigger, "s3:GetObject", inside)
    assert deployment.may(deployment.trigger, "s3:GetObjectVersion", inside)
    assert not deployment.may(deployment.trigger, "s3:GetObject", object_arn(raw, "other/x.csv"))
    assert not deployment.may(
        deployment.trigger, "s3:GetObject", object_arn(deployment.buckets.processed, "output/x")
    )


def test_trigger_lists_only_input_prefix(deployment: Deployment) -> None:
    bucket = f"arn:{PARTITION}:s3:::{deployment.buckets.raw}"
    prefix = deployment.settings.input_prefix
    assert deployment.may(deployment.trigger, "s3:ListBucket", bucket, **{"s3:prefix": prefix})
    assert deployment.may(
        deployment.trigger, "s3:ListBucket", bucket, **{"s3:prefix": f"{prefix}2024/"}
    )
    assert not deployment.may(
        deployment.trigger, "s3:ListBucket", bucket, **{"s3:prefix": "other/"}
    )
    assert not deployment.may(deployment.trigger, "s3:ListBucket", bucket)


def test_trigger_writes_only_manifests(deployment: Deployment) -> None:
    artifacts = deployment.buckets.model_artifacts
    manifest = object_arn(artifacts, f"{MANIFEST_PREFIX}prepflow-abc.json")
    assert deployment.may(deployment.trigger, "s3:PutObject", manifest)
    assert not deployment.may(deployment.trigger, "s3:PutObject", object_arn(artifacts, "x"))
    processed = object_arn(deployment.buckets.processed, f"{deployment.settings.output_prefix}x")
    assert not deployment.may(deployment.trigger, "s3:PutObject", processed)
    raw = object_arn(deployment.buckets.raw, f"{deployment.settings.input_prefix}x.csv")
    assert not deployment.may(deployment.trigger, "s3:PutObject", raw)
    assert not deployment.may(deployment.trigger, "s3:DeleteObject", manifest)


def test_trigger_jobs_limited_to_prefix(deployment: Deployment) -> None:
    prefix = deployment.settings.job_name_prefix
    for action in ("CreateProcessingJob", "DescribeProcessingJob", "StopProcessingJob"):
        assert deployment.may(deployment.trigger, f"sagemaker:{action}", job_arn(f"{prefix}-abc"))
        assert not deployment.may(deployment.trigger, f"sagemaker:{action}", job_arn("other-abc"))
    assert not deployment.may(
        deployment.trigger, "sagemaker:CreateTrainingJob", job_arn(f"{prefix}-abc")
    )


def test_trigger_passes_only_processing_role(deployment: Deployment) -> None:
    processing = deployment.policy.role_arn(deployment.processing)
    trigger = deployment.policy.role_arn(deployment.trigger)
    assert deployment.may(deployment.trigger, "iam:PassRole", processing, **SAGEMAKER)
    assert not deployment.may(deployment.trigger, "iam:PassRole", processing)
    assert not deployment.may(
        deployment.trigger,
        "iam:PassRole",
        processing,
        **{"iam:PassedToService": "lambda.amazonaws.com"},
    )
    assert not deployment.may(deployment.trigger, "iam:PassRole", trigger, **SAGEMAKER)


# -- the job-state function --------------------------------------------------------------------


def test_job_state_reaches_table_and_topic(deployment: Deployment) -> None:
    table = f"arn:{PARTITION}:dynamodb:{REGION}:{ACCOUNT}:table/{deployment.settings.table_name}"
    assert deployment.may(deployment.job_state, "dynamodb:UpdateItem", table)
    topics = deployment.policy.of_type("AWS::SNS::Topic")
    jobs_topic = next(
        deployment.policy.resolve({"Ref": logical_id})
        for logical_id, topic in topics.items()
        if topic["Properties"]["TopicName"].endswith("-jobs")
    )
    assert deployment.may(deployment.job_state, "sns:Publish", jobs_topic)
    assert not deployment.may(deployment.job_state, "sns:Publish", jobs_topic + "-other")


def test_job_state_no_storage_or_jobs(deployment: Deployment) -> None:
    prefix = deployment.settings.job_name_prefix
    raw = object_arn(deployment.buckets.raw, f"{deployment.settings.input_prefix}x.csv")
    processing = deployment.policy.role_arn(deployment.processing)
    assert not deployment.may(deployment.job_state, "s3:GetObject", raw)
    assert not deployment.may(
        deployment.job_state, "sagemaker:CreateProcessingJob", job_arn(f"{prefix}-abc")
    )
    assert not deployment.may(deployment.job_state, "iam:PassRole", processing, **SAGEMAKER)


def test_job_state_reads_only_reports(deployment: Deployment) -> None:
    logs = deployment.buckets.logs
    bucket = f"arn:{PARTITION}:s3:::{logs}"
    report = object_arn(logs, "reports/prepflowdev-a-1/report-algo-2.json")
    assert deployment.may(deployment.job_state, "s3:GetObject", report)
    assert deployment.may(
        deployment.job_state, "s3:ListBucket", bucket, **{"s3:prefix": "reports/j/"}
    )
    assert not deployment.may(deployment.job_state, "s3:PutObject", report)
    assert not deployment.may(deployment.job_state, "s3:GetObject", object_arn(logs, "logs/j/x"))
    assert not deployment.may(
        deployment.job_state, "s3:ListBucket", bucket, **{"s3:prefix": "access-logs/"}
    )


def test_functions_write_own_logs_only(deployment: Deployment) -> None:
    trigger_group = f"/aws/lambda/{deployment.settings.trigger_function}"
    job_state_group = f"/aws/lambda/{deployment.settings.app_prefix}-job-state"
    for role, own, other in (
        (deployment.trigger, trigger_group, job_state_group),
        (deployment.job_state, job_state_group, trigger_group),
    ):
        assert deployment.may(role, "logs:PutLogEvents", log_stream_arn(own))
        assert not deployment.may(role, "logs:PutLogEvents", log_stream_arn(other))
        assert not deployment.may(role, "logs:PutLogEvents", log_stream_arn("/aws/lambda/x"))
        assert not deployment.may(role, "logs:CreateLogGroup", log_stream_arn(own))


def test_function_roles_no_managed_policy(deployment: Deployment) -> None:
    assert deployment.policy.managed_policy_arns(deployment.trigger) == []
    assert deployment.policy.managed_policy_arns(deployment.job_state) == []
    assert deployment.trigger != deployment.job_state


# -- the processing role -----------------------------------------------------------------------


def test_processing_reads_input_writes_output(deployment: Deployment) -> None:
    settings = deployment.settings
    raw_input = object_arn(deployment.buckets.raw, f"{settings.input_prefix}x.csv")
    output = object_arn(deployment.buckets.processed, f"{settings.output_prefix}job/x.csv")
    rejected = object_arn(deployment.buckets.processed, f"{REJECTED_PREFIX}job/rejected.csv")
    assert deployment.may(deployment.processing, "s3:GetObject", raw_input)
    assert deployment.may(deployment.processing, "s3:PutObject", output)
    assert deployment.may(deployment.processing, "s3:PutObject", rejected)
    assert not deployment.may(deployment.processing, "s3:PutObject", raw_input)
    assert not deployment.may(deployment.processing, "s3:DeleteObject", raw_input)


# -- the whole template ------------------------------------------------------------------------


def test_nothing_deletes_raw_data(deployment: Deployment) -> None:
    raw_object = object_arn(deployment.buckets.raw, f"{deployment.settings.input_prefix}x.csv")
    for role in deployment.policy.of_type("AWS::IAM::Role"):
        for action in ("s3:DeleteObject", "s3:DeleteObjectVersion"):
            assert not deployment.may(role, action, raw_object), f"{role} may {action}"
    for policy in deployment.policy.of_type("AWS::S3::BucketPolicy").values():
        allowing = [
            s for s in policy["Properties"]["PolicyDocument"]["Statement"] if s["Effect"] == "Allow"
        ]
        assert not deployment.policy.decide(allowing, "s3:DeleteObject", raw_object, {})


def test_no_full_access_anywhere(templates: dict[str, Template]) -> None:
    for environment, template in templates.items():
        assert "FullAccess" not in json.dumps(template.to_json()), environment


# -- the evaluator itself ----------------------------------------------------------------------


def evaluator_with(*statements: dict[str, Any]) -> tuple[PolicyEvaluator, str]:
    template = {
        "Resources": {
            "Data": {"Type": "AWS::S3::Bucket", "Properties": {"BucketName": "data"}},
            "Role": {"Type": "AWS::IAM::Role", "Properties": {}},
            "Policy": {
                "Type": "AWS::IAM::Policy",
                "Properties": {
                    "Roles": [{"Ref": "Role"}],
                    "PolicyDocument": {"Statement": list(statements)},
                },
            },
        }
    }
    return PolicyEvaluator(template), "Role"


def test_evaluator_resolves_join_and_getatt() -> None:
    policy, role = evaluator_with(
        {
            "Effect": "Allow",
            "Action": "s3:Get*",
            "Resource": {"Fn::Join": ["", [{"Fn::GetAtt": ["Data", "Arn"]}, "/in/*"]]},
        }
    )
    assert policy.allows(role, "s3:GetObject", "arn:aws:s3:::data/in/a.csv")
    assert policy.allows(role, "S3:getobject", "arn:aws:s3:::data/in/a.csv")
    assert not policy.allows(role, "s3:GetObject", "arn:aws:s3:::data/out/a.csv")
    assert not policy.allows(role, "s3:PutObject", "arn:aws:s3:::data/in/a.csv")


def test_evaluator_deny_wins() -> None:
    policy, role = evaluator_with(
        {"Effect": "Allow", "Action": "s3:*", "Resource": "*"},
        {"Effect": "Deny", "NotAction": "s3:Get*", "NotResource": "arn:aws:s3:::data/keep/*"},
    )
    assert policy.allows(role, "s3:GetObject", "arn:aws:s3:::data/x")
    assert policy.allows(role, "s3:DeleteObject", "arn:aws:s3:::data/keep/x")
    assert not policy.allows(role, "s3:DeleteObject", "arn:aws:s3:::data/x")


def test_evaluator_conditions() -> None:
    policy, role = evaluator_with(
        {
            "Effect": "Allow",
            "Action": "s3:ListBucket",
            "Resource": "arn:aws:s3:::data",
            "Condition": {"StringLike": {"s3:prefix": ["in/*"]}},
        }
    )
    assert policy.allows(role, "s3:ListBucket", "arn:aws:s3:::data", {"s3:prefix": "in/"})
    assert not policy.allows(role, "s3:ListBucket", "arn:aws:s3:::data", {"s3:prefix": "out/"})
    assert not policy.allows(role, "s3:ListBucket", "arn:aws:s3:::data")


def test_evaluator_rejects_unknown_operator() -> None:
    policy, role = evaluator_with(
        {
            "Effect": "Allow",
            "Action": "s3:GetObject",
            "Resource": "*",
            "Condition": {"NumericLessThan": {"s3:max-keys": "10"}},
        }
    )
    with pytest.raises(UnsupportedPolicyError, match="NumericLessThan"):
        policy.allows(role, "s3:GetObject", "arn:aws:s3:::data/x")


def test_wildcard_match_single_character() -> None:
    assert wildcard_match("a?c", "abc")
    assert not wildcard_match("a?c", "abbc")
    assert wildcard_match("a.*", "a.b.c")
    assert not wildcard_match("a.c", "abc")
