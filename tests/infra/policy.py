"""A small IAM policy evaluator for synthesized templates.

It decides "may this role do this action on this resource" from the role's identity policies
in the template, the way IAM decides within one account: an explicit Deny wins, then any
Allow, else the request is denied. Resource values written with ``Ref``, ``Fn::GetAtt``,
``Fn::Join`` and ``Fn::Sub`` are resolved to concrete ARNs with the account and region below.

NOTE: it ignores what the template cannot show (permission boundaries, service control
policies, session policies) and AWS managed policies, whose text is not in the template.
Tests therefore also assert that the roles they evaluate have no managed policy.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

ACCOUNT = "123456789012"
REGION = "us-east-1"
PARTITION = "aws"
_PSEUDO_PARAMETERS = {
    "AWS::AccountId": ACCOUNT,
    "AWS::Region": REGION,
    "AWS::Partition": PARTITION,
    "AWS::URLSuffix": "amazonaws.com",
}
# Condition operators the evaluator models, each also with the "IfExists" suffix.
_STRING_OPERATORS = {"StringEquals", "StringLike", "ArnEquals", "ArnLike", "Bool"}


class UnsupportedPolicyError(Exception):
    """The template uses a policy feature that this evaluator does not model."""


def wildcard_match(pattern: str, value: str, *, ignore_case: bool = False) -> bool:
    """Return whether ``value`` matches an IAM pattern ("*" is any run, "?" one character)."""
    parts = []
    for char in pattern:
        if char == "*":
            parts.append(".*")
        elif char == "?":
            parts.append(".")
        else:
            parts.append(re.escape(char))
    regex = "".join(parts)
    flags = re.IGNORECASE | re.DOTALL if ignore_case else re.DOTALL
    return re.fullmatch(regex, value, flags) is not None


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


class PolicyEvaluator:
    """The identity policies of every role in one template, ready for questions."""

    def __init__(self, template: Mapping[str, Any]) -> None:
        self.resources: dict[str, dict[str, Any]] = dict(template["Resources"])

    # -- lookups ------------------------------------------------------------------------------

    def of_type(self, resource_type: str) -> dict[str, dict[str, Any]]:
        return {k: r for k, r in self.resources.items() if r["Type"] == resource_type}

    def role_of_function(self, function_name: str) -> str:
        """Return the logical id of the role of the Lambda function ``function_name``."""
        for function in self.of_type("AWS::Lambda::Function").values():
            properties = function["Properties"]
            if properties.get("FunctionName") == function_name:
                return str(properties["Role"]["Fn::GetAtt"][0])
        raise KeyError(f"no function named {function_name}")

    def role_named(self, role_name: str) -> str:
        for logical_id, role in self.of_type("AWS::IAM::Role").items():
            if role["Properties"].get("RoleName") == role_name:
                return logical_id
        raise KeyError(f"no role named {role_name}")

    def role_arn(self, role_id: str) -> str:
        return self.resolve({"Fn::GetAtt": [role_id, "Arn"]})

    def managed_policy_arns(self, role_id: str) -> list[str]:
        properties = self.resources[role_id]["Properties"]
        return [self.resolve(arn) for arn in properties.get("ManagedPolicyArns", [])]

    def statements(self, role_id: str) -> list[dict[str, Any]]:
        """Return every identity-policy statement attached to ``role_id``."""
        documents = [
            policy["PolicyDocument"]
            for policy in self.resources[role_id]["Properties"].get("Policies", [])
        ]
        for resource_type in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
            for policy in self.of_type(resource_type).values():
                if {"Ref": role_id} in policy["Properties"].get("Roles", []):
                    documents.append(policy["Properties"]["PolicyDocument"])
        return [statement for document in documents for statement in document["Statement"]]

    # -- decisions ----------------------------------------------------------------------------

    def allows(
        self,
        role_id: str,
        action: str,
        resource: str,
        context: Mapping[str, str] | None = None,
    ) -> bool:
        """Return whether ``role_id`` may do ``action`` on the ARN ``resource``."""
        return self.decide(self.statements(role_id), action, resource, context or {})

    def decide(
        self,
        statements: list[dict[str, Any]],
        action: str,
        resource: str,
        context: Mapping[str, str],
    ) -> bool:
        matching = [s for s in statements if self.applies(s, action, resource, context)]
        if any(s["Effect"] == "Deny" for s in matching):
            return False
        return any(s["Effect"] == "Allow" for s in matching)

    def applies(
        self,
        statement: Mapping[str, Any],
        action: str,
        resource: str,
        context: Mapping[str, str],
    ) -> bool:
        """Return whether ``statement`` covers the request (its effect aside)."""
        return (
            self._matches_action(statement, action)
            and self._matches_resource(statement, resource)
            and self._conditions_hold(statement.get("Condition", {}), context)
        )

    def _matches_action(self, statement: Mapping[str, Any], action: str) -> bool:
        if "NotAction" in statement:
            patterns = as_list(statement["NotAction"])
            return not any(wildcard_match(p, action, ignore_case=True) for p in patterns)
        patterns = as_list(statement["Action"])
        return any(wildcard_match(p, action, ignore_case=True) for p in patterns)

    def _matches_resource(self, statement: Mapping[str, Any], resource: str) -> bool:
        if "NotResource" in statement:
            patterns = [self.resolve(p) for p in as_list(statement["NotResource"])]
            return not any(wildcard_match(p, resource) for p in patterns)
        patterns = [self.resolve(p) for p in as_list(statement["Resource"])]
        return any(wildcard_match(p, resource) for p in patterns)

    # -- intrinsic functions ------------------------------------------------------------------

    def resolve(self, value: Any) -> str:
        """Return the string a template value stands for once deployed."""
        if isinstance(value, str):
            return value
        if not isinstance(value, Mapping) or len(value) != 1:
            raise UnsupportedPolicyError(f"cannot resolve {json.dumps(value)}")
        (function, argument), *_ = value.items()
        if function == "Fn::Join":
            separator, parts = argument
            return str(separator).join(self.resolve(part) for part in parts)
        if function == "Ref":
            return self._ref(argument)
        if function == "Fn::GetAtt":
            return self._get_att(argument[0], argument[1])
        if function == "Fn::Sub" and isinstance(argument, str):
            return re.sub(r"\$\{([^}]+)\}", lambda m: self._ref(m.group(1)), argument)
        raise UnsupportedPolicyError(f"cannot resolve {json.dumps(value)}")

    def _ref(self, name: str) -> str:
        if name in _PSEUDO_PARAMETERS:
            return _PSEUDO_PARAMETERS[name]
        resource = self.resources[name]
        properties = resource.get("Properties", {})
        kind = resource["Type"]
        if kind == "AWS::S3::Bucket":
            return str(properties["BucketName"])
        if kind == "AWS::SNS::Topic":
            return f"arn:{PARTITION}:sns:{REGION}:{ACCOUNT}:{properties.get('TopicName', name)}"
        if kind == "AWS::DynamoDB::Table":
            return str(properties.get("TableName", name))
        # A stand-in that is unique per resource and matches only itself or "*".
        return f"ref:{name}"

    def _get_att(self, name: str, attribute: str) -> str:
        resource = self.resources[name]
        properties = resource.get("Properties", {})
        kind = resource["Type"]
        if attribute != "Arn":
            return f"getatt:{name}.{attribute}"
        if kind == "AWS::S3::Bucket":
            return f"arn:{PARTITION}:s3:::{properties['BucketName']}"
        if kind == "AWS::IAM::Role":
            return f"arn:{PARTITION}:iam::{ACCOUNT}:role/{properties.get('RoleName', name)}"
        if kind == "AWS::DynamoDB::Table":
            table = properties.get("TableName", name)
            return f"arn:{PARTITION}:dynamodb:{REGION}:{ACCOUNT}:table/{table}"
        if kind == "AWS::SQS::Queue":
            return f"arn:{PARTITION}:sqs:{REGION}:{ACCOUNT}:{properties.get('QueueName', name)}"
        if kind == "AWS::KMS::Key":
            return f"arn:{PARTITION}:kms:{REGION}:{ACCOUNT}:key/{name}"
        if kind == "AWS::ECR::Repository":
            repository = properties.get("RepositoryName", name)
            return f"arn:{PARTITION}:ecr:{REGION}:{ACCOUNT}:repository/{repository}"
        if kind == "AWS::Lambda::Function":
            function = properties.get("FunctionName", name)
            return f"arn:{PARTITION}:lambda:{REGION}:{ACCOUNT}:function:{function}"
        return f"getatt:{name}.Arn"

    def _conditions_hold(self, conditions: Mapping[str, Any], context: Mapping[str, str]) -> bool:
        """Return whether every condition holds for ``context`` (condition key -> value)."""
        for operator, clauses in conditions.items():
            base = operator.removesuffix("IfExists")
            if base not in _STRING_OPERATORS:
                raise UnsupportedPolicyError(f"condition operator {operator} is not modelled")
            for key, expected in clauses.items():
                if key not in context:
                    if operator.endswith("IfExists"):
                        continue
                    return False
                actual = context[key]
                values = [
                    str(v).lower() if isinstance(v, bool) else self.resolve(v)
                    for v in as_list(expected)
                ]
                if base == "Bool":
                    values = [v.lower() for v in values]
                if base in ("StringLike", "ArnLike"):
                    matched = any(wildcard_match(v, actual) for v in values)
                else:
                    matched = actual in values
                if not matched:
                    return False
        return True
