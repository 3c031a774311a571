"""The five buckets, named as prepflow's settings derive them."""

from __future__ import annotations

from typing import Any

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_s3 as s3
from constructs import Construct

from infra.config import DeploymentConfig

ACCESS_LOGS_PREFIX = "access-logs/"
# Parts of a multipart upload that never completed are removed after this many days.
INCOMPLETE_UPLOAD_DAYS = 7


class Storage(Construct):
    """Encrypted, private, TLS-only buckets; server access logs go to the logs bucket."""

    def __init__(self, scope: Construct, construct_id: str, *, config: DeploymentConfig) -> None:
        super().__init__(scope, construct_id)
        names = config.settings.buckets
        self._config = config
        self._removal = RemovalPolicy.RETAIN if config.retain_data else RemovalPolicy.DESTROY

        # S3 delivers server access logs only to a bucket encrypted with SSE-S3, so every
        # bucket uses SSE-S3 for one rule throughout.
        self.logs = s3.Bucket(
            self,
            "Logs",
            bucket_name=names.logs,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="expire-access-logs",
                    prefix=ACCESS_LOGS_PREFIX,
                    expiration=Duration.days(config.access_log_expiration_days),
                ),
                _abort_incomplete_uploads(),
            ],
            **self._common(),
        )
        self.raw = self._logged_bucket(
            "Raw",
            names.raw,
            versioned=True,
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="expire-noncurrent-versions",
                    noncurrent_version_expiration=Duration.days(
                        config.noncurrent_version_expiration_days
                    ),
                ),
                _abort_incomplete_uploads(),
            ],
        )
        # The trigger's EventBridge rule needs the raw bucket's events. Setting the bucket's
        # own NotificationConfiguration does it without the custom resource (a Lambda
        # function) that `event_bridge_enabled=True` adds.
        raw_resource = self.raw.node.default_child
        assert isinstance(raw_resource, s3.CfnBucket)
        raw_resource.notification_configuration = s3.CfnBucket.NotificationConfigurationProperty(
            event_bridge_configuration=s3.CfnBucket.EventBridgeConfigurationProperty(
                event_bridge_enabled=True
            )
        )
        self.processed = self._logged_bucket("Processed", names.processed)
        self.model_artifacts = self._logged_bucket("ModelArtifacts", names.model_artifacts)
        self.feature_store = self._logged_bucket("FeatureStore", names.feature_store)

    @property
    def all_buckets(self) -> tuple[s3.Bucket, ...]:
        return (self.raw, self.processed, self.model_artifacts, self.logs, self.feature_store)

    def _logged_bucket(
        self,
        construct_id: str,
        name: str,
        *,
        versioned: bool = False,
        lifecycle_rules: list[s3.LifecycleRule] | None = None,
    ) -> s3.Bucket:
        return s3.Bucket(
            self,
            construct_id,
            bucket_name=name,
            versioned=versioned,
            server_access_logs_bucket=self.logs,
            server_access_logs_prefix=f"{ACCESS_LOGS_PREFIX}{name}/",
            lifecycle_rules=lifecycle_rules or [_abort_incomplete_uploads()],
            **self._common(),
        )

    def _common(self) -> dict[str, Any]:
        return {
            "encryption": s3.BucketEncryption.S3_MANAGED,
            "block_public_access": s3.BlockPublicAccess.BLOCK_ALL,
            "enforce_ssl": True,
            "removal_policy": self._removal,
        }


def _abort_incomplete_uploads() -> s3.LifecycleRule:
    return s3.LifecycleRule(
        id="abort-incomplete-uploads",
        abort_incomplete_multipart_upload_after=Duration.days(INCOMPLETE_UPLOAD_DAYS),
    )
