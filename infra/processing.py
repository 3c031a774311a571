"""Resources of SageMaker Processing jobs: the execution role, the image and its repository."""

from __future__ import annotations

from pathlib import Path

from aws_cdk import ArnFormat, Aws, IgnoreMode, RemovalPolicy, Stack
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_iam as iam
from constructs import Construct

from infra import nag
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
from prepflow.settings import Settings

# Untagged images are removed once more than this many exist.
MAX_UNTAGGED_IMAGES = 10
# Jobs may write under this prefix of the feature-store bucket, and nowhere else in it. No
# setting names a feature-store prefix, so user scripts that store features write here.
FEATURES_PREFIX = "features/"
# The image's build context: the repository root, because the image installs prepflow from
# src/. The .dockerignore there admits only the files the Dockerfile copies.
BUILD_CONTEXT = Path(__file__).resolve().parent.parent
DOCKERFILE = "container/Dockerfile"


class Processing(Construct):
    """The processing role, scoped to the prefixes a job reads and writes, and the job image.

    A job reads the raw input prefix, and its manifest, script and recipe from the
    model-artifacts bucket. It writes processed data and rejected rows to the processed-data
    bucket, its report to the logs bucket, its artifacts to the model-artifacts bucket, and
    features under ``FEATURES_PREFIX`` of the feature-store bucket.

    Jobs run PROCESSING_IMAGE_URI when the settings name one. Otherwise a step script runs
    on SageMaker's prebuilt scikit-learn image, which the runtime looks up, and the built-in
    step runs on ``container/Dockerfile``, which ``cdk deploy`` builds and publishes to the
    CDK bootstrap's asset repository. The deployment's own ECR repository is for users who
    push their own image and name it in PROCESSING_IMAGE_URI, so the role can pull from it.
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
        self._grant_data_access(settings, storage)
        self._grant_logs()
        self.repository.grant_pull(self.role)

        self.image_asset: ecr_assets.DockerImageAsset | None = None
        self.image_uri: str | None = None
        if settings.processing_image_uri:
            self.image_uri = settings.processing_image_uri
        elif not settings.step_script_uri:
            self.image_asset = self._build_image()
            self.image_uri = self.image_asset.image_uri
        self._acknowledge_findings(settings, storage)

    def _acknowledge_findings(self, settings: Settings, storage: Storage) -> None:
        nag.acknowledge_wildcards(
            self.role,
            ["s3:GetObject*", "s3:GetBucket*", "s3:List*", "s3:Abort*"],
            "CDK's grant_read and grant_put expand to these action groups; every statement "
            "that carries them is limited to one prefix of one of the deployment's buckets",
        )
        prefixes = [
            (storage.raw, settings.input_prefix),
            *((storage.model_artifacts, p) for p in (MANIFEST_PREFIX, SCRIPTS_PREFIX)),
            *((storage.model_artifacts, p) for p in (RECIPES_PREFIX, ARTIFACTS_PREFIX)),
            (storage.processed, settings.output_prefix),
            (storage.processed, REJECTED_PREFIX),
            (storage.logs, REPORTS_PREFIX),
            (storage.feature_store, FEATURES_PREFIX),
        ]
        nag.acknowledge_wildcards(
            self.role,
            sorted({nag.resource_pattern(bucket, f"/{prefix}*") for bucket, prefix in prefixes}),
            "A job reads or writes objects whose names are known only at run time, so each "
            "grant covers one prefix of a deployment bucket and nothing outside it",
            kind="Resource",
        )
        nag.acknowledge_wildcards(
            self.role,
            ["*"],
            "ecr:GetAuthorizationToken, which pulling an image needs, supports no resource-level "
            "permission; the pull actions themselves are limited to the image repositories",
            kind="Resource",
        )
        nag.acknowledge_wildcards(
            self.role,
            [nag.log_group_pattern(LOG_GROUP)],
            "SageMaker writes one log stream per job and host into this log group; the stream "
            "names are known only when the job runs",
            kind="Resource",
        )

    def _grant_data_access(self, settings: Settings, storage: Storage) -> None:
        storage.raw.grant_read(self.role, f"{settings.input_prefix}*")
        for prefix in (MANIFEST_PREFIX, SCRIPTS_PREFIX, RECIPES_PREFIX, ARTIFACTS_PREFIX):
            storage.model_artifacts.grant_read(self.role, f"{prefix}*")
        storage.processed.grant_put(self.role, f"{settings.output_prefix}*")
        storage.processed.grant_put(self.role, f"{REJECTED_PREFIX}*")
        storage.logs.grant_put(self.role, f"{REPORTS_PREFIX}*")
        storage.model_artifacts.grant_put(self.role, f"{ARTIFACTS_PREFIX}*")
        storage.feature_store.grant_put(self.role, f"{FEATURES_PREFIX}*")

    def _grant_logs(self) -> None:
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

    def _build_image(self) -> ecr_assets.DockerImageAsset:
        """Declare the image asset that ``cdk deploy`` builds, and let the role pull it.

        Synthesis only stages the build context; Docker is needed at deploy time alone.
        """
        asset = ecr_assets.DockerImageAsset(
            self,
            "Image",
            directory=str(BUILD_CONTEXT),
            file=DOCKERFILE,
            # SageMaker Processing's ml.t3, ml.m5 and ml.c5 instances are x86_64.
            platform=ecr_assets.Platform.LINUX_AMD64,
            # Docker's .dockerignore rules, so CDK stages the files that `docker build` gets.
            ignore_mode=IgnoreMode.DOCKER,
        )
        # Pull only: the repository is the CDK bootstrap's, shared by every stack using it.
        asset.repository.grant_pull(self.role)
        return asset
