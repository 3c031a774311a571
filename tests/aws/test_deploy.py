"""``prepflow deploy`` and ``prepflow destroy`` with fake npx, npm and docker programs.

Each command runs as its own process whose PATH contains only the fakes a test writes (and
``node``, which the CDK libraries start). The fakes record their arguments, so the tests see
the exact CDK command line, and the real CDK command line never runs. The only AWS endpoint
the commands can reach is moto's server on 127.0.0.1, or a closed port there.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pty
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from prepflow import deploy
from prepflow.errors import ConfigurationError
from tests.aws.conftest import REGION
from tests.helpers import REPO_ROOT

WORKFLOW = REPO_ROOT / ".github" / "workflows" / "deploy.yml"
APP = f"{sys.executable} -m infra.app"
# Port 9 (discard) is closed on ordinary machines, so a request that should not happen
# fails at once instead of leaving the machine.
CLOSED_ENDPOINT = "http://127.0.0.1:9"
DOCKER_DOWN = (
    "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. "
    "Is the docker daemon running?\n"
)

needs_cdk = pytest.mark.skipif(
    shutil.which("node") is None or importlib.util.find_spec("aws_cdk") is None,
    reason="deploy and destroy load infra/app.py, which needs the infra extra and Node.js",
)


class Fakes:
    """A folder of fake programs that record each call as one JSON line."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir()

    def add(self, name: str, *, exit_code: int = 0, stderr: str = "") -> None:
        script = self.folder / name
        script.write_text(
            f"#!{sys.executable}\n"
            "import json, os, sys\n"
            f"with open({str(self.folder / (name + '.calls'))!r}, 'a') as calls:\n"
            "    calls.write(json.dumps({'argv': sys.argv[1:], 'cwd': os.getcwd()}) + '\\n')\n"
            f"sys.stderr.write({stderr!r})\n"
            f"sys.exit({exit_code})\n"
        )
        script.chmod(0o755)

    def add_node(self) -> None:
        node = shutil.which("node")
        assert node is not None
        (self.folder / "node").symlink_to(node)

    def calls(self, name: str) -> list[dict[str, Any]]:
        record = self.folder / (name + ".calls")
        if not record.is_file():
            return []
        return [json.loads(line) for line in record.read_text().splitlines()]


@pytest.fixture
def fakes(tmp_path: Path) -> Fakes:
    return Fakes(tmp_path / "bin")


def command_environment(fakes: Fakes, endpoint: str = CLOSED_ENDPOINT) -> dict[str, str]:
    """The test's environment (fake credentials) with only the fakes on PATH."""
    return {
        **os.environ,
        "PATH": str(fakes.folder),
        "AWS_ENDPOINT_URL": endpoint,
        "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20",
    }


def run_prepflow(
    arguments: list[str], environment: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "prepflow", *arguments],
        capture_output=True,
        text=True,
        env=environment,
        stdin=subprocess.DEVNULL,
        timeout=300,
        check=False,
    )


def expected_npm_calls() -> list[dict[str, Any]]:
    """npm runs only when the checkout lacks the CDK command line, which a fake never adds."""
    if deploy.find_project(REPO_ROOT).cli_installed:
        return []
    return [{"argv": ["ci"], "cwd": str(REPO_ROOT)}]


def fakes_for_deploy(fakes: Fakes, *, npx_exit: int = 0) -> None:
    fakes.add_node()
    fakes.add("npx", exit_code=npx_exit)
    fakes.add("npm")
    fakes.add("docker")


# -- checks before anything runs ------------------------------------------------------------


def test_deploy_without_node(fakes: Fakes) -> None:
    fakes.add("docker")
    fakes.add("npm")

    done = run_prepflow(["deploy", "--yes"], command_environment(fakes))

    assert done.returncode == 2, done.stderr
    assert "node not found on PATH" in done.stderr
    assert "install Node.js" in done.stderr


def test_deploy_without_docker(fakes: Fakes) -> None:
    fakes.add_node()
    fakes.add("npx")

    done = run_prepflow(["deploy", "--yes"], command_environment(fakes))

    assert done.returncode == 2, done.stderr
    assert "docker not found on PATH" in done.stderr
    assert fakes.calls("npx") == []


