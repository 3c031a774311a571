"""Fixtures of the contract tests, which run the same checks against each backend of a port."""

from tests.aws.conftest import fake_aws_credentials  # noqa: F401
from tests.contract.jobstore_fixtures import jobs  # noqa: F401
