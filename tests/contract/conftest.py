"""Fixtures of the contract tests, which run the same checks against each backend of a port."""

from tests.contract.jobstore_fixtures import fake_aws_environment, jobs  # noqa: F401
