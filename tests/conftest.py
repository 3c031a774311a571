"""Fixtures shared by every test tier."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers import MOCK_DATA

# The reliability figures travel from the xdist workers to the controller in test reports;
# the controller loads only this conftest, so the hooks that collect and write them live here.
from tests.reliability.conftest import (  # noqa: F401 (pytest hooks)
    pytest_runtest_logreport,
    pytest_sessionfinish,
)

# Variables a developer's shell may set that would change a test's settings.
_PREPFLOW_VARIABLES = [
    name
    for name in os.environ
    if name.startswith("PREPFLOW_")
    or name
    in {
        "APP_PREFIX",
        "PROCESSING_INSTANCE_TYPE",
        "PROCESSING_INSTANCE_COUNT",
        "SKLEARN_VERSION",
        "SAGEMAKER_ROLE_ARN",
        "LOG_LEVEL",
        "PROCESSING_IMAGE_URI",
    }
]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Start every test without prepflow settings from the surrounding shell."""
    for name in _PREPFLOW_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def mock_data() -> Path:
    """The reference sample (20,000 rows); skipped where the shared folder is absent."""
    if not MOCK_DATA.is_file():
        pytest.skip(f"reference sample not found at {MOCK_DATA} (set REFERENCE_SAMPLE_CSV)")
    return MOCK_DATA
