"""Settings: precedence (command line, then environment, then default) and error messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from prepflow.errors import ConfigurationError
from prepflow.settings import LOCAL_IMAGE_URI, LOCAL_ROLE_ARN, Buckets, load_settings

# -- precedence ---------------------------------------------------------------------------------


def test_override_beats_environment(clean_env):
    clean_env.setenv("APP_PREFIX", "from-env")

    settings = load_settings(app_prefix="from-cli")

    assert settings.app_prefix == "from-cli"


def test_environment_beats_default(clean_env):
    clean_env.setenv("APP_PREFIX", "from-env")

    assert load_settings().app_prefix == "from-env"


def test_default_without_environment(clean_env):
    assert load_settings().app_prefix == "mlops-lambda-preprocessing-pipeline"


def test_none_override_means_not_given(clean_env):
    clean_env.setenv("APP_PREFIX", "from-env")

    assert load_settings(app_prefix=None).app_prefix == "from-env"


def test_override_beats_environment_for_path(clean_env, tmp_path):
    clean_env.setenv("PREPFLOW_HOME", str(tmp_path / "env-home"))

    settings = load_settings(home=tmp_path / "cli-home")

    assert settings.home == tmp_path / "cli-home"


def test_environment_home(clean_env, tmp_path):
    clean_env.setenv("PREPFLOW_HOME", str(tmp_path / "env-home"))

    assert load_settings().home == tmp_path / "env-home"


def test_variable_name_case_insensitive(clean_env):
    clean_env.setenv("prepflow_input_prefix", "lower/")

    assert load_settings().input_prefix == "lower/"


@pytest.mark.parametrize(
    ("variable", "value", "field", "expected"),
    [
        ("PROCESSING_INSTANCE_TYPE", "ml.m5.2xlarge", "processing_instance_type", "ml.m5.2xlarge"),
        ("PROCESSING_INSTANCE_COUNT", "4", "processing_instance_count", 4),
        ("SKLEARN_VERSION", "1.4-2", "sklearn_version", "1.4-2"),
        ("LOG_LEVEL", "DEBUG", "log_level", "DEBUG"),
        ("PREPFLOW_MAX_RUNTIME_SECONDS", "600", "max_runtime_seconds", 600),
        ("PREPFLOW_MAX_CONCURRENT_JOBS", "3", "max_concurrent_jobs", 3),
        ("PREPFLOW_ISOLATION", "none", "isolation", "none"),
        ("PREPFLOW_VOLUME_SIZE_GB", "50", "volume_size_gb", 50),
        ("PREPFLOW_JOB_NAME_PREFIX", "acme", "job_name_prefix", "acme"),
        ("PROCESSING_IMAGE_URI", "img:2", "processing_image_uri", "img:2"),
    ],
)
def test_environment_variable_read(clean_env, variable, value, field, expected):
    clean_env.setenv(variable, value)

    assert getattr(load_settings(), field) == expected


def test_aws_region_beats_default_region(clean_env):
    clean_env.setenv("AWS_REGION", "eu-west-1")
    clean_env.setenv("AWS_DEFAULT_REGION", "us-west-2")

    assert load_settings().region == "eu-west-1"


def test_default_region_variable(clean_env):
    clean_env.setenv("AWS_DEFAULT_REGION", "us-west-2")

    assert load_settings().region == "us-west-2"


def test_defaults(clean_env):
    settings = load_settings()

    assert settings.region == "us-east-1"
    assert settings.input_prefix == "input/"
    assert settings.output_prefix == "output/"
    assert settings.input_suffixes == (".csv", ".parquet", ".jsonl", ".ndjson", ".json", ".gz")
    assert settings.job_name_prefix == "prepflow"
    assert settings.max_runtime_seconds == 3600
    assert settings.processing_instance_count == 1
    assert settings.volume_size_gb == 30
    assert settings.isolation == "auto"


def test_default_home_ignores_home_variable(clean_env, tmp_path):
    clean_env.setenv("HOME", str(tmp_path))

    assert load_settings().home == Path(".prepflow")


def test_field_name_variable_ignored(clean_env):
    clean_env.setenv("INPUT_PREFIX", "elsewhere/")

    assert load_settings().input_prefix == "input/"


# -- bucket names -------------------------------------------------------------------------------


def test_bucket_names_from_app_prefix(clean_env):
    clean_env.setenv("APP_PREFIX", "acme")

    assert load_settings().buckets == Buckets(
        raw="acme-raw-data-bucket",
        processed="acme-processed-data-bucket",
        model_artifacts="acme-model-artifacts-bucket",
        logs="acme-logs-bucket",
        feature_store="acme-feature-store-bucket",
    )


def test_bucket_names_from_default_prefix(clean_env):
    buckets = load_settings().buckets

    assert buckets.raw == "mlops-lambda-preprocessing-pipeline-raw-data-bucket"
    assert buckets.logs == "mlops-lambda-preprocessing-pipeline-logs-bucket"


@pytest.mark.parametrize(
    ("variable", "attribute"),
    [
        ("PREPFLOW_RAW_BUCKET", "raw"),
        ("PREPFLOW_PROCESSED_BUCKET", "processed"),
        ("PREPFLOW_MODEL_ARTIFACTS_BUCKET", "model_artifacts"),
        ("PREPFLOW_LOGS_BUCKET", "logs"),
        ("PREPFLOW_FEATURE_STORE_BUCKET", "feature_store"),
    ],
)
def test_bucket_override_variable(clean_env, variable, attribute):
    clean_env.setenv("APP_PREFIX", "acme")
    clean_env.setenv(variable, "my-own-bucket")

    buckets = load_settings().buckets

    assert getattr(buckets, attribute) == "my-own-bucket"
    others = {name: value for name, value in vars(buckets).items() if name != attribute}
    assert all(value.startswith("acme-") for value in others.values())


def test_role_and_image_local_placeholders(clean_env):
    settings = load_settings()

    assert settings.role_arn == LOCAL_ROLE_ARN
    assert settings.image_uri == LOCAL_IMAGE_URI


def test_role_from_environment(clean_env):
    clean_env.setenv("SAGEMAKER_ROLE_ARN", "arn:aws:iam::111122223333:role/prepflow")

    assert load_settings().role_arn == "arn:aws:iam::111122223333:role/prepflow"


# -- prefixes and suffixes ----------------------------------------------------------------------


def test_prefix_gets_trailing_slash(clean_env):
    clean_env.setenv("PREPFLOW_INPUT_PREFIX", "incoming")

    assert load_settings().input_prefix == "incoming/"


def test_empty_prefix_stays_empty(clean_env):
    assert load_settings(output_prefix="").output_prefix == ""


def test_prefix_leading_slash_rejected(clean_env):
    clean_env.setenv("PREPFLOW_OUTPUT_PREFIX", "/output/")

    with pytest.raises(ConfigurationError, match="PREPFLOW_OUTPUT_PREFIX='/output/'"):
        load_settings()


def test_input_suffixes_comma_form(clean_env):
    clean_env.setenv("PREPFLOW_INPUT_SUFFIXES", " csv, .TSV ,,json.GZ")

    assert load_settings().input_suffixes == (".csv", ".tsv", ".json.gz")


def test_input_suffixes_single(clean_env):
    clean_env.setenv("PREPFLOW_INPUT_SUFFIXES", "parquet")

    assert load_settings().input_suffixes == (".parquet",)


def test_input_suffixes_empty_rejected(clean_env):
    clean_env.setenv("PREPFLOW_INPUT_SUFFIXES", " , ")

    with pytest.raises(ConfigurationError, match="PREPFLOW_INPUT_SUFFIXES"):
        load_settings()


def test_input_suffixes_override_list(clean_env):
    assert load_settings(input_suffixes=["CSV", ".tsv"]).input_suffixes == (".csv", ".tsv")


# -- invalid values -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("PREPFLOW_MAX_RUNTIME_SECONDS", "0"),
        ("PREPFLOW_MAX_RUNTIME_SECONDS", "777601"),
        ("PROCESSING_INSTANCE_COUNT", "many"),
        ("PROCESSING_INSTANCE_COUNT", "101"),
        ("PREPFLOW_JOB_NAME_PREFIX", "bad_prefix"),
        ("PREPFLOW_JOB_NAME_PREFIX", "x" * 21),
        ("PREPFLOW_ISOLATION", "chroot"),
        ("LOG_LEVEL", "LOUD"),
        ("APP_PREFIX", "ab"),
        ("PREPFLOW_MAX_CONCURRENT_JOBS", "0"),
        ("PREPFLOW_VOLUME_SIZE_GB", "0"),
    ],
)
def test_invalid_variable_named_in_error(clean_env, variable, value):
    clean_env.setenv(variable, value)

    with pytest.raises(ConfigurationError) as caught:
        load_settings()

    assert f"{variable}={value!r}" in str(caught.value)


def test_invalid_override_names_variable(clean_env):
    with pytest.raises(ConfigurationError) as caught:
        load_settings(max_runtime_seconds=0)

    assert "PREPFLOW_MAX_RUNTIME_SECONDS=0" in str(caught.value)


def test_invalid_error_keeps_cause(clean_env):
    clean_env.setenv("PROCESSING_INSTANCE_COUNT", "many")

    with pytest.raises(ConfigurationError) as caught:
        load_settings()

    assert caught.value.__cause__ is not None


def test_invalid_values_all_reported(clean_env):
    clean_env.setenv("PROCESSING_INSTANCE_COUNT", "0")
    clean_env.setenv("PREPFLOW_ISOLATION", "chroot")

    with pytest.raises(ConfigurationError) as caught:
        load_settings()

    assert "PROCESSING_INSTANCE_COUNT='0'" in str(caught.value)
    assert "PREPFLOW_ISOLATION='chroot'" in str(caught.value)


def test_unknown_override_rejected(clean_env):
    with pytest.raises(ConfigurationError, match="no_such_setting"):
        load_settings(no_such_setting=1)
