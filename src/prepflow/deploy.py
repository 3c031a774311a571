"""``prepflow deploy`` and ``prepflow destroy``: the checks, then the AWS CDK command line.

The CDK command line is the npm package ``aws-cdk`` at the exact version that
``package.json`` in a source checkout pins. It runs as ``npx --no-install cdk`` in that
checkout, so npx never fetches another version; ``npm ci`` installs it from
``package-lock.json`` first when ``node_modules`` lacks it. The CDK app is ``infra/app.py``,
run as a module by the Python interpreter that runs prepflow.

Every check runs before anything changes, and a failed check raises ConfigurationError with
what to install, start or set.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import boto3
from botocore.exceptions import BotoCoreError

from prepflow.aws.clients import AwsClients
from prepflow.aws.teardown import StoppedJobs, empty_bucket, stop_running_jobs
from prepflow.errors import ConfigurationError, PrepflowError

if TYPE_CHECKING:
    from infra.config import DeploymentConfig

logger = logging.getLogger(__name__)

# Seconds to wait for `docker info`. It usually returns within seconds when the daemon runs,
# so a daemon that takes longer is reported as not responding.
DOCKER_INFO_TIMEOUT_SECONDS = 20.0
# Files a checkout must contain for the CDK command line and the CDK app.
PROJECT_FILES = ("infra/app.py", "package.json", "package-lock.json")


@dataclass(frozen=True)
class CdkProject:
    """A source checkout with the CDK app and the pinned CDK command line."""

    root: Path
    # The interpreter that runs infra/app.py; it must have prepflow and the infra extra.
    python: str = sys.executable

    @property
    def cli_installed(self) -> bool:
        return (self.root / "node_modules" / "aws-cdk" / "package.json").is_file()


def find_project(root: Path) -> CdkProject:
    """Return the checkout at ``root``; raise ConfigurationError when its files are missing."""
    missing = [name for name in PROJECT_FILES if not (root / name).is_file()]
    if missing:
        raise ConfigurationError(
            f"prepflow deploy and destroy need a source checkout of prepflow, with infra/ and "
            f"package.json next to src/ (missing in {root}: {', '.join(missing)}); clone the "
            "repository, run pip install -e '.[infra]' in it, and run the command from there"
        )
    return CdkProject(root)


def check_node() -> None:
    """Check that Node.js and npx are on PATH; prepflow supports Node 20 or later."""
    for program in ("node", "npx"):
        if shutil.which(program) is None:
            raise ConfigurationError(
                f"{program} not found on PATH: the AWS CDK command line needs Node.js 20 or "
                "later with npm and npx; install Node.js and run the command again"
            )


def check_docker(timeout: float = DOCKER_INFO_TIMEOUT_SECONDS) -> None:
    """Check that the Docker daemon responds, because a deploy builds the processing image."""
    if shutil.which("docker") is None:
        raise ConfigurationError(
            "docker not found on PATH: prepflow deploy builds the processing image from "
            "container/Dockerfile with Docker; install Docker, start it, and run the command again"
        )
    try:
        done = subprocess.run(
            ["docker", "info"], capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as error:
        raise ConfigurationError(
            f"'docker info' timed out after {timeout:g} s: the Docker daemon does not respond; "
            "restart Docker and run the command again"
        ) from error
    if done.returncode != 0:
        detail = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise ConfigurationError(
            f"the Docker daemon is not running or not reachable ('docker info' exited with "
            f"{done.returncode}: {detail}); start Docker and run the command again"
        )


def aws_session() -> boto3.session.Session:
    """Return a session with credentials and a region, found without any request to AWS.

    Raises ConfigurationError when either is missing. Credentials are only located here
    (environment, shared files, SSO cache or instance metadata), never checked with STS.
    """
    try:
        session = boto3.session.Session()
        credentials = session.get_credentials()
    except BotoCoreError as error:
        raise ConfigurationError(
            f"the AWS configuration is invalid: {error}; fix AWS_PROFILE or ~/.aws/config"
        ) from error
    if credentials is None:
        raise ConfigurationError(
            "no AWS credentials found: set AWS_PROFILE to a configured profile (aws configure "
            "or aws sso login), or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, and run the "
            "command again"
        )
    # boto3 reads AWS_DEFAULT_REGION and the profile's region, but not AWS_REGION.
    region = session.region_name or os.environ.get("AWS_REGION")
    if not region:
        raise ConfigurationError(
            "no AWS region set: set AWS_REGION (or AWS_DEFAULT_REGION, or region in your "
            "profile) to the region to deploy to"
        )
    return boto3.session.Session(region_name=region)


def load_config(
    project: CdkProject, environment: str, *, app_prefix: str | None, alarm_email: str | None
) -> DeploymentConfig:
    """Return the configuration ``infra/app.py`` builds for ``environment``.

    Raises ConfigurationError for an unknown environment, invalid values, or a missing infra
    extra.
    """
    if str(project.root) not in sys.path:
        sys.path.insert(0, str(project.root))
    try:
        from infra.app import deployment_config
    except ImportError as error:
        raise ConfigurationError(
            f"the CDK libraries are not installed ({error}); run pip install -e '.[infra]'"
        ) from error
    return deployment_config(environment, app_prefix=app_prefix, alarm_email=alarm_email)


def install_cli(project: CdkProject) -> None:
    """Install the pinned CDK command line with ``npm ci``; raise PrepflowError if it fails."""
    if shutil.which("npm") is None:
        raise ConfigurationError(
            f"npm not found on PATH, and {project.root / 'node_modules'} lacks aws-cdk; "
            "install Node.js with npm, or run npm ci there yourself"
        )
    logger.info("installing the AWS CDK command line: npm ci in %s", project.root)
    done = subprocess.run(["npm", "ci"], cwd=project.root, check=False)
    if done.returncode != 0:
        raise PrepflowError(
            f"npm ci failed in {project.root} with exit code {done.returncode} (its output is "
            "above); fix the cause and run the command again"
        )


def cdk_command(
    project: CdkProject, action: str, config: DeploymentConfig, *, approve: bool = False
) -> list[str]:
    """Return the CDK command line that deploys or destroys ``config``'s stack.

    ``approve`` deploys without CDK's prompt for IAM and security-group changes. A destroy
    always passes ``--force``, because ``prepflow destroy`` prompts for confirmation itself.
    """
    # The CDK command line runs --app through a shell, so the interpreter path is quoted.
    app = f"{shlex.quote(project.python)} -m infra.app"
    command = ["npx", "--no-install", "cdk", action, "--app", app]
    command += ["-c", f"environment={config.environment}", "-c", f"app_prefix={config.app_prefix}"]
    if action == "deploy":
        if config.alarm_email:
            command += ["-c", f"alarm_email={config.alarm_email}"]
        if approve:
            command += ["--require-approval", "never"]
    elif action == "destroy":
        command.append("--force")
    else:
        raise ValueError(f"invalid CDK action {action!r}: expected 'deploy' or 'destroy'")
    return command


def run_cdk(project: CdkProject, command: list[str]) -> int:
    """Run ``command`` in the checkout, with its output on this terminal; return its exit code."""
    logger.info("running %s in %s", shlex.join(command), project.root)
    return subprocess.run(command, cwd=project.root, check=False).returncode


def stop_jobs(clients: AwsClients, config: DeploymentConfig) -> StoppedJobs:
    """Stop the deployment's running processing jobs.

    NOTE: the jobs are found by their job-name prefix alone. Deployments that share one prefix
    in one account and region (the default prefix is the same for every environment) have
    their jobs stopped together.
    """
    return stop_running_jobs(clients.client("sagemaker"), config.settings.job_name_prefix)


def empty_buckets(clients: AwsClients, config: DeploymentConfig) -> dict[str, int | None]:
    """Empty the deployment's five buckets; return the versions deleted (None: no bucket).

    The logs bucket goes last, because emptying the others is logged into it.
    NOTE: S3 delivers server access logs with a delay, so log objects of this emptying may
    reach the logs bucket after it, and CloudFormation then fails to delete that bucket.
    Running destroy again empties it again.
    """
    buckets = config.settings.buckets
    order = [buckets.raw, buckets.processed, buckets.model_artifacts, buckets.feature_store]
    s3 = clients.client("s3")
    return {bucket: empty_bucket(s3, bucket) for bucket in [*order, buckets.logs]}


def kept_resources(config: DeploymentConfig) -> list[str]:
    """Return the resources that a stack with retained data keeps after its deletion."""
    return [
        *(f"bucket {name}" for name in vars(config.settings.buckets).values()),
        f"DynamoDB table {config.settings.table_name}",
        f"ECR repository {config.app_prefix}-processing",
    ]
