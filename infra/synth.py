"""Write the CloudFormation templates of one environment, offline and without the CDK CLI."""

from __future__ import annotations

import tempfile
from pathlib import Path

from aws_cdk import App

from infra import nag
from infra.app import add_stack, deployment_config, new_app
from prepflow.aws.package import build_bundle
from prepflow.errors import ConfigurationError


def synth(
    environment: str,
    output_dir: Path,
    *,
    app_prefix: str | None = None,
    alarm_email: str | None = None,
    code: Path | None = None,
) -> Path:
    """Synthesize ``environment`` into ``output_dir`` (a cloud assembly) and return the template.

    ``code`` is a Lambda bundle built before; without it, one is built with pip first. The
    output folder can be deployed with ``cdk deploy --app DIR``. Raises ConfigurationError
    for an unknown environment or invalid values, and PrepflowError when the bundle build fails.
    """
    config = deployment_config(environment, app_prefix=app_prefix, alarm_email=alarm_email)
    output_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="prepflow-lambda-") as folder:
        bundle = code if code is not None else build_bundle(Path(folder) / "bundle")
        app = new_app(output_dir)
        stack = add_stack(app, config, bundle)
        # Synthesis copies the bundle into output_dir, so the temporary folder can go after it.
        synthesize(app, output_dir)
    return output_dir / stack.template_file


def synthesize(app: App, output_dir: Path) -> None:
    """Run ``app.synth()``; raise ConfigurationError listing cdk-nag's findings if it fails."""
    try:
        app.synth()
    except RuntimeError as error:
        findings = nag.findings_text(output_dir)
        if not findings:
            raise
        raise ConfigurationError(
            f"cdk-nag found problems in the {app.node.id or 'prepflow'} app that no "
            f"acknowledgement covers:\n{findings}\nFix the construct, or acknowledge the "
            "finding next to it with infra.nag.acknowledge and the reason it is acceptable"
        ) from error
