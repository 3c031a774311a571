"""Resources of SageMaker Processing jobs: the execution role and the image repository."""

from __future__ import annotations

from aws_cdk import ArnFormat, Aws, RemovalPolicy, Stack
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_iam as iam
from constructs import Construct

from infra.config import DeploymentConfig
from infra.storage import Storage
from prepflow.aws.logs import LOG_GROUP
from prepflow.jobs.template import (
    ARTIFACTS_PREFIX,
    RECIPES_PREFIX,
    REJECTED_PREFIX,
    REPORTS_PREFIX,
    SCRIPTS_PREFIX,
)
from prepflow.orchestrator import MANIFEST_PREFIX

# Untagged images are removed once more than this many exist.
MAX_UNTAGGED_IMAGES = 10


class Processing(Construct):
    """The processing role, scoped to the prefixes a job reads and writes, and the ECR repository.

    A job reads the raw input prefix, and its manifest, script and recipe from the
    model-artifacts bucket. It writes processed data and rejected rows to the processed-data
    bucket, its report to the logs bucket and its artifacts to the model-artifacts bucket.
    """

    def __init__(
        self, scope: Construct, construct_id: str, *, config: DeploymentConfig, storage: Storage
    ) -> None:
        super().__init__(scope, construct_id)
        settings = config.settings

        self.repository = ecr.Repository(
            self,
            "Repository",
            repository_name=f"{config.app_prefix}-processing",
            image_scan_on_push=True,
            encryption=ecr.RepositoryEncryption.AES_256,
            lifecycle_rules=[
                ecr.LifecycleRule(
                    description="remove old untagged images",
                    tag_status=ecr.TagStatus.UNTAGGED,
                    max_image_count=MAX_UNTAGGED_IMAGES,
                )
            ],
            removal_policy=RemovalPolicy.RETAIN if config.retain_data else RemovalPolicy.DESTROY,
            empty_on_delete=not config.retain_data,
        )

        self.role = iam.Role(
            self,
            "Role",
            role_name=f"{config.app_prefix}-processing",
            assumed_by=iam.ServicePrincipal(
                "sagemaker.amazonaws.com",
                conditions={"StringEquals": {"aws:SourceAccount": Aws.ACCOUNT_ID}},
            ),
            description="Execution role of prepflow's SageMaker Processing jobs",
        )
        storage.raw.grant_read(self.role, f"{settings.input_prefix}*")
        for prefix in (MANIFEST_PREFIX, SCRIPTS_PREFIX, RECIPES_PREFIX, ARTIFACTS_PREFIX):
            storage.model_artifacts.grant_read(self.role, f"{prefix}*")
        storage.processed.grant_put(self.role, f"{settings.output_prefix}*")
        storage.processed.grant_put(self.role, f"{REJECTED_PREFIX}*")
        storage.logs.grant_put(self.role, f"{REPORTS_PREFIX}*")
        storage.model_artifacts.grant_put(self.role, f"{ARTIFACTS_PREFIX}*")
        self.repository.grant_pull(self.role)
        self.role.add_to_policy(
            iam.PolicyStatement(
                actions=["logs:CreateLogStream", "logs:PutLogEvents", "logs:CreateLogGroup"],
                resources=[
                    Stack.of(self).format_arn(
                        service="logs",
                        resource="log-group",
                        resource_name=f"{LOG_GROUP}:*",
                        arn_format=ArnFormat.COLON_RESOURCE_NAME,
                    )
                ],
            )
        )

        if settings.processing_image_uri:
            self.image_uri: str | None = settings.processing_image_uri
        elif settings.step_script_uri:
            # A script runs on the prebuilt scikit-learn image, which the runtime looks up.
            self.image_uri = None
        else:
            self.image_uri = self.repository.repository_uri_for_tag(config.processing_image_tag)
