"""The whole deployment as one stack, assembled from one construct per logical unit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aws_cdk import Stack, Tags
from constructs import Construct

from infra.artifacts import ExampleArtifacts
from infra.config import DeploymentConfig
from infra.functions import runtime_environment
from infra.job_state import JobState
from infra.monitoring import Monitoring
from infra.processing import Processing
from infra.storage import Storage
from infra.trigger import Trigger


class PrepflowStack(Stack):
    """Storage, processing, job state, trigger and monitoring of one environment.

    ``code`` is the folder that ``prepflow.aws.package.build_bundle`` built; both functions
    run from it.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: DeploymentConfig,
        code: Path,
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        Tags.of(self).add("application", "prepflow")
        Tags.of(self).add("environment", config.environment)

        self.storage = Storage(self, "Storage", config=config)
        self.processing = Processing(self, "Processing", config=config, storage=self.storage)
        self.examples = ExampleArtifacts(self, "Examples", config=config, storage=self.storage)
        environment = runtime_environment(
            config,
            storage=self.storage,
            role_arn=self.processing.role.role_arn,
            image_uri=self.processing.image_uri,
        )
        self.job_state = JobState(
            self,
            "JobState",
            config=config,
            code=code,
            environment=environment,
            storage=self.storage,
        )
        self.trigger = Trigger(
            self,
            "Trigger",
            config=config,
            code=code,
            storage=self.storage,
            job_state=self.job_state,
            processing_role=self.processing.role,
        )
        self.monitoring = Monitoring(
            self, "Monitoring", config=config, trigger=self.trigger, job_state=self.job_state
        )
