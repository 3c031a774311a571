"""image_uri: the deployment's own image, else the prebuilt scikit-learn image of the region."""

from __future__ import annotations

import pytest

from prepflow.aws.images import SKLEARN_REGISTRY_ACCOUNTS, image_uri
from prepflow.errors import ConfigurationError
from prepflow.settings import load_settings


def test_image_uri_setting_wins():
    own = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/prepflow-processing:7"

    settings = load_settings(region="eu-west-1", processing_image_uri=own)

    assert image_uri(settings) == own


def test_image_uri_setting_wins_in_unknown_region():
    own = "123456789012.dkr.ecr.xx-test-1.amazonaws.com/prepflow-processing:7"

    assert image_uri(load_settings(region="xx-test-1", processing_image_uri=own)) == own


@pytest.mark.parametrize(
    ("region", "expected"),
    [
        (
            "eu-west-1",
            "141502667606.dkr.ecr.eu-west-1.amazonaws.com/sagemaker-scikit-learn:1.2-1-cpu-py3",
        ),
        (
            "us-east-1",
            "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn:1.2-1-cpu-py3",
        ),
        (
            "cn-north-1",
            "450853457545.dkr.ecr.cn-north-1.amazonaws.com.cn/sagemaker-scikit-learn:1.2-1-cpu-py3",
        ),
        (
            "us-gov-west-1",
            "414596584902.dkr.ecr.us-gov-west-1.amazonaws.com/sagemaker-scikit-learn:1.2-1-cpu-py3",
        ),
        (
            "us-iso-east-1",
            "833128469047.dkr.ecr.us-iso-east-1.c2s.ic.gov/sagemaker-scikit-learn:1.2-1-cpu-py3",
        ),
        (
            "us-isob-east-1",
            "281123927165.dkr.ecr.us-isob-east-1.sc2s.sgov.gov/sagemaker-scikit-learn:1.2-1-cpu-py3",
        ),
    ],
)
def test_image_uri_prebuilt_per_region(region, expected):
    assert image_uri(load_settings(region=region)) == expected


def test_image_uri_uses_sklearn_version():
    settings = load_settings(region="eu-west-1", sklearn_version="1.0-1")

    assert image_uri(settings).endswith("/sagemaker-scikit-learn:1.0-1-cpu-py3")


def test_image_uri_accounts_differ_by_region():
    assert len(set(SKLEARN_REGISTRY_ACCOUNTS.values())) == len(SKLEARN_REGISTRY_ACCOUNTS)


def test_image_uri_unknown_region_rejected():
    with pytest.raises(ConfigurationError) as caught:
        image_uri(load_settings(region="xx-test-1"))

    assert "'xx-test-1'" in str(caught.value)
    assert "PROCESSING_IMAGE_URI" in str(caught.value)


def test_image_uri_unknown_version_rejected():
    with pytest.raises(ConfigurationError) as caught:
        image_uri(load_settings(region="eu-west-1", sklearn_version="9.9-1"))

    assert "SKLEARN_VERSION='9.9-1'" in str(caught.value)
    assert "1.2-1" in str(caught.value)
    assert "PROCESSING_IMAGE_URI" in str(caught.value)
