"""Marker mode on AWS: the rule delivers marker objects and the functions know the marker."""

from __future__ import annotations

from pathlib import Path

from aws_cdk.assertions import Template


def test_marker_mode_rule_and_environment(lambda_code: Path, tmp_path: Path) -> None:
    from infra.app import add_stack, new_app
    from infra.config import DeploymentConfig, deployment_settings

    settings = deployment_settings({"APP_PREFIX": "prepflow-marker", "PREPFLOW_MARKER": "_SUCCESS"})
    config = DeploymentConfig(environment="dev", settings=settings, retain_data=False)
    template = Template.from_stack(add_stack(new_app(tmp_path), config, lambda_code))

    rules = template.find_resources(
        "AWS::Events::Rule", {"Properties": {"EventPattern": {"source": ["aws.s3"]}}}
    )
    (rule,) = rules.values()
    keys = [c["wildcard"] for c in rule["Properties"]["EventPattern"]["detail"]["object"]["key"]]
    assert "input/*_SUCCESS" in keys
    functions = template.find_resources("AWS::Lambda::Function")
    trigger = next(
        f
        for f in functions.values()
        if f["Properties"].get("FunctionName") == "prepflow-marker-trigger"
    )
    assert trigger["Properties"]["Environment"]["Variables"]["PREPFLOW_MARKER"] == "_SUCCESS"
