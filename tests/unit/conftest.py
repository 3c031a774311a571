"""Fixtures shared by the unit tests: event payloads from tests/fixtures and a clean environment."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import AliasChoices

from prepflow.settings import Settings

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def _settings_variable_names() -> set[str]:
    names: set[str] = set()
    for field_name, field in Settings.model_fields.items():
        names.add(field_name.upper())
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            names.update(str(choice) for choice in alias.choices)
        elif alias is not None:
            names.add(str(alias))
    return names


@pytest.fixture
def load_event() -> Callable[[str], Any]:
    """Return a loader of JSON fixtures by path relative to tests/fixtures."""

    def load(relative_path: str) -> Any:
        return json.loads((FIXTURES / relative_path).read_text(encoding="utf-8"))

    return load


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """Remove every variable that Settings could read, so only the test's own values count.

    Field names are removed too, because pydantic-settings also reads a variable named after
    the field when ``populate_by_name`` is on (``HOME`` for ``home``).
    """
    for name in _settings_variable_names():
        monkeypatch.delenv(name, raising=False)
    return monkeypatch
