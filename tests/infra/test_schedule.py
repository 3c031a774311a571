"""The optional schedule that sends the trigger function a reconcile request."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from aws_cdk.assertions import Template
from infra.app import deployment_config
from infra.config import ENVIRONMENTS, DeploymentConfig

from prepflow.aws.handlers import DEFAULT_RECONCILE_MAX_JOBS, parse_reconcile_request
from prepflow.errors import ConfigurationError

pytestmark = pytest.mark.parametrize("environment", ENVIRONMENTS)

_UNIT_MINUTES = {"minute": 1, "hour": 60, "day": 24 * 60}


def rate_minutes(expression: str) -> int:
    """Return the minutes between runs of an EventBridge ``rate(...)`` expression."""
    match = re.fullmatch(r"rate\((\d+) (minute|hour|day)s?\)", expression)
    assert match, f"not a rate expression: {expression}"
    return int(match.group(1)) * _UNIT_MINUTES[match.group(2)]


def schedule_rules(template: Template) -> dict[str, dict[str, Any]]:
    rules = template.find_resources("AWS::Events::Rule")
    return {k: r for k, r in rules.items() if "ScheduleExpression" in r["Properties"]}


def trigger_id(template: Template, config: DeploymentConfig) -> str:
    found = template.find_resources(
        "AWS::Lambda::Function",
        {"Properties": {"FunctionName": config.settings.trigger_function}},
    )
    assert len(found) == 1
    return next(iter(found))


def test_schedule_only_when_configured(
    environment: str, templates: dict[str, Template], configs: dict[str, DeploymentConfig]
) -> None:
    minutes = configs[environment].reconcile_schedule_minutes
    rules = schedule_rules(templates[environment])
    if environment == "dev":
        assert minutes is None
        assert rules == {}
        return
    assert minutes is not None
    assert len(rules) == 1
    rule = next(iter(rules.values()))["Properties"]
    assert rate_minutes(rule["ScheduleExpression"]) == minutes
    assert rule["State"] == "ENABLED"


def test_schedule_sends_reconcile_request(
    environment: str, templates: dict[str, Template], configs: dict[str, DeploymentConfig]
) -> None:
    config = configs[environment]
    template = templates[environment]
    rules = schedule_rules(template)
    if config.reconcile_schedule_minutes is None:
        pytest.skip(f"{environment} has no schedule")
    (rule_id, rule), *_ = rules.items()
    (target,) = rule["Properties"]["Targets"]
    assert target["Arn"] == {"Fn::GetAtt": [trigger_id(template, config), "Arn"]}

    # The handler's own parser decides whether the input is the request it understands.
    request = parse_reconcile_request(json.loads(target["Input"]), config.settings)
    assert request is not None
    assert request.prefix == config.settings.input_prefix
    assert request.max_jobs == DEFAULT_RECONCILE_MAX_JOBS

    # A failed delivery goes to the trigger's dead-letter queue.
    assert "Arn" in target["DeadLetterConfig"]
    permissions = template.find_resources(
        "AWS::Lambda::Permission",
        {
            "Properties": {
                "Principal": "events.amazonaws.com",
                "SourceArn": {"Fn::GetAtt": [rule_id, "Arn"]},
            }
        },
    )
    assert len(permissions) == 1


def test_schedule_minutes_validated(environment: str) -> None:
    settings = deployment_config(environment).settings
    for minutes in (0, 24 * 60 + 1):
        with pytest.raises(ConfigurationError, match="reconcile_schedule_minutes"):
            DeploymentConfig(
                environment=environment,
                settings=settings,
                retain_data=False,
                reconcile_schedule_minutes=minutes,
            )
