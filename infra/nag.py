"""cdk-nag's AwsSolutions checks, and the acknowledgements of the findings prepflow accepts.

cdk-nag 3 is a policy-validation plugin: ``app.synth()`` fails with ``ValidationFailed`` while
any finding is not acknowledged, and writes ``validation-report.json`` in the output folder.
Each acknowledgement sits next to the construct it concerns, with the reason it is accepted,
and names one finding exactly: an IAM5 finding is acknowledged by its full id, such as
``AwsSolutions-IAM5[Action::s3:List*]``, never by a prefix.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from aws_cdk import Acknowledgment, App, CfnResource, Stack, Validations
from cdk_nag import AwsSolutionsChecks
from constructs import IConstruct

PACK = "AwsSolutions"
REPORT_FILE = "validation-report.json"


def add_checks(app: App) -> None:
    """Run the AwsSolutions pack on every stack of ``app`` at synthesis."""
    Validations.of(app).add_plugins(AwsSolutionsChecks(app))


def acknowledge(scope: IConstruct, rule: str, reason: str) -> None:
    """Accept the finding ``rule`` (for example ``AwsSolutions-IAM5[Action::s3:List*]``)
    on ``scope`` and everything beneath it, for ``reason``."""
    if not rule.startswith(f"{PACK}-"):
        raise ValueError(f"invalid rule {rule!r}: expected an id starting with {PACK}-")
    if len(reason.split()) < 5:
        # Reviewers of the deployment read the reason, and a word or two explains nothing.
        raise ValueError(f"acknowledgement of {rule} needs a reason in a sentence, got {reason!r}")
    Validations.of(scope).acknowledge(Acknowledgment(id=f"{PACK}::{rule}", reason=reason))


def acknowledge_wildcards(
    scope: IConstruct, findings: Iterable[str], reason: str, *, kind: str = "Action"
) -> None:
    """Acknowledge one IAM5 finding per wildcard in ``findings``, all for ``reason``.

    ``kind`` is ``Action`` (``s3:GetObject*``) or ``Resource`` (an ARN pattern as cdk-nag
    writes it; ``resource_pattern`` builds those for resources of this stack).
    """
    for finding in findings:
        acknowledge(scope, f"AwsSolutions-IAM5[{kind}::{finding}]", reason)


def resource_pattern(resource: IConstruct, suffix: str) -> str:
    """Return how cdk-nag writes ``<resource's ARN><suffix>`` in an IAM5 finding id."""
    element = resource.node.default_child
    if not isinstance(element, CfnResource):
        raise TypeError(f"{resource.node.path} has no CloudFormation resource")
    logical_id = Stack.of(resource).resolve(Stack.of(resource).get_logical_id(element))
    return f"<{logical_id}.Arn>{suffix}"


def log_group_pattern(log_group_name: str) -> str:
    """Return how cdk-nag writes the ARN of every log stream of ``log_group_name``."""
    return f"arn:<AWS::Partition>:logs:<AWS::Region>:<AWS::AccountId>:log-group:{log_group_name}:*"


def findings_text(output_dir: Path) -> str:
    """Return the unacknowledged findings in ``output_dir``'s report, one per line."""
    path = output_dir / REPORT_FILE
    if not path.is_file():
        return ""
    # On some versions other text follows the JSON document in the file, so read the first.
    report, _ = json.JSONDecoder().raw_decode(path.read_text(encoding="utf-8"))
    lines = []
    for plugin in report.get("pluginReports", []):
        for violation in plugin.get("violations", []):
            for construct in violation.get("violatingConstructs", []):
                lines.append(f"{violation['ruleName']} on {construct['constructPath']}")
    return "\n".join(sorted(lines))
