"""Alarms, their encrypted SNS topic, and a dashboard of both functions and the jobs.

The job counts come from the embedded metric format (EMF) lines of the handlers, and the
error-log count from a metric filter on the trigger function's log group. Both use the names
in ``prepflow.aws.names``. Every alarm treats missing data as healthy: a function that is
not invoked reports no Errors, an empty queue may stop reporting, and the handlers emit a
count only when it is not zero.
"""

from __future__ import annotations

from aws_cdk import Aws, Duration, RemovalPolicy
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra.config import DeploymentConfig
from infra.job_state import JobState
from infra.trigger import Trigger
from prepflow.aws.names import (
    ERROR_LOGS_METRIC,
    LOG_FUNCTION_DIMENSION,
    METRICS_NAMESPACE,
    Metric,
    metric_dimensions,
)

PERIOD = Duration.minutes(5)
DASHBOARD_WIDTH = 12
DASHBOARD_HEIGHT = 6
# The processing-job counts on the dashboard, one line each.
JOB_METRICS = (Metric.JOBS_STARTED, Metric.JOBS_COMPLETED, Metric.JOBS_FAILED, Metric.JOBS_STOPPED)
CLOUDWATCH_PRINCIPAL = "cloudwatch.amazonaws.com"


class Monitoring(Construct):
    """Alarms on function errors, error logs, dead-lettered messages and failed jobs.

    Each alarm notifies ``self.topic``, which is encrypted with its own KMS key and sends
    e-mail to ``config.alarm_email`` when one is set.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: DeploymentConfig,
        trigger: Trigger,
        job_state: JobState,
    ) -> None:
        super().__init__(scope, construct_id)
        self._prefix = config.app_prefix
        self.key, self.topic = self._alarm_topic(config)

        self.error_logs = logs.MetricFilter(
            self,
            "TriggerErrorLogFilter",
            log_group=trigger.function.log_group,
            filter_pattern=error_log_pattern(),
            metric_namespace=METRICS_NAMESPACE,
            metric_name=ERROR_LOGS_METRIC,
            metric_value="1",
            dimensions={LOG_FUNCTION_DIMENSION: f"$.{LOG_FUNCTION_DIMENSION}"},
        )
        error_logs = cloudwatch.Metric(
            namespace=METRICS_NAMESPACE,
            metric_name=ERROR_LOGS_METRIC,
            dimensions_map={LOG_FUNCTION_DIMENSION: trigger.function.function_name},
            statistic=cloudwatch.Stats.SUM,
            period=PERIOD,
            label="trigger error log lines",
        )
        jobs_failed = self.job_metric(Metric.JOBS_FAILED)
        queues = {"trigger": trigger.dead_letter_queue, "job-state": job_state.dead_letter_queue}

        self.alarms = [
            self._alarm(
                "TriggerErrors",
                "trigger-errors",
                _errors(trigger.function),
                "The trigger function failed (an invocation raised or timed out).",
            ),
            self._alarm(
                "JobStateErrors",
                "job-state-errors",
                _errors(job_state.function),
                "The job-state function failed (an invocation raised or timed out).",
            ),
            self._alarm(
                "TriggerErrorLogs",
                "trigger-error-logs",
                error_logs,
                "The trigger function logged an ERROR line; its log group has the details.",
            ),
            self._alarm(
                "JobsFailed",
                "jobs-failed",
                jobs_failed,
                "A processing job ended with status Failed; the job notification has its reason.",
            ),
        ]
        for name, queue in queues.items():
            self.alarms.append(
                self._alarm(
                    f"{_construct_name(name)}DeadLetters",
                    f"{name}-dead-letters",
                    _depth(queue),
                    f"Messages wait in the {name} dead-letter queue: events that failed after "
                    "every retry. Inspect them, then redrive or delete them.",
                )
            )
        self.dashboard = self._dashboard(trigger, job_state, error_logs, queues)

    def job_metric(self, metric: Metric) -> cloudwatch.Metric:
        """Return the sum over PERIOD of one handler count of this deployment."""
        return cloudwatch.Metric(
            namespace=METRICS_NAMESPACE,
            metric_name=metric.value,
            dimensions_map=metric_dimensions(self._prefix),
            statistic=cloudwatch.Stats.SUM,
            period=PERIOD,
            label=metric.value,
        )

    def _alarm_topic(self, config: DeploymentConfig) -> tuple[kms.Key, sns.Topic]:
        key = kms.Key(
            self,
            "AlarmKey",
            description=f"Encrypts the alarm topic of {config.app_prefix}",
            enable_key_rotation=True,
            removal_policy=RemovalPolicy.RETAIN if config.retain_data else RemovalPolicy.DESTROY,
        )
        # CloudWatch publishes alarm notifications as a service, so the key policy itself must
        # let it encrypt messages for the topic (CloudWatch User Guide, "Using Amazon SNS
        # topics encrypted with AWS KMS").
        key.add_to_resource_policy(
            iam.PolicyStatement(
                principals=[iam.ServicePrincipal(CLOUDWATCH_PRINCIPAL)],
                actions=["kms:Decrypt", "kms:GenerateDataKey*"],
                resources=["*"],
            )
        )
        topic = sns.Topic(
            self,
            "AlarmTopic",
            topic_name=f"{config.app_prefix}-alarms",
            master_key=key,
            enforce_ssl=True,
        )
        # The topic policy that enforce_ssl adds replaces SNS's default policy, so CloudWatch
        # needs a statement of its own, limited to alarms of this account.
        topic.add_to_resource_policy(
            iam.PolicyStatement(
                principals=[iam.ServicePrincipal(CLOUDWATCH_PRINCIPAL)],
                actions=["sns:Publish"],
                resources=[topic.topic_arn],
                conditions={"StringEquals": {"aws:SourceAccount": Aws.ACCOUNT_ID}},
            )
        )
        if config.alarm_email:
            topic.add_subscription(subscriptions.EmailSubscription(config.alarm_email))
        return key, topic

    def _alarm(
        self, construct_id: str, name: str, metric: cloudwatch.IMetric, description: str
    ) -> cloudwatch.Alarm:
        """Return an alarm that fires on one occurrence of ``metric`` in a period."""
        alarm = cloudwatch.Alarm(
            self,
            construct_id,
            alarm_name=f"{self._prefix}-{name}",
            alarm_description=description,
            metric=metric,
            threshold=1,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            evaluation_periods=1,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        alarm.add_alarm_action(actions.SnsAction(self.topic))
        return alarm

    def _dashboard(
        self,
        trigger: Trigger,
        job_state: JobState,
        error_logs: cloudwatch.Metric,
        queues: dict[str, sqs.Queue],
    ) -> cloudwatch.Dashboard:
        functions = {"trigger": trigger.function, "job-state": job_state.function}
        durations: list[cloudwatch.IMetric] = []
        errors: list[cloudwatch.IMetric] = []
        for name, function in functions.items():
            for statistic in (cloudwatch.Stats.AVERAGE, cloudwatch.Stats.MAXIMUM):
                durations.append(
                    function.metric_duration(
                        statistic=statistic, period=PERIOD, label=f"{name} {statistic.lower()}"
                    )
                )
            errors.append(_errors(function, label=f"{name} errors"))
        errors.append(error_logs)

        dashboard = cloudwatch.Dashboard(self, "Dashboard", dashboard_name=self._prefix)
        dashboard.add_widgets(
            _graph("Function duration (ms)", durations),
            _graph("Function errors", errors),
        )
        dashboard.add_widgets(
            _graph("Processing jobs by status", [self.job_metric(m) for m in JOB_METRICS]),
            _graph(
                "Dead-letter queue depth",
                [_depth(queue, label=name) for name, queue in queues.items()],
            ),
        )
        dashboard.add_widgets(
            cloudwatch.AlarmStatusWidget(
                title="Alarms", alarms=self.alarms, width=2 * DASHBOARD_WIDTH
            )
        )
        return dashboard


def error_log_pattern() -> logs.IFilterPattern:
    """Return the pattern of the JSON lines that Powertools' Logger writes at ERROR or above.

    The ``function_name`` condition keeps lines without the field (written before the
    handler ran) out, because the metric takes its dimension from it.
    """
    return logs.FilterPattern.all(
        logs.FilterPattern.any(
            logs.FilterPattern.string_value("$.level", "=", "ERROR"),
            logs.FilterPattern.string_value("$.level", "=", "CRITICAL"),
        ),
        logs.FilterPattern.exists(f"$.{LOG_FUNCTION_DIMENSION}"),
    )


def _errors(function: lambda_.IFunction, *, label: str | None = None) -> cloudwatch.Metric:
    return function.metric_errors(statistic=cloudwatch.Stats.SUM, period=PERIOD, label=label)


def _depth(queue: sqs.IQueue, *, label: str | None = None) -> cloudwatch.Metric:
    return queue.metric_approximate_number_of_messages_visible(
        statistic=cloudwatch.Stats.MAXIMUM, period=PERIOD, label=label
    )


def _graph(title: str, metrics: list[cloudwatch.IMetric]) -> cloudwatch.GraphWidget:
    return cloudwatch.GraphWidget(
        title=title, left=metrics, width=DASHBOARD_WIDTH, height=DASHBOARD_HEIGHT
    )


def _construct_name(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("-"))
