"""Notifications on SNS: one message for each job that reaches a terminal status.

The message is JSON, so a subscriber (an email, a queue, a chat webhook) can read each
field. It carries the status as the message attribute ``status`` too, so a subscription's
filter policy can deliver, for example, only failures.
"""

from __future__ import annotations

import json
import logging
import re
from datetime import datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from prepflow.errors import ConfigurationError, NotificationError
from prepflow.jobs.spec import JobStatus
from prepflow.jobs.template import REPORT_OUTPUT
from prepflow.jobstore.base import JobRecord
from prepflow.processing.paths import REPORT_HTML

logger = logging.getLogger(__name__)

# SNS Publish (API reference): a Subject is text without line breaks or control characters,
# less than 100 characters long. prepflow's subjects keep to printable ASCII.
MAX_SUBJECT_LENGTH = 99
# Inputs listed in one message. A manual request over a prefix may read thousands of objects,
# and an SNS message is at most 256 KB.
MAX_LISTED_INPUTS = 100
TOPIC_ARN_PATTERN = re.compile(
    r"^arn:(aws[a-z-]*):sns:([a-z0-9-]+):(\d{12}):[A-Za-z0-9_.-]{1,256}$"
)
_NOT_SUBJECT_CHARACTERS = re.compile(r"[^\x20-\x7e]+")


class JobNotifier:
    """Publishes a job's terminal status to one SNS topic."""

    def __init__(self, client: Any, topic_arn: str) -> None:
        match = TOPIC_ARN_PATTERN.match(topic_arn)
        if match is None:
            raise ConfigurationError(
                f"PREPFLOW_TOPIC_ARN={topic_arn!r} is not an SNS topic ARN; expected "
                "arn:aws:sns:<region>:<12-digit account>:<topic name>"
            )
        self.client = client
        self.topic_arn = topic_arn
        self.region = match.group(2)

    def publish(self, record: JobRecord) -> str:
        """Publish the job's message and return SNS's message id.

        Raises NotificationError, with SNS's error as its cause, when SNS does not accept it.
        """
        message = job_message(record, self.region)
        try:
            response = self.client.publish(
                TopicArn=self.topic_arn,
                Subject=subject(record),
                Message=json.dumps(message, ensure_ascii=False),
                MessageAttributes={
                    "status": {"DataType": "String", "StringValue": str(record.status)}
                },
            )
        except (ClientError, BotoCoreError) as error:
            raise NotificationError(
                f"cannot publish the {record.status} notification of job {record.job_name!r} "
                f"to {self.topic_arn}: {error}; check that the topic exists and that the role "
                "may call sns:Publish on it"
            ) from error
        message_id = str(response["MessageId"])
        logger.info(
            "published %s notification of job %s (SNS message %s)",
            record.status,
            record.job_name,
            message_id,
        )
        return message_id


def subject(record: JobRecord) -> str:
    """Return the SNS subject: the status and the job name, cut to SNS's limit."""
    text = _NOT_SUBJECT_CHARACTERS.sub(" ", f"prepflow job {record.status}: {record.job_name}")
    return text[:MAX_SUBJECT_LENGTH].rstrip()


def job_message(record: JobRecord, region: str) -> dict[str, Any]:
    """Return the notification's fields for a job record."""
    return {
        "job_name": record.job_name,
        "status": str(record.status),
        "failure_reason": record.failure_reason,
        "inputs": record.inputs[:MAX_LISTED_INPUTS],
        "input_count": len(record.inputs),
        "outputs": record.outputs,
        "report": report_uri(record),
        "console_url": console_url(region, record.job_name),
        "started_at": _iso(record.started_at),
        "ended_at": _iso(record.ended_at),
        "rows_in": record.rows_in,
        "rows_out": record.rows_out,
        "rows_rejected": record.rows_rejected,
        "log_tail": record.log_tail,
    }


def report_uri(record: JobRecord) -> str | None:
    """Return the S3 URI of a completed job's HTML report, or None if its step writes none."""
    if record.status != JobStatus.COMPLETED:
        return None
    outputs = record.request.get("ProcessingOutputConfig", {}).get("Outputs", [])
    for output in outputs:
        if output.get("OutputName") == REPORT_OUTPUT[0]:
            folder = str(output["S3Output"]["S3Uri"])
            return folder.rstrip("/") + "/" + REPORT_HTML
    return None


def console_url(region: str, job_name: str) -> str:
    """Return the SageMaker console page of a processing job.

    NOTE: the console of the China and GovCloud partitions has another domain; this URL is
    right for the commercial ``aws`` partition only.
    """
    return (
        f"https://{region}.console.aws.amazon.com/sagemaker/home?region={region}"
        f"#/processing-jobs/{job_name}"
    )


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None
