"""Alarms, the alarm topic, the error-log metric filter and the dashboard."""

from __future__ import annotations

import io
import json
import logging
from dataclasses import dataclass
from typing import Any

import pytest
from aws_cdk.assertions import Template
from infra.config import ENVIRONMENTS, DeploymentConfig

from prepflow.aws import handlers
from prepflow.aws.names import (
    ERROR_LOGS_METRIC,
    LOG_FUNCTION_DIMENSION,
    METRICS_NAMESPACE,
    STATE_CHANGE_DETAIL_TYPE,
    STATE_CHANGE_SOURCE,
    Metric,
    metric_dimensions,
)
from prepflow.settings import Settings
from tests.infra.policy import PolicyEvaluator

parametrized = pytest.mark.parametrize("environment", ENVIRONMENTS)


def resources(template: Template, resource_type: str) -> dict[str, dict[str, Any]]:
    return template.find_resources(resource_type)


def function_id(template: Template, name: str) -> str:
    found = template.find_resources("AWS::Lambda::Function", {"Properties": {"FunctionName": name}})
    assert len(found) == 1, f"expected one function named {name}"
    return next(iter(found))


def alarm_topic_id(template: Template, config: DeploymentConfig) -> str:
    found = template.find_resources(
        "AWS::SNS::Topic", {"Properties": {"TopicName": f"{config.app_prefix}-alarms"}}
    )
    assert len(found) == 1
    return next(iter(found))


