"""Helpers for the functional tier: the whole local pipeline, real files, real processes."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from prepflow.local.app import LocalApp, build_local_app
from prepflow.settings import load_settings

CLI_TIMEOUT_SECONDS = 180


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def cli(home: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run ``prepflow ARGS`` as a separate process with PREPFLOW_HOME set to ``home``."""

    def run(
        *args: str,
        env: dict[str, str] | None = None,
        timeout: float = CLI_TIMEOUT_SECONDS,
        cwd: Path | None = None,
    ) -> subprocess.CompletedProcess[str]:
        environment = {**os.environ, "PREPFLOW_HOME": str(home), **(env or {})}
        return subprocess.run(
            [sys.executable, "-m", "prepflow", *args],
            capture_output=True,
            text=True,
            env=environment,
            timeout=timeout,
            cwd=cwd,
            check=False,
        )

    return run


@pytest.fixture
def make_app(home: Path) -> Callable[..., LocalApp]:
    """Build the local app in this process, with settings overrides."""

    def build(**overrides: Any) -> LocalApp:
        return build_local_app(load_settings(home=home, **overrides))

    return build
