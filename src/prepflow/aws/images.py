"""The container image of a processing job on SageMaker."""

from __future__ import annotations

from prepflow.errors import ConfigurationError
from prepflow.settings import Settings

SKLEARN_REPOSITORY = "sagemaker-scikit-learn"

# AWS account that hosts the prebuilt scikit-learn images in each region. Source: the
# "registries" of the SageMaker Python SDK's src/sagemaker/image_uri_config/sklearn.json
# (github.com/aws/sagemaker-python-sdk, commit ef7c5a006a09); every version there lists
# the same accounts.
SKLEARN_REGISTRY_ACCOUNTS: dict[str, str] = {
    "af-south-1": "510948584623",
    "ap-east-1": "651117190479",
    "ap-northeast-1": "354813040037",
    "ap-northeast-2": "366743142698",
    "ap-northeast-3": "867004704886",
    "ap-south-1": "720646828776",
    "ap-south-2": "628508329040",
    "ap-southeast-1": "121021644041",
    "ap-southeast-2": "783357654285",
    "ap-southeast-3": "951798379941",
    "ap-southeast-4": "106583098589",
    "ca-central-1": "341280168497",
    "ca-west-1": "190319476487",
    "cn-north-1": "450853457545",
    "cn-northwest-1": "451049120500",
    "eu-central-1": "492215442770",
    "eu-central-2": "680994064768",
    "eu-north-1": "662702820516",
    "eu-south-1": "978288397137",
    "eu-south-2": "104374241257",
    "eu-west-1": "141502667606",
    "eu-west-2": "764974769150",
    "eu-west-3": "659782779980",
    "il-central-1": "898809789911",
    "me-central-1": "272398656194",
    "me-south-1": "801668240914",
    "sa-east-1": "737474898029",
    "us-east-1": "683313688378",
    "us-east-2": "257758044811",
    "us-gov-east-1": "237065988967",
    "us-gov-west-1": "414596584902",
    "us-iso-east-1": "833128469047",
    "us-isob-east-1": "281123927165",
    "us-west-1": "746614075791",
    "us-west-2": "246618743249",
}

# SKLEARN_VERSION values that the same file lists. NOTE: images that AWS publishes later are
# missing until this list is updated; PROCESSING_IMAGE_URI can name them meanwhile.
SKLEARN_VERSIONS = ("0.20.0", "0.23-1", "1.0-1", "1.2-1")

# DNS suffix of each partition whose regions the table holds, by region-name prefix. Source:
# "dnsSuffix" of the partitions in botocore 1.44's data/endpoints.json. Other regions,
# GovCloud (us-gov-*) included, use amazonaws.com.
PARTITION_DOMAINS = (
    ("us-isob-", "sc2s.sgov.gov"),
    ("us-iso-", "c2s.ic.gov"),
    ("cn-", "amazonaws.com.cn"),
)
DEFAULT_DOMAIN = "amazonaws.com"


def image_uri(settings: Settings) -> str:
    """Return the job's image: PROCESSING_IMAGE_URI if set, else SageMaker's scikit-learn image.

    The prebuilt image is ``<account>.dkr.ecr.<region>.<domain>/sagemaker-scikit-learn:
    <SKLEARN_VERSION>-cpu-py3`` for the settings' region. Raises ConfigurationError for a
    region or version missing from the tables above.
    """
    if settings.processing_image_uri:
        return settings.processing_image_uri

    region = settings.region
    account = SKLEARN_REGISTRY_ACCOUNTS.get(region)
    if account is None:
        raise ConfigurationError(
            f"no prebuilt scikit-learn processing image is known for region {region!r}. "
            "Set PROCESSING_IMAGE_URI to an image in that region's ECR"
        )
    version = settings.sklearn_version
    if version not in SKLEARN_VERSIONS:
        raise ConfigurationError(
            f"SKLEARN_VERSION={version!r} is not a known scikit-learn image version "
            f"({', '.join(SKLEARN_VERSIONS)}). Set one of those, or set PROCESSING_IMAGE_URI "
            "to the full image URI"
        )
    return f"{account}.dkr.ecr.{region}.{_domain(region)}/{SKLEARN_REPOSITORY}:{version}-cpu-py3"


def _domain(region: str) -> str:
    for prefix, domain in PARTITION_DOMAINS:
        if region.startswith(prefix):
            return domain
    return DEFAULT_DOMAIN
