"""Names that the Lambda handlers and the deployment's alarms and dashboard must agree on.

The handlers emit their metrics in CloudWatch's embedded metric format (EMF) with these
names, and ``infra/monitoring.py`` reads the same metrics back, so a rename here changes
both sides together.
"""

from __future__ import annotations

from enum import StrEnum

# The EventBridge events that report a SageMaker Processing job's state changes.
STATE_CHANGE_SOURCE = "aws.sagemaker"
STATE_CHANGE_DETAIL_TYPE = "SageMaker Processing Job State Change"

# Powertools' ``service`` value. Powertools also adds it to every metric as the dimension
# SERVICE_DIMENSION.
SERVICE = "prepflow"
METRICS_NAMESPACE = "prepflow"
SERVICE_DIMENSION = "service"
# Dimension that keeps the metrics of two deployments in one account and region apart. Its
# value is the deployment's APP_PREFIX.
DEPLOYMENT_DIMENSION = "deployment"

# Metric that the trigger function's log group derives from its ERROR and CRITICAL lines.
# Its only dimension is LOG_FUNCTION_DIMENSION, taken from the ``function_name`` field that
# Powertools' Logger adds to every line once ``inject_lambda_context`` ran.
ERROR_LOGS_METRIC = "ErrorLogs"
LOG_FUNCTION_DIMENSION = "function_name"


class Metric(StrEnum):
    """Counts in EMF: one value per invocation in which they are not zero."""

    JOBS_STARTED = "JobsStarted"
    # Trigger events whose job already existed, and state events that changed nothing
    # (repeats, and reports older than the stored status).
    DUPLICATE_EVENTS = "DuplicateEvents"
    # Trigger events that start no job by design (test events, folders, other prefixes), and
    # state events of other deployments' jobs or of jobs not in the store.
    EVENTS_SKIPPED = "EventsSkipped"
    # Trigger events for which no job could be started; each is retried or dead-lettered.
    TRIGGER_FAILURES = "TriggerFailures"
    JOBS_COMPLETED = "JobsCompleted"
    JOBS_FAILED = "JobsFailed"
    JOBS_STOPPED = "JobsStopped"


def metric_dimensions(app_prefix: str) -> dict[str, str]:
    """Return the dimensions of every EMF metric that the deployment ``app_prefix`` emits."""
    return {SERVICE_DIMENSION: SERVICE, DEPLOYMENT_DIMENSION: app_prefix}
