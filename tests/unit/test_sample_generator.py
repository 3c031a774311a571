"""The seeded generator behind the shipped sample and the benchmark inputs."""

from __future__ import annotations

import csv
import importlib.util
import json
import sys

import pytest

from tests.helpers import REPO_ROOT, SAMPLE_DATA

GENERATOR = REPO_ROOT / "examples" / "data" / "generate_employees.py"


@pytest.fixture(scope="module")
def generator():
    spec = importlib.util.spec_from_file_location("generate_employees", GENERATOR)
    module = importlib.util.module_from_spec(spec)
    # dataclasses look their module up in sys.modules while the file executes.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def test_default_run_reproduces_shipped_sample(generator, tmp_path):
    target = tmp_path / "employees.csv"

    generator.generate(target)

    assert target.read_bytes() == SAMPLE_DATA.read_bytes()


def test_missing_rates_per_column(generator, tmp_path):
    target = tmp_path / "employees.csv"
    generator.generate(target, rows=5000, seed=7)

    with target.open(newline="") as handle:
        rows = list(csv.DictReader(handle))

    assert len(rows) == 5000
    for column, rate in generator.MISSING_RATES.items():
        empty = sum(1 for row in rows if row[column] == "")
        assert empty == round(rate * 5000), column
    assert all(row["id"] and row["name"] for row in rows)


def test_profile_is_json(generator, tmp_path):
    target = tmp_path / "employees.csv"
    generator.generate(target, rows=200)

    with target.open(newline="") as handle:
        profiles = [row["profile"] for row in csv.DictReader(handle) if row["profile"]]

    assert profiles
    for profile in profiles:
        assert set(json.loads(profile)) == {"address", "phone", "email"}


def test_size_target_reached(generator, tmp_path):
    target = tmp_path / "sized.csv"

    generator.generate(target, size_bytes=200_000)

    assert 200_000 <= target.stat().st_size < 200_000 + 400


def test_seed_changes_output(generator, tmp_path):
    first, second = tmp_path / "a.csv", tmp_path / "b.csv"

    generator.generate(first, rows=100, seed=1)
    generator.generate(second, rows=100, seed=2)

    assert first.read_bytes() != second.read_bytes()