def test_deploy_docker_daemon_down(fakes: Fakes) -> None:
    fakes.add_node()
    fakes.add("npx")
    fakes.add("docker", exit_code=1, stderr=DOCKER_DOWN)

    done = run_prepflow(["deploy", "--yes"], command_environment(fakes))

    assert done.returncode == 2, done.stderr
    assert "the Docker daemon is not running" in done.stderr
    assert "Is the docker daemon running?" in done.stderr
    assert "start Docker" in done.stderr
    assert fakes.calls("docker") == [{"argv": ["info"], "cwd": os.getcwd()}]
    assert fakes.calls("npx") == []


def test_deploy_without_credentials(fakes: Fakes) -> None:
    fakes_for_deploy(fakes)
    environment = command_environment(fakes)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        environment.pop(name, None)

    done = run_prepflow(["deploy", "--yes"], environment)

    assert done.returncode == 2, done.stderr
    assert "no AWS credentials found" in done.stderr
    assert "AWS_PROFILE" in done.stderr
    assert fakes.calls("npx") == []


def test_destroy_without_credentials(fakes: Fakes) -> None:
    fakes_for_deploy(fakes)
    environment = command_environment(fakes)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        environment.pop(name, None)

    done = run_prepflow(["destroy", "--yes"], environment)

    assert done.returncode == 2, done.stderr
    assert "no AWS credentials found" in done.stderr
    assert fakes.calls("npx") == []


def test_docker_check_times_out(fakes: Fakes, monkeypatch: pytest.MonkeyPatch) -> None:
    hanging = fakes.folder / "docker"
    hanging.write_text("#!/bin/sh\nexec /bin/sleep 60\n")
    hanging.chmod(0o755)
    monkeypatch.setenv("PATH", str(fakes.folder))

    with pytest.raises(ConfigurationError) as raised:
        deploy.check_docker(timeout=0.5)

    assert "'docker info' timed out after 0.5 s" in str(raised.value)


def test_credentials_without_region(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name)

    with pytest.raises(ConfigurationError) as raised:
        deploy.aws_session()

    assert "no AWS region set" in str(raised.value)


def test_credentials_and_region_found() -> None:
    session = deploy.aws_session()

    assert session.region_name == REGION
    assert session.get_credentials().access_key == "testing"


def test_project_without_infra(tmp_path: Path) -> None:
    (tmp_path / "package.json").write_text("{}")

    with pytest.raises(ConfigurationError) as raised:
        deploy.find_project(tmp_path)

    assert "infra/app.py" in str(raised.value)
    assert "package-lock.json" in str(raised.value)
    assert "source checkout" in str(raised.value)


