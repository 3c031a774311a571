"""The tail of a processing job's log in CloudWatch Logs.

SageMaker writes what a processing job's container prints to the log group
``/aws/sagemaker/ProcessingJobs``, one log stream per instance, each named ``<job-name>/...``.
The group appears with the first job of an account and region, and a stream with the first
line its instance prints, so a missing group or stream means "no log", not an error.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from prepflow.errors import JobError

logger = logging.getLogger(__name__)

LOG_GROUP = "/aws/sagemaker/ProcessingJobs"
DEFAULT_TAIL_LINES = 50
# The tail goes into the job record (a DynamoDB item is at most 400 KB) and into the SNS
# message (at most 256 KB), so it is cut to its last characters.
MAX_TAIL_CHARS = 8_000
# GetLogEvents may return an empty page before the stream's last events, so a tail reads a
# few pages backwards before it settles for fewer lines.
MAX_PAGES_PER_STREAM = 5


@dataclass(frozen=True, order=True)
class _LogLine:
    timestamp: int
    stream: str
    message: str


def log_tail(
    client: Any,
    job_name: str,
    *,
    lines: int = DEFAULT_TAIL_LINES,
    max_chars: int = MAX_TAIL_CHARS,
) -> str | None:
    """Return the last ``lines`` lines of the job's log, oldest first, or None if it has none.

    With several instances, lines of all streams are merged by time and each starts with its
    stream's name after ``<job-name>/``. Raises JobError when CloudWatch Logs fails for
    another reason than a missing group or stream (access denied, throttling, network).
    """
    if lines < 1:
        raise ValueError(f"lines must be at least 1, got {lines}")
    try:
        streams = _stream_names(client, job_name)
        collected: list[_LogLine] = []
        for stream in streams:
            collected += _last_lines(client, stream, lines)
    except ClientError as error:
        if _error_code(error) == "ResourceNotFoundException":
            logger.info("no CloudWatch log for job %s in %s", job_name, LOG_GROUP)
            return None
        raise _read_error(job_name, error) from error
    except BotoCoreError as error:
        raise _read_error(job_name, error) from error

    if not collected:
        return None
    tail = sorted(collected)[-lines:]
    prefix = f"{job_name}/"
    labelled = len(streams) > 1
    text = "\n".join(
        f"[{line.stream.removeprefix(prefix)}] {line.message}" if labelled else line.message
        for line in tail
    )
    return text[-max_chars:]


def _stream_names(client: Any, job_name: str) -> list[str]:
    names: list[str] = []
    paginator = client.get_paginator("describe_log_streams")
    for page in paginator.paginate(logGroupName=LOG_GROUP, logStreamNamePrefix=f"{job_name}/"):
        names += [stream["logStreamName"] for stream in page.get("logStreams", [])]
    return sorted(names)


def _last_lines(client: Any, stream: str, lines: int) -> list[_LogLine]:
    """Read pages backwards from the end of ``stream`` until ``lines`` lines are found."""
    found: list[_LogLine] = []
    arguments: dict[str, Any] = {
        "logGroupName": LOG_GROUP,
        "logStreamName": stream,
        "startFromHead": False,
        # GetLogEvents returns at most 10,000 events per page.
        "limit": min(lines, 10_000),
    }
    for _ in range(MAX_PAGES_PER_STREAM):
        page = client.get_log_events(**arguments)
        events = page.get("events", [])
        found = [
            _LogLine(event["timestamp"], stream, event["message"].rstrip("\n")) for event in events
        ] + found
        token = page.get("nextBackwardToken")
        if len(found) >= lines or not token or token == arguments.get("nextToken"):
            break
        arguments["nextToken"] = token
    return found[-lines:]


def _error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def _read_error(job_name: str, error: Exception) -> JobError:
    return JobError(
        f"cannot read the log of processing job {job_name!r} from CloudWatch Logs group "
        f"{LOG_GROUP}: {error}; check that the role may call logs:DescribeLogStreams and "
        "logs:GetLogEvents"
    )
