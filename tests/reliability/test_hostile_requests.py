"""Hostile recipes and manual requests: a clear error naming the field, and no code run.

Recipes that try to run code would create a marker file if any of it ran; the tests check
that the marker never appears.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prepflow.errors import ConfigurationError, RecipeError
from prepflow.jobs.template import upload_recipe
from prepflow.orchestrator import OutcomeKind

DATA = b"order_id,amount\n1,10\n2,20\n"
RAW = "mlops-lambda-preprocessing-pipeline-raw-data-bucket"
PROCESSED = "mlops-lambda-preprocessing-pipeline-processed-data-bucket"

# (what the recipe tries, recipe text with {marker}, text the error must contain)
CODE_RECIPES = [
    (
        "YAML tag python/object/apply",
        "steps: !!python/object/apply:os.system ['touch {marker}']\n",
        "could not determine a constructor for the tag",
    ),
    (
        "YAML tag python/name",
        "input: !!python/name:os.system\n",
        "could not determine a constructor for the tag",
    ),
    (
        "YAML tag python/object/new",
        "output: !!python/object/new:subprocess.Popen [['touch', '{marker}']]\n",
        "could not determine a constructor for the tag",
    ),
    (
        "filter calling __import__",
        "steps:\n- step: filter\n  where: \"__import__('os').system('touch {marker}')\"\n",
        "steps[0] (filter).where",
    ),
    (
        "filter with attribute access",
        'steps:\n- step: filter\n  where: "amount.__class__.__mro__ == 1"\n',
        "steps[0] (filter).where",
    ),
    (
        "filter with a call",
        "steps:\n- step: filter\n  where: \"open('{marker}', 'w')\"\n",
        "steps[0] (filter).where",
    ),
    (
        "filter with a lambda",
        "steps:\n- step: filter\n  where: \"(lambda: open('{marker}', 'w'))() == 1\"\n",
        "steps[0] (filter).where",
    ),
]

# (what is wrong, recipe text, field path the error must name)
INVALID_RECIPES = [
    ("wrong type", "output: {split: {train: many}}\n", "output.split.train"),
    ("wrong type in a list", "steps: [{step: clip, columns: amount, min: 0}]\n", "columns"),
    ("unknown field", "output: {format: csv, run: 'touch x'}\n", "output.run"),
    ("unknown step", "steps: [{step: shell, command: 'touch x'}]\n", "steps[0]"),
    ("unknown top-level field", "hooks: {before: 'touch x'}\n", "hooks"),
    (
        "escape_formulas not a boolean",
        "output: {escape_formulas: maybe}\n",
        "output.escape_formulas",
    ),
]

# (what is wrong, artifacts.apply value)
OUTSIDE_ARTIFACTS = [
    ("another bucket", "s3://someone-elses-bucket/artifacts/job/artifacts.json"),
    ("'..' in a job name", "../../etc"),
    ("absolute path", "/etc/passwd"),
    (
        "'..' in the key",
        "s3://mlops-lambda-preprocessing-pipeline-model-artifacts-bucket/../x.json",
    ),
    ("absolute key", "s3://mlops-lambda-preprocessing-pipeline-model-artifacts-bucket//etc/passwd"),
]


@pytest.fixture
def app(make_app):
    return make_app(isolation="none")


def write_recipe(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("tried", "text", "expected"), CODE_RECIPES, ids=[c[0] for c in CODE_RECIPES]
)
def test_recipe_code_never_runs(app, tmp_path, tried, text, expected, figures):
    marker = tmp_path / "marker"
    recipe = write_recipe(tmp_path, text.format(marker=marker))

    with pytest.raises(RecipeError) as raised:
        upload_recipe(app.store, app.settings, recipe)

    assert expected in str(raised.value)
    assert not marker.exists()
    assert list(app.store.list_objects(app.settings.buckets.model_artifacts)) == []
    figures.record(f"recipe with {tried}", 1, "rejected before upload; marker file never created")


@pytest.mark.parametrize(
    ("tried", "text", "field"), INVALID_RECIPES, ids=[c[0] for c in INVALID_RECIPES]
)
def test_invalid_recipe_names_field(app, tmp_path, tried, text, field, figures):
    recipe = write_recipe(tmp_path, text)

    with pytest.raises(RecipeError) as raised:
        upload_recipe(app.store, app.settings, recipe)

    assert field in str(raised.value)
    figures.record(f"recipe with {tried}", 1, f"rejected naming {field}")


@pytest.mark.parametrize(
    ("tried", "value"), OUTSIDE_ARTIFACTS, ids=[c[0] for c in OUTSIDE_ARTIFACTS]
)
def test_artifacts_outside_deployment_rejected(app, tmp_path, tried, value, figures):
    recipe = write_recipe(tmp_path, f"artifacts: {{apply: {json.dumps(value)}}}\n")

    with pytest.raises(ConfigurationError) as raised:
        upload_recipe(app.store, app.settings, recipe)

    assert "artifacts.apply" in str(raised.value)
    assert repr(value) in str(raised.value)
    figures.record(
        f"artifacts.apply pointing outside ({tried})", 1, "rejected naming artifacts.apply"
    )


def test_run_with_code_recipe_exits_2(cli, tmp_path):
    marker = tmp_path / "marker"
    recipe = write_recipe(tmp_path, f"steps: !!python/object/apply:os.system ['touch {marker}']\n")
    data = tmp_path / "orders.csv"
    data.write_bytes(DATA)

    result = cli("run", "--recipe", str(recipe), str(data), env={"PREPFLOW_ISOLATION": "none"})

    assert result.returncode == 2
    assert "is not valid YAML" in result.stderr
    assert "Traceback" not in result.stderr
    assert not marker.exists()


# (what is wrong, manual request, field the error must name)
BAD_REQUESTS = [
    ("unknown field", {"input_data_path": f"s3://{RAW}/input/a.csv", "command": "x"}, "command"),
    ("input not text", {"input_data_path": 5}, "input_data_path"),
    ("input not an S3 URI", {"input_data_path": "/etc/passwd"}, "input_data_path"),
    (
        "output not text",
        {"input_data_path": f"s3://{RAW}/input/a.csv", "output_data_path": []},
        "output_data_path",
    ),
    (
        "request_id not text",
        {"input_data_path": f"s3://{RAW}/input/a.csv", "request_id": {"a": 1}},
        "request_id",
    ),
    (
        "input in another bucket",
        {"input_data_path": "s3://someone-elses-bucket/input/a.csv"},
        "input_data_path",
    ),
    (
        "'..' in the input key",
        {"input_data_path": f"s3://{RAW}/input/../../../etc/passwd"},
        "input_data_path",
    ),
    ("absolute input key", {"input_data_path": f"s3://{RAW}//etc/passwd"}, "input_data_path"),
    ("'..' in the input prefix", {"input_data_path": f"s3://{RAW}/input/../"}, "input_data_path"),
    (
        "NUL in the input key",
        {"input_data_path": f"s3://{RAW}/input/a\u0000.csv"},
        "input_data_path",
    ),
    ("'..' as the bucket", {"input_data_path": "s3://../input/a.csv"}, "input_data_path"),
    (
        "output in another bucket",
        {
            "input_data_path": f"s3://{RAW}/input/a.csv",
            "output_data_path": "s3://someone-elses-bucket/out/",
        },
        "output_data_path",
    ),
    (
        "'..' in the output prefix",
        {
            "input_data_path": f"s3://{RAW}/input/a.csv",
            "output_data_path": f"s3://{PROCESSED}/output/../../x/",
        },
        "output_data_path",
    ),
    (
        "absolute output prefix",
        {
            "input_data_path": f"s3://{RAW}/input/a.csv",
            "output_data_path": f"s3://{PROCESSED}//tmp/x/",
        },
        "output_data_path",
    ),
]


def test_bad_manual_requests_name_field(app, figures):
    app.store.put_object(RAW, "input/a.csv", DATA)

    for tried, request, field in BAD_REQUESTS:
        result = app.orchestrator.handle(request)

        (outcome,) = result.outcomes
        assert outcome.kind == OutcomeKind.FAILED, tried
        assert field in (outcome.reason or ""), (tried, outcome.reason)
    assert app.jobs.list_jobs() == []
    for tried, _, field in BAD_REQUESTS:
        figures.record(f"manual request: {tried}", 1, f"failed naming {field}; no job")


def test_invoke_bad_request_exits_1(cli, home):
    request = {"input_data_path": f"s3://{RAW}/input/../../../etc/passwd"}

    result = cli("invoke", json.dumps(request), env={"PREPFLOW_ISOLATION": "none"})

    assert result.returncode == 1
    assert "input_data_path" in result.stderr
    assert "'..' path segment" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (home / "jobs").exists() or not any((home / "jobs").iterdir())