def test_install_cli_runs_npm_ci(
    fakes: Fakes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fakes.add("npm")
    monkeypatch.setenv("PATH", str(fakes.folder))
    project = deploy.CdkProject(tmp_path)

    deploy.install_cli(project)

    assert fakes.calls("npm") == [{"argv": ["ci"], "cwd": str(tmp_path)}]


# -- the CDK command line -------------------------------------------------------------------


def test_cli_version_is_pinned() -> None:
    package = json.loads((REPO_ROOT / "package.json").read_text())
    lock = json.loads((REPO_ROOT / "package-lock.json").read_text())

    pinned = package["devDependencies"]["aws-cdk"]
    assert pinned[0].isdigit(), f"aws-cdk {pinned!r} is a range, not an exact version"
    assert lock["packages"]["node_modules/aws-cdk"]["version"] == pinned
    assert lock["packages"][""]["devDependencies"]["aws-cdk"] == pinned


@needs_cdk
def test_deploy_runs_cdk_deploy(fakes: Fakes) -> None:
    fakes_for_deploy(fakes)
    arguments = ["deploy", "--env", "staging", "--app-prefix", "pf-deploy-test"]
    arguments += ["--alarm-email", "ops@example.com", "--yes"]

    done = run_prepflow(arguments, command_environment(fakes))

    assert done.returncode == 0, done.stderr
    assert fakes.calls("npx") == [
        {
            "argv": [
                "--no-install",
                "cdk",
                "deploy",
                "--app",
                APP,
                "-c",
                "environment=staging",
                "-c",
                "app_prefix=pf-deploy-test",
                "-c",
                "alarm_email=ops@example.com",
                "--require-approval",
                "never",
            ],
            "cwd": str(REPO_ROOT),
        }
    ]
    assert fakes.calls("npm") == expected_npm_calls()
    assert fakes.calls("docker") == [{"argv": ["info"], "cwd": os.getcwd()}]


@needs_cdk
def test_deploy_reports_cdk_failure(fakes: Fakes) -> None:
    fakes_for_deploy(fakes, npx_exit=1)

    done = run_prepflow(["deploy"], command_environment(fakes))

    assert done.returncode == 1
    assert "cdk deploy failed with exit code 1" in done.stderr
    (call,) = fakes.calls("npx")
    # Without --yes, CDK prompts for approval of IAM and security changes itself.
    assert call["argv"] == [
        "--no-install",
        "cdk",
        "deploy",
        "--app",
        APP,
        "-c",
        "environment=dev",
        "-c",
        "app_prefix=prepflow-dev",
    ]


@needs_cdk
def test_deploy_unknown_environment(fakes: Fakes) -> None:
    fakes_for_deploy(fakes)

    done = run_prepflow(["deploy", "--env", "qa", "--yes"], command_environment(fakes))

    assert done.returncode == 2
    assert "invalid environment 'qa'" in done.stderr
    assert fakes.calls("npx") == []


# -- destroy --------------------------------------------------------------------------------


def create_deployment_buckets(s3: Any, prefix: str) -> list[str]:
    """Create the five buckets of ``prefix`` with objects; the raw one versioned."""
    suffixes = ["raw-data", "processed-data", "model-artifacts", "logs", "feature-store"]
    names = [f"{prefix}-{suffix}-bucket" for suffix in suffixes]
    for name in names:
        s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": REGION})
        s3.put_object(Bucket=name, Key="some/object.csv", Body=b"a\n1\n")
    raw = names[0]
    s3.put_bucket_versioning(Bucket=raw, VersioningConfiguration={"Status": "Enabled"})
    s3.put_object(Bucket=raw, Key="input/data.csv", Body=b"first")
    s3.put_object(Bucket=raw, Key="input/data.csv", Body=b"second")
    s3.delete_object(Bucket=raw, Key="input/data.csv")
    return names


def entries_in(s3: Any, bucket: str) -> int:
    page = s3.list_object_versions(Bucket=bucket)
    return len(page.get("Versions", [])) + len(page.get("DeleteMarkers", []))


@needs_cdk
def test_destroy_dev_empties_buckets(fakes: Fakes, moto_server: str, server_client: Any) -> None:
    fakes_for_deploy(fakes)
    prefix = f"pf-{uuid.uuid4().hex[:8]}"
    s3 = server_client("s3")
    buckets = create_deployment_buckets(s3, prefix)
    other = f"{prefix}-other"
    s3.create_bucket(Bucket=other, CreateBucketConfiguration={"LocationConstraint": REGION})
    s3.put_object(Bucket=other, Key="keep.csv", Body=b"keep")
    arguments = ["destroy", "--env", "dev", "--app-prefix", prefix, "--yes"]

    done = run_prepflow(arguments, command_environment(fakes, moto_server))

    assert done.returncode == 0, done.stderr
    for bucket in buckets:
        assert entries_in(s3, bucket) == 0, bucket
    assert f"emptied bucket {prefix}-raw-data-bucket: 4 object versions deleted" in done.stderr
    assert s3.get_object(Bucket=other, Key="keep.csv")["Body"].read() == b"keep"
    assert fakes.calls("npx") == [
        {
            "argv": [
                "--no-install",
                "cdk",
                "destroy",
                "--app",
                APP,
                "-c",
                "environment=dev",
                "-c",
                f"app_prefix={prefix}",
                "--force",
            ],
            "cwd": str(REPO_ROOT),
        }
    ]
    assert fakes.calls("docker") == []


@needs_cdk
def test_destroy_prod_keeps_data(fakes: Fakes, moto_server: str, server_client: Any) -> None:
    fakes_for_deploy(fakes)
    prefix = f"pf-{uuid.uuid4().hex[:8]}"
    s3 = server_client("s3")
    buckets = create_deployment_buckets(s3, prefix)
    arguments = ["destroy", "--env", "prod", "--app-prefix", prefix, "--yes"]

    done = run_prepflow(arguments, command_environment(fakes, moto_server))

    assert done.returncode == 0, done.stderr
    assert entries_in(s3, buckets[0]) == 4
    for bucket in buckets[1:]:
        assert entries_in(s3, bucket) == 1, bucket
    for bucket in buckets:
        assert f"kept: bucket {bucket}" in done.stderr
    assert f"kept: DynamoDB table {prefix}-jobs" in done.stderr
    (call,) = fakes.calls("npx")
    expected = ["destroy", "--app", APP, "-c", "environment=prod"]
    expected += ["-c", f"app_prefix={prefix}", "--force"]
    assert call["argv"][2:] == expected


@needs_cdk
def test_destroy_needs_yes_without_terminal(
    fakes: Fakes, moto_server: str, server_client: Any
) -> None:
    fakes_for_deploy(fakes)
    prefix = f"pf-{uuid.uuid4().hex[:8]}"
    s3 = server_client("s3")
    buckets = create_deployment_buckets(s3, prefix)

    done = run_prepflow(
        ["destroy", "--app-prefix", prefix], command_environment(fakes, moto_server)
    )

    assert done.returncode == 2
    assert "pass --yes" in done.stderr
    assert entries_in(s3, buckets[0]) == 4
    assert fakes.calls("npx") == []
    assert fakes.calls("npm") == []


@needs_cdk
def test_destroy_declined_at_prompt(fakes: Fakes, moto_server: str, server_client: Any) -> None:
    fakes_for_deploy(fakes)
    prefix = f"pf-{uuid.uuid4().hex[:8]}"
    s3 = server_client("s3")
    buckets = create_deployment_buckets(s3, prefix)
    # A pseudo-terminal on stdin makes the command prompt; the answer waits in its buffer.
    controller, terminal = pty.openpty()
    os.write(controller, b"n\n")
    try:
        done = subprocess.run(
            [sys.executable, "-m", "prepflow", "destroy", "--app-prefix", prefix],
            capture_output=True,
            stdin=terminal,
            text=True,
            env=command_environment(fakes, moto_server),
            timeout=300,
            check=False,
        )
    finally:
        os.close(terminal)
        os.close(controller)

    assert done.returncode == 1, done.stderr
    assert f"Delete stack {prefix} (dev) in {REGION}, emptying its buckets?" in done.stdout
    assert "destroy cancelled: nothing was changed" in done.stderr
    assert entries_in(s3, buckets[0]) == 4
    assert fakes.calls("npx") == []


# -- the deploy workflow --------------------------------------------------------------------


def load_workflow() -> dict[Any, Any]:
    workflow: dict[Any, Any] = yaml.safe_load(WORKFLOW.read_text())
    return workflow


def test_workflow_uses_oidc_only() -> None:
    text = WORKFLOW.read_text()
    deploy_job = load_workflow()["jobs"]["deploy"]
    steps = deploy_job["steps"]
    credentials = [s for s in steps if "configure-aws-credentials" in s.get("uses", "")]

    for forbidden in ("aws-access-key-id", "aws-secret-access-key", "secrets."):
        assert forbidden not in text
    assert deploy_job["permissions"] == {"id-token": "write", "contents": "read"}
    assert len(credentials) == 1
    assert credentials[0]["with"]["role-to-assume"] == "${{ vars.AWS_DEPLOY_ROLE_ARN }}"


def test_workflow_tests_before_deploy() -> None:
    jobs = load_workflow()["jobs"]

    assert any(step.get("run") == "./bin/test" for step in jobs["test"]["steps"])
    assert jobs["deploy"]["needs"] in ("test", ["test"])


def test_workflow_environments() -> None:
    workflow = load_workflow()
    # YAML 1.1, which PyYAML reads, parses the key "on" as True.
    triggers = workflow[True]
    deploy_job = workflow["jobs"]["deploy"]
    runs = " ".join(step.get("run", "") for step in deploy_job["steps"])
    setup = {
        step["uses"].split("@")[0]: step["with"]
        for step in deploy_job["steps"]
        if step.get("uses", "").startswith(("actions/setup-python", "actions/setup-node"))
    }

    assert triggers["push"]["branches"] == ["main"]
    choice = triggers["workflow_dispatch"]["inputs"]["environment"]
    assert choice["options"] == ["dev", "staging", "prod"]
    assert deploy_job["environment"] == "${{ inputs.environment || 'dev' }}"
    assert "prepflow deploy" in runs
    assert "--yes" in runs
    assert "vars.ALARM_EMAIL" in json.dumps(deploy_job)
    assert str(setup["actions/setup-python"]["python-version"]) == "3.11"
    assert str(setup["actions/setup-node"]["node-version"]) == "20"
