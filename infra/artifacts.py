"""The example scripts and recipes, copied to the model-artifacts bucket at deploy time.

After a deployment, ``PREPFLOW_STEP_SCRIPT_URI`` or ``PREPFLOW_RECIPE_URI`` can name an
example directly, for instance
``s3://<model-artifacts bucket>/scripts/examples/preprocessing_script.py``.
"""

from __future__ import annotations

from pathlib import Path

from aws_cdk import RemovalPolicy, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3_deployment as s3deploy
from constructs import Construct

from infra import nag
from infra.config import DeploymentConfig
from infra.storage import Storage
from prepflow.jobs.template import RECIPES_PREFIX, SCRIPTS_PREFIX

EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "examples"
# Under the prefixes jobs read from, so the processing role needs no extra grant. Uploaded
# scripts and recipes go to "<prefix><content hash>/", which never equals "examples/".
EXAMPLE_SCRIPTS_PREFIX = f"{SCRIPTS_PREFIX}examples/"
EXAMPLE_RECIPES_PREFIX = f"{RECIPES_PREFIX}examples/"
# S3 object actions that change or remove objects: the copy handler may use them only under
# the example prefixes.
_WRITE_ACTIONS = ["s3:PutObject*", "s3:DeleteObject*", "s3:Abort*"]


class ExampleArtifacts(Construct):
    """One ``BucketDeployment`` per examples folder that exists.

    The copies never delete other objects (``prune=False``), so a file that a user put under
    an example prefix stays. For the same reason an example removed from the repository stays
    in the bucket until removed by hand. With ``retain_data`` the copies stay when the stack
    is deleted; otherwise the stack removes everything under the example prefixes.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: DeploymentConfig,
        storage: Storage,
        examples_dir: Path = EXAMPLES_DIR,
    ) -> None:
        super().__init__(scope, construct_id)
        self._config = config
        self._bucket = storage.model_artifacts
        # CDK runs every BucketDeployment of a stack on one shared function, which logs here.
        self._log_group = logs.LogGroup(
            self,
            "CopyLogs",
            retention=config.log_retention,
            removal_policy=RemovalPolicy.RETAIN if config.retain_data else RemovalPolicy.DESTROY,
        )

        self.deployments: dict[str, s3deploy.BucketDeployment] = {}
        for name, folder, prefix in (
            ("Scripts", examples_dir / "scripts", EXAMPLE_SCRIPTS_PREFIX),
            ("Recipes", examples_dir / "recipes", EXAMPLE_RECIPES_PREFIX),
        ):
            if folder.is_dir():
                self.deployments[prefix] = self._deploy(name, folder, prefix)
        if self.deployments:
            self._restrict_writes()
            self._acknowledge_findings()

    def _deploy(self, name: str, folder: Path, prefix: str) -> s3deploy.BucketDeployment:
        return s3deploy.BucketDeployment(
            self,
            name,
            sources=[s3deploy.Source.asset(str(folder), exclude=["__pycache__", "*.pyc"])],
            destination_bucket=self._bucket,
            destination_key_prefix=prefix,
            prune=False,
            retain_on_delete=self._config.retain_data,
            log_group=self._log_group,
        )

    def _acknowledge_findings(self) -> None:
        """Accept the findings on CDK's copy function, which prepflow cannot change.

        CDK adds that function once per stack, beside this construct rather than in it.
        """
        stack = Stack.of(self)
        handler = next(
            child
            for child in stack.node.children
            if child.node.id.startswith("Custom::CDKBucketDeployment")
        )
        nag.acknowledge(
            handler,
            "AwsSolutions-L1",
            "CDK chooses the runtime of its BucketDeployment copy function; it runs only "
            "during deployments",
        )
        nag.acknowledge(
            handler,
            "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
            "AWSLambdaBasicExecutionRole]",
            "CDK creates the copy function's role with this policy and offers no option to "
            "replace it; the function runs only during deployments",
        )
        nag.acknowledge_wildcards(
            handler,
            ["s3:GetObject*", "s3:GetBucket*", "s3:List*", "s3:DeleteObject*", "s3:Abort*"],
            "CDK grants the copy function these action groups on the artifacts bucket; an "
            "explicit Deny limits every write and delete to the example prefixes",
        )
        nag.acknowledge_wildcards(
            handler,
            [
                nag.resource_pattern(self._bucket, "/*"),
                "arn:<AWS::Partition>:s3:::cdk-hnb659fds-assets-<AWS::AccountId>-<AWS::Region>/*",
            ],
            "The copy function reads the staged example files from the CDK asset bucket and "
            "writes under the example prefixes; an explicit Deny blocks writes elsewhere",
            kind="Resource",
        )

    def _restrict_writes(self) -> None:
        """Deny the copy function writes outside the example prefixes.

        CDK grants the function read and write on the whole destination bucket
        (``grant_read_write`` in aws-cdk-lib 2.275), with no option to narrow it to a
        prefix. An explicit Deny takes precedence over that Allow.
        """
        # NOTE: the function and its role are shared by every BucketDeployment in the stack
        # with the same memory and network settings. A later one that writes elsewhere must
        # add its destination to this list.
        allowed = [self._bucket.arn_for_objects(f"{prefix}*") for prefix in self.deployments]
        role = next(iter(self.deployments.values())).handler_role
        role.add_to_principal_policy(
            iam.PolicyStatement(
                effect=iam.Effect.DENY,
                actions=_WRITE_ACTIONS,
                not_resources=allowed,
            )
        )
