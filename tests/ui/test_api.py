"""The dashboard's HTTP API against a real ``prepflow ui`` process, without a browser."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from prepflow.errors import ConfigurationError
from prepflow.ui.server import check_host
from tests.ui.conftest import REJECT_REASONS, Home

REQUEST_TIMEOUT_SECONDS = 30


def fetch(
    url: str, *, method: str = "GET", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """Send one request; return status, headers and body, also for error statuses."""
    request = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_SECONDS) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, dict(error.headers), error.read()


def fetch_json(url: str) -> tuple[int, Any]:
    status, headers, body = fetch(url)
    assert headers["Content-Type"] == "application/json"
    return status, json.loads(body)


def cli_json(home: Home, *args: str) -> Any:
    result = home.prepflow(*args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def file_url(server: str, uri: str) -> str:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return f"{server}files/{bucket}/{quote(key)}"


def test_jobs_equal_cli_list(home: Home, server: str) -> None:
    status, jobs = fetch_json(server + "api/jobs")

    assert status == 200
    assert jobs == cli_json(home, "jobs", "list")
    assert [job["job_name"] for job in jobs] == [home.job["job_name"]]
    assert jobs[0]["rows_rejected"] == len(REJECT_REASONS)
    assert jobs[0]["started_at"] is not None


def test_job_equals_cli_describe(home: Home, server: str) -> None:
    name = home.job["job_name"]

    status, job = fetch_json(f"{server}api/jobs/{name}")

    assert status == 200
    assert job == cli_json(home, "jobs", "describe", name)
    assert job["request"]["ProcessingJobName"] == name


@pytest.mark.parametrize(
    ("status", "expected"), [("Completed", 1), ("Failed", 0), ("InProgress", 0)]
)
def test_jobs_filter_by_status(server: str, status: str, expected: int) -> None:
    code, jobs = fetch_json(f"{server}api/jobs?status={status}")

    assert code == 200
    assert len(jobs) == expected
    assert all(job["status"] == status for job in jobs)


@pytest.mark.parametrize("query", ["status=Done", "limit=0", "limit=abc", "limit=1001"])
def test_jobs_bad_query_is_400(server: str, query: str) -> None:
    status, body = fetch_json(f"{server}api/jobs?{query}")

    assert status == 400
    assert "invalid" in body["error"]


@pytest.mark.parametrize(
    "path",
    [
        "api/jobs/prepflow-no-such-job",
        "api/jobs/prepflow-no-such-job/logs",
        "api/jobs/prepflow-no-such-job/report",
        "api/jobs/..%2F..%2Fjobs.db",
        "api/jobs/bad_name!",
    ],
)
def test_unknown_job_is_404(server: str, path: str) -> None:
    status, body = fetch_json(server + path)

    assert status == 404
    assert "processing job not found" in body["error"]


def test_unknown_view_is_404(home: Home, server: str) -> None:
    status, body = fetch_json(f"{server}api/jobs/{home.job['job_name']}/secrets")

    assert status == 404
    assert "no API" in body["error"]


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "BREW"])
@pytest.mark.parametrize("path", ["", "api/jobs", "files/x/y"])
def test_other_methods_are_405(server: str, method: str, path: str) -> None:
    status, headers, body = fetch(server + path, method=method)

    assert status == 405
    assert headers["Allow"] == "GET, HEAD"
    assert "read-only" in json.loads(body)["error"]


def test_head_sends_no_body(server: str) -> None:
    status, headers, body = fetch(server + "api/jobs", method="HEAD")

    assert status == 200
    assert int(headers["Content-Length"]) > 0
    assert body == b""


def test_report_equals_report_json(home: Home, server: str) -> None:
    status, reports = fetch_json(f"{server}api/jobs/{home.job['job_name']}/report")

    assert status == 200
    (entry,) = reports
    assert entry["host"] is None
    assert entry["report"] == home.report()
    assert entry["html_uri"] == home.job["report"]["uri"]


def test_rejected_sample_has_reasons(home: Home, server: str) -> None:
    status, sample = fetch_json(f"{server}api/jobs/{home.job['job_name']}/rejected")

    assert status == 200
    assert sample["total"] == len(REJECT_REASONS)
    reason = sample["columns"].index("reason")
    assert [row[reason] for row in sample["rows"]] == REJECT_REASONS
    assert sample["files"] == [home.job["rejected"]["uri"]]


def test_logs_show_job_output(home: Home, server: str) -> None:
    name = home.job["job_name"]

    status, logs = fetch_json(f"{server}api/jobs/{name}/logs")

    (log,) = logs
    path = Path(home.path, "buckets", *log["uri"].removeprefix("s3://").split("/"))
    assert status == 200
    assert log["host"] == "algo-1"
    assert log["uri"] == home.job["log_uri"]
    assert log["truncated"] is False
    assert log["text"] == path.read_text()


def test_file_downloads_as_text(home: Home, server: str) -> None:
    rejected = home.job["rejected"]

    status, headers, body = fetch(file_url(server, rejected["uri"]))

    assert status == 200
    assert body == Path(rejected["path"]).read_bytes()
    assert headers["Content-Type"] == "text/plain; charset=utf-8"
    assert headers["Content-Disposition"].startswith('attachment; filename="rejected.csv"')
    assert headers["X-Content-Type-Options"] == "nosniff"


def test_report_html_downloads_as_text(home: Home, server: str) -> None:
    status, headers, _ = fetch(file_url(server, home.job["report"]["uri"]))

    assert status == 200
    assert headers["Content-Type"] == "text/plain; charset=utf-8"
    assert headers["Content-Disposition"].startswith("attachment;")


def test_parquet_downloads_as_bytes(home: Home, server: str) -> None:
    status, headers, body = fetch(file_url(server, home.job["outputs"][0]))

    assert status == 200
    assert headers["Content-Type"] == "application/octet-stream"
    assert body[:4] == b"PAR1"


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("files/{raw}/input/..%2F..%2F..%2Fstore.db", 400),
        ("files/{raw}/input/%2e%2e/%2e%2e/%2e%2e/store.db", 400),
        ("files/{raw}/..%2F..%2Fjobs.db", 400),
        ("files/{raw}/%2Fetc%2Fpasswd", 400),
        ("files/{raw}/input//staff.csv", 400),
        ("files/{raw}/input/staff.csv%00", 400),
        ("files/..%2F..%2Fjobs.db/x", 404),
        ("files/../../jobs.db", 404),
        ("files/not-a-prepflow-bucket/input/staff.csv", 404),
        ("files/{raw}/input/", 404),
        ("files/{raw}/input/missing.csv", 404),
    ],
)
def test_files_reject_traversal(home: Home, server: str, path: str, expected: int) -> None:
    raw = home.job["inputs"][0].removeprefix("s3://").partition("/")[0]
    url = server + path.format(raw=raw)

    status, headers, body = fetch(url)

    assert status == expected
    assert "error" in json.loads(body)
    assert "Content-Disposition" not in headers


def test_files_never_follow_links(home: Home, server: str, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("not for the dashboard")
    raw = home.job["inputs"][0].removeprefix("s3://").partition("/")[0]
    link = home.path / "buckets" / raw / "input" / "link.csv"
    link.symlink_to(secret)
    try:
        status, _, body = fetch(f"{server}files/{raw}/input/link.csv")
    finally:
        link.unlink()

    assert status in (400, 403, 404)
    assert b"not for the dashboard" not in body


def test_files_serve_unicode_names(home: Home, server: str) -> None:
    raw = home.job["inputs"][0].removeprefix("s3://").partition("/")[0]
    target = home.path / "buckets" / raw / "notes" / 'r\u00e9sum\u00e9 "a".txt'
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("caf\u00e9")

    status, headers, body = fetch(f"{server}files/{raw}/notes/{quote(target.name)}")

    assert status == 200
    assert body.decode() == "caf\u00e9"
    disposition = headers["Content-Disposition"]
    assert 'filename="r_sum_ _a_.txt"' in disposition
    assert "filename*=UTF-8''r%C3%A9sum%C3%A9%20%22a%22.txt" in disposition


@pytest.mark.parametrize(
    "path", ["", "jobs/prepflow-x", "api/jobs", "static/job.js", "files/x/y", "nowhere"]
)
def test_every_answer_has_csp(server: str, path: str) -> None:
    _, headers, _ = fetch(server + path)

    policy = headers["Content-Security-Policy"]
    assert policy.startswith("default-src 'self';")
    assert "unsafe-inline" not in policy
    assert "frame-ancestors 'none'" in policy


@pytest.mark.parametrize("page", ["", "jobs/prepflow-x"])
def test_pages_load_only_local_scripts(server: str, page: str) -> None:
    status, headers, body = fetch(server + page)
    html = body.decode()

    scripts = re.findall(r"<script\b([^>]*)>(.*?)</script>", html, flags=re.S)
    assert status == 200
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert scripts
    for attributes, content in scripts:
        assert re.search(r'src="/static/[a-z]+\.js"', attributes)
        assert content.strip() == ""
    assert "http://" not in html
    assert "https://" not in html
    assert not re.search(r"<[^>]+\son[a-z]+=", html), "inline event handler"


@pytest.mark.parametrize("asset", ["common.js", "charts.js", "jobs.js", "job.js", "style.css"])
def test_assets_need_no_network(server: str, asset: str) -> None:
    status, _, body = fetch(f"{server}static/{asset}")
    text = body.decode()

    assert status == 200
    assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", text)
    assert "innerHTML" not in text


@pytest.mark.parametrize("host", ["example.com", "example.com:80", "192.168.1.1:8765"])
def test_foreign_host_header_is_403(server: str, host: str) -> None:
    status, _, body = fetch(server + "api/jobs", headers={"Host": host})

    assert status == 403
    assert b"not a loopback address" in body


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_loopback_hosts_accepted(host: str) -> None:
    check_host(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "example.com", ""])
def test_other_hosts_rejected(host: str) -> None:
    with pytest.raises(ConfigurationError, match="not a loopback address"):
        check_host(host)


def test_cli_rejects_public_host(home: Home) -> None:
    result = home.prepflow("ui", "--host", "0.0.0.0", "--port", "0")

    assert result.returncode == 2
    assert "'0.0.0.0' is not a loopback address" in result.stderr


def test_cli_without_home_fails(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "prepflow", "ui", "--port", "0"],
        capture_output=True,
        text=True,
        env={**os.environ, "PREPFLOW_HOME": str(tmp_path / "none")},
        timeout=60,
        check=False,
    )

    assert result.returncode != 0
    assert "no prepflow home" in result.stderr
    assert not (tmp_path / "none").exists()
