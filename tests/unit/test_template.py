"""The job request of the built-in step: recipe and fitted inputs, side outputs."""

from __future__ import annotations

import pytest

from prepflow.errors import ConfigurationError, RecipeError
from prepflow.jobs.template import (
    StepTemplate,
    artifacts_uri,
    build_spec,
    side_output_uris,
    upload_recipe,
)
from prepflow.orchestrator import check_no_recursion, write_locations
from prepflow.settings import load_settings
from prepflow.storage.local import LocalObjectStore

NAME = "prepflow-orders-0123456789ab"


@pytest.fixture
def settings(clean_env, tmp_path):
    return load_settings(app_prefix="acme", home=str(tmp_path / "home"))


@pytest.fixture
def store(tmp_path):
    return LocalObjectStore(tmp_path / "home")


def spec_of(settings, step):
    return build_spec(
        settings,
        step,
        name=NAME,
        manifest_uri="s3://acme-model-artifacts-bucket/manifests/x.manifest",
        output_uri=f"s3://acme-processed-data-bucket/output/{NAME}/",
    )


def outputs_of(spec):
    return {
        output.output_name: (output.s3_output.s3_uri, output.s3_output.local_path)
        for output in spec.processing_output_config.outputs
    }


def inputs_of(spec):
    return {
        item.input_name: (item.s3_input.s3_uri, item.s3_input.local_path)
        for item in spec.processing_inputs
    }


def test_built_in_side_outputs(settings):
    outputs = outputs_of(spec_of(settings, StepTemplate.built_in()))

    assert outputs["rejected"] == (
        f"s3://acme-processed-data-bucket/rejected/{NAME}/",
        "/opt/ml/processing/rejected",
    )
    assert outputs["report"] == (
        f"s3://acme-logs-bucket/reports/{NAME}/",
        "/opt/ml/processing/report",
    )
    assert outputs["artifacts"] == (
        f"s3://acme-model-artifacts-bucket/artifacts/{NAME}/",
        "/opt/ml/processing/artifacts",
    )


def test_user_script_has_one_output(settings):
    step = StepTemplate.for_script("s3://acme-model-artifacts-bucket/scripts/abc/", "s.py")

    assert list(outputs_of(spec_of(settings, step))) == ["processed"]


def test_side_outputs_match_spec(settings):
    outputs = outputs_of(spec_of(settings, StepTemplate.built_in()))

    for name, uri in side_output_uris(settings, NAME).items():
        assert outputs[name][0] == uri


def test_recipe_uploaded_by_content(settings, store, tmp_path):
    recipe = tmp_path / "mine.yaml"
    recipe.write_text("steps:\n  - {step: drop_missing}\n")

    step = upload_recipe(store, settings, recipe)

    uri, local_path = inputs_of(spec_of(settings, step))["recipe"]
    assert local_path == "/opt/ml/processing/recipe"
    assert uri.startswith("s3://acme-model-artifacts-bucket/recipes/")
    key = uri.removeprefix("s3://acme-model-artifacts-bucket/") + "recipe.yaml"
    assert store.get_object("acme-model-artifacts-bucket", key) == recipe.read_bytes()


def test_invalid_recipe_uploads_nothing(settings, store, tmp_path):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("output: {format: xlsx}\n")

    with pytest.raises(RecipeError, match=r"output\.format"):
        upload_recipe(store, settings, recipe)

    assert list(store.list_objects("acme-model-artifacts-bucket", "recipes/")) == []


def test_recipe_applies_job_artifacts(settings, store, tmp_path):
    store.put_object(
        "acme-model-artifacts-bucket", "artifacts/prepflow-train-aaaaaaaaaaaa/artifacts.json", b"{}"
    )
    recipe = tmp_path / "apply.yaml"
    recipe.write_text("artifacts: {apply: prepflow-train-aaaaaaaaaaaa}\n")

    step = upload_recipe(store, settings, recipe)

    assert inputs_of(spec_of(settings, step))["fitted"] == (
        "s3://acme-model-artifacts-bucket/artifacts/prepflow-train-aaaaaaaaaaaa/artifacts.json",
        "/opt/ml/processing/fitted",
    )


def test_missing_artifacts_rejected(settings, store, tmp_path):
    recipe = tmp_path / "apply.yaml"
    recipe.write_text("artifacts: {apply: s3://acme-model-artifacts-bucket/nope.json}\n")

    with pytest.raises(ConfigurationError, match=r"nope\.json does not exist"):
        upload_recipe(store, settings, recipe)


def test_artifacts_uri_of_job_name(settings):
    assert artifacts_uri(settings, "job-1") == (
        "s3://acme-model-artifacts-bucket/artifacts/job-1/artifacts.json"
    )
    assert artifacts_uri(settings, "s3://b/k.json") == "s3://b/k.json"


def test_recipe_locations_not_watched(clean_env, tmp_path):
    shared = load_settings(
        app_prefix="acme",
        raw_bucket="acme-one",
        model_artifacts_bucket="acme-one",
        input_prefix="artifacts/",
        home=str(tmp_path),
    )

    assert ("acme-one", "recipes/") in [(w.bucket, w.prefix) for w in write_locations(shared)]
    with pytest.raises(ConfigurationError, match="artifacts/"):
        check_no_recursion(shared)
