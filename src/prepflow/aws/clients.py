"""boto3 clients for prepflow's adapters, built once at the edge from the settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import boto3
from botocore.config import Config

from prepflow.settings import Settings

# botocore's standard retry mode retries throttling and transient errors with backoff.
CLIENT_CONFIG = Config(
    retries={"mode": "standard", "total_max_attempts": 3},
    user_agent_extra="prepflow",
    s3={"addressing_style": "path"},
)
# The SageMaker adapter retries throttling itself, with a bound and a clear error at the end,
# so its client makes one attempt per call: the two layers would multiply.
SINGLE_ATTEMPT = CLIENT_CONFIG.merge(Config(retries={"mode": "standard", "total_max_attempts": 1}))
OWN_RETRIES = frozenset({"sagemaker"})


@dataclass
class AwsClients:
    """One boto3 session and the clients made from it, each made on first use."""

    session: boto3.session.Session
    endpoint_url: str | None = None
    _made: dict[str, Any] = field(default_factory=dict)

    def client(self, service: str) -> Any:
        if service not in self._made:
            config = SINGLE_ATTEMPT if service in OWN_RETRIES else CLIENT_CONFIG
            self._made[service] = self.session.client(
                service, endpoint_url=self.endpoint_url, config=config
            )
        return self._made[service]


def aws_clients(settings: Settings, *, endpoint_url: str | None = None) -> AwsClients:
    """Return clients for the settings' region; ``endpoint_url`` serves tests (moto's server).

    Without ``endpoint_url`` boto3 also honours ``AWS_ENDPOINT_URL`` and its per-service
    variants, as the AWS SDKs document.
    """
    return AwsClients(boto3.session.Session(region_name=settings.region), endpoint_url)