def alarm_metric(alarm: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    """Return the namespace, name and dimensions of an alarm's single metric."""
    properties = alarm["Properties"]
    if "Metrics" in properties:
        (query,) = properties["Metrics"]
        metric = query["MetricStat"]["Metric"]
    else:
        metric = properties
    dimensions = {d["Name"]: d["Value"] for d in metric.get("Dimensions", [])}
    return metric["Namespace"], metric["MetricName"], dimensions


def dead_letter_queue_ids(template: Template) -> set[str]:
    """Return every queue that receives failed messages or events, wherever it is configured."""
    found = set()
    for queue in resources(template, "AWS::SQS::Queue").values():
        redrive = queue["Properties"].get("RedrivePolicy")
        if redrive:
            found.add(redrive["deadLetterTargetArn"]["Fn::GetAtt"][0])
    for config in resources(template, "AWS::Lambda::EventInvokeConfig").values():
        found.add(
            config["Properties"]["DestinationConfig"]["OnFailure"]["Destination"]["Fn::GetAtt"][0]
        )
    for rule in resources(template, "AWS::Events::Rule").values():
        for target in rule["Properties"]["Targets"]:
            if "DeadLetterConfig" in target:
                found.add(target["DeadLetterConfig"]["Arn"]["Fn::GetAtt"][0])
    return found


@parametrized
def test_every_alarm_notifies_topic(
    environment: str, templates: dict[str, Template], configs: dict[str, DeploymentConfig]
) -> None:
    template = templates[environment]
    topic_id = alarm_topic_id(template, configs[environment])
    alarms = resources(template, "AWS::CloudWatch::Alarm")
    assert len(alarms) == 6
    for alarm in alarms.values():
        properties = alarm["Properties"]
        assert properties["AlarmActions"] == [{"Ref": topic_id}]
        assert properties["TreatMissingData"] == "notBreaching"
        assert properties["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
        assert properties["Threshold"] == 1


@parametrized
def test_alarms_on_function_errors(
    environment: str, templates: dict[str, Template], configs: dict[str, DeploymentConfig]
) -> None:
    config = configs[environment]
    template = templates[environment]
    watched = {
        dimensions["FunctionName"]["Ref"]
        for namespace, name, dimensions in map(
            alarm_metric, resources(template, "AWS::CloudWatch::Alarm").values()
        )
        if (namespace, name) == ("AWS/Lambda", "Errors")
    }
    assert watched == {
        function_id(template, config.settings.trigger_function),
        function_id(template, f"{config.app_prefix}-job-state"),
    }


@parametrized
def test_alarm_on_every_dead_letter_queue(environment: str, templates: dict[str, Template]) -> None:
    template = templates[environment]
    queues = dead_letter_queue_ids(template)
    assert len(queues) == 2  # the trigger's and the job-state function's
    watched = set()
    for alarm in resources(template, "AWS::CloudWatch::Alarm").values():
        namespace, name, dimensions = alarm_metric(alarm)
        if (namespace, name) == ("AWS/SQS", "ApproximateNumberOfMessagesVisible"):
            assert alarm["Properties"]["Statistic"] == "Maximum"
            watched.add(dimensions["QueueName"]["Fn::GetAtt"][0])
    assert watched == queues


@parametrized
def test_alarm_on_failed_jobs(
    environment: str, templates: dict[str, Template], configs: dict[str, DeploymentConfig]
) -> None:
    metrics = [
        alarm_metric(a)
        for a in resources(templates[environment], "AWS::CloudWatch::Alarm").values()
    ]
    expected = (
        METRICS_NAMESPACE,
        Metric.JOBS_FAILED.value,
        metric_dimensions(configs[environment].app_prefix),
    )
    assert expected in metrics


@parametrized
def test_error_log_filter_and_alarm(
    environment: str, templates: dict[str, Template], configs: dict[str, DeploymentConfig]
) -> None:
    config = configs[environment]
    template = templates[environment]
    filters = resources(template, "AWS::Logs::MetricFilter")
    assert len(filters) == 1
    properties = next(iter(filters.values()))["Properties"]
    group = resources(template, "AWS::Logs::LogGroup")[properties["LogGroupName"]["Ref"]]
    assert group["Properties"]["LogGroupName"] == f"/aws/lambda/{config.settings.trigger_function}"
    pattern = properties["FilterPattern"]
    assert '($.level = "ERROR")' in pattern
    assert '($.level = "CRITICAL")' in pattern
    (transformation,) = properties["MetricTransformations"]
    assert transformation["MetricNamespace"] == METRICS_NAMESPACE
    assert transformation["MetricName"] == ERROR_LOGS_METRIC
    assert transformation["Dimensions"] == [
        {"Key": LOG_FUNCTION_DIMENSION, "Value": f"$.{LOG_FUNCTION_DIMENSION}"}
    ]

    trigger = {"Ref": function_id(template, config.settings.trigger_function)}
    metrics = [alarm_metric(a) for a in resources(template, "AWS::CloudWatch::Alarm").values()]
    assert (METRICS_NAMESPACE, ERROR_LOGS_METRIC, {LOG_FUNCTION_DIMENSION: trigger}) in metrics


@parametrized
def test_alarm_topic_encrypted_with_rotated_key(
    environment: str, templates: dict[str, Template], configs: dict[str, DeploymentConfig]
) -> None:
    template = templates[environment]
    topic = resources(template, "AWS::SNS::Topic")[alarm_topic_id(template, configs[environment])]
    key_id = topic["Properties"]["KmsMasterKeyId"]["Fn::GetAtt"][0]
    key = resources(template, "AWS::KMS::Key")[key_id]["Properties"]
    assert key["EnableKeyRotation"] is True

    # CloudWatch must be able to encrypt for the topic, and to publish to it.
    evaluator = PolicyEvaluator(template.to_json())
    key_statements = [
        s
        for s in key["KeyPolicy"]["Statement"]
        if s.get("Principal") == {"Service": "cloudwatch.amazonaws.com"}
    ]
    assert evaluator.decide(key_statements, "kms:GenerateDataKey", "*", {})
    assert evaluator.decide(key_statements, "kms:Decrypt", "*", {})
    topic_arn = evaluator.resolve({"Ref": alarm_topic_id(template, configs[environment])})
    (policy,) = [
        p
        for p in resources(template, "AWS::SNS::TopicPolicy").values()
        if {"Ref": alarm_topic_id(template, configs[environment])} in p["Properties"]["Topics"]
    ]
    statements = policy["Properties"]["PolicyDocument"]["Statement"]
    by_cloudwatch = [
        s for s in statements if s.get("Principal") == {"Service": "cloudwatch.amazonaws.com"}
    ]
    context = {
        "aws:SourceAccount": evaluator.resolve({"Ref": "AWS::AccountId"}),
        "aws:SecureTransport": "true",
    }
    assert evaluator.decide(by_cloudwatch, "sns:Publish", topic_arn, context)
    assert not evaluator.decide(
        by_cloudwatch, "sns:Publish", topic_arn, {"aws:SourceAccount": "999999999999"}
    )
    # The TLS-only statement denies publishing without TLS, to everyone.
    assert not evaluator.decide(
        statements, "sns:Publish", topic_arn, {**context, "aws:SecureTransport": "false"}
    )


@parametrized
def test_alarm_email_subscription(
    environment: str, templates: dict[str, Template], configs: dict[str, DeploymentConfig]
) -> None:
    config = configs[environment]
    template = templates[environment]
    topic_id = alarm_topic_id(template, config)
    subscriptions = [
        s["Properties"]
        for s in resources(template, "AWS::SNS::Subscription").values()
        if s["Properties"]["TopicArn"] == {"Ref": topic_id}
    ]
    if config.alarm_email is None:
        assert environment == "dev"
        assert subscriptions == []
    else:
        assert subscriptions == [
            {"Endpoint": config.alarm_email, "Protocol": "email", "TopicArn": {"Ref": topic_id}}
        ]


@parametrized
def test_dashboard_widgets(
    environment: str, templates: dict[str, Template], configs: dict[str, DeploymentConfig]
) -> None:
    config = configs[environment]
    template = templates[environment]
    (dashboard,) = resources(template, "AWS::CloudWatch::Dashboard").values()
    body = json.loads(
        PolicyEvaluator(template.to_json()).resolve(dashboard["Properties"]["DashboardBody"])
    )
    graphs = {
        w["properties"]["title"]: w["properties"]["metrics"]
        for w in body["widgets"]
        if "metrics" in w["properties"]
    }
    # Resolved references read "ref:<logical id>" (see tests.infra.policy).
    trigger = f"ref:{function_id(template, config.settings.trigger_function)}"
    job_state = f"ref:{function_id(template, f'{config.app_prefix}-job-state')}"

    def lines(title: str, name: str) -> list[list[Any]]:
        return [m for m in graphs[title] if m[1] == name]

    durations = lines("Function duration (ms)", "Duration")
    assert {m[3] for m in durations} == {trigger, job_state}
    errors = lines("Function errors", "Errors")
    assert {m[3] for m in errors} == {trigger, job_state}
    jobs = graphs["Processing jobs by status"]
    assert {m[1] for m in jobs} == {
        Metric.JOBS_STARTED.value,
        Metric.JOBS_COMPLETED.value,
        Metric.JOBS_FAILED.value,
        Metric.JOBS_STOPPED.value,
    }
    for line in jobs:
        assert line[0] == METRICS_NAMESPACE
        assert dict(zip(line[2:-1:2], line[3:-1:2], strict=True)) == metric_dimensions(
            config.app_prefix
        )
    depth = lines("Dead-letter queue depth", "ApproximateNumberOfMessagesVisible")
    assert len(depth) == 2


# -- agreement between the handlers and the alarms ---------------------------------------------


@dataclass
class FakeContext:
    function_name: str = "prepflow-dev-job-state"
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = (
        "arn:aws:lambda:us-east-1:123456789012:function:prepflow-dev-job-state"
    )
    aws_request_id: str = "request-1"


def test_handler_metrics_match_alarm_dimensions(
    templates: dict[str, Template],
    configs: dict[str, DeploymentConfig],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = configs["staging"]
    # A state change of another deployment's job touches neither the store nor the topic,
    # so a runtime with settings alone is enough; it counts EventsSkipped.
    runtime = handlers.Runtime(
        settings=Settings(APP_PREFIX=config.app_prefix),
        orchestrator=None,  # type: ignore[arg-type]
        jobs=None,  # type: ignore[arg-type]
        backend=None,  # type: ignore[arg-type]
        notifier=None,
        logs=None,
    )
    monkeypatch.setattr(handlers, "_RUNTIME", runtime)
    handlers.metrics.clear_metrics()
    event = {
        "source": STATE_CHANGE_SOURCE,
        "detail-type": STATE_CHANGE_DETAIL_TYPE,
        "detail": {"ProcessingJobName": "other-abc", "ProcessingJobStatus": "Failed"},
    }

    handlers.job_state_handler(event, FakeContext())  # type: ignore[arg-type]

    documents = [
        json.loads(line) for line in capsys.readouterr().out.splitlines() if "_aws" in line
    ]
    (document,) = [d for d in documents if Metric.EVENTS_SKIPPED.value in d]
    (directive,) = document["_aws"]["CloudWatchMetrics"]
    emitted = {name: document[name] for name in directive["Dimensions"][0]}
    alarms = [
        alarm_metric(a) for a in resources(templates["staging"], "AWS::CloudWatch::Alarm").values()
    ]
    failed_jobs = [m for m in alarms if m[1] == Metric.JOBS_FAILED.value]
    assert failed_jobs == [(directive["Namespace"], Metric.JOBS_FAILED.value, emitted)]


def test_logger_fields_match_error_filter() -> None:
    from aws_lambda_powertools import Logger

    stream = io.StringIO()
    logger = Logger(service="prepflow-filter-check", logger_handler=logging.StreamHandler(stream))

    @logger.inject_lambda_context
    def handler(event: dict[str, Any], context: Any) -> None:
        logger.error("failed")
        logger.critical("failed badly")

    handler({}, FakeContext())

    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["level"] for line in lines] == ["ERROR", "CRITICAL"]
    assert {line[LOG_FUNCTION_DIMENSION] for line in lines} == {FakeContext.function_name}
