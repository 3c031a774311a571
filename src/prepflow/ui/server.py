"""The dashboard's HTTP server: static pages, a JSON API and object downloads, read-only.

Routes (GET and HEAD only; any other method gets 405):

    /                              the jobs table (static page)
    /jobs/{name}                   one job (static page; its script calls the API)
    /static/{asset}                the pages' scripts and style sheet, shipped in the package
    /api/jobs[?status=&limit=]     the jobs, as ``prepflow jobs list --json`` prints them
    /api/jobs/{name}               one job, as ``prepflow jobs describe --json`` prints it
    /api/jobs/{name}/logs          the end of each host's log
    /api/jobs/{name}/report        the data-quality report of each host, as JSON
    /api/jobs/{name}/rejected      the first rejected rows with their reasons
    /files/{bucket}/{key}          an object, as a download (never rendered by the browser)

The server listens on a loopback address only and answers only requests whose Host header
names a loopback address, so a web page that rebinds its own DNS name to 127.0.0.1 cannot
read the jobs.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import shutil
import signal
import socket
import threading
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from prepflow.errors import (
    ConfigurationError,
    InvalidKeyError,
    JobNotFoundError,
    ObjectNotFoundError,
    PrepflowError,
    StorageError,
)
from prepflow.jobs.spec import JOB_NAME_PATTERN, JobStatus
from prepflow.ui.api import DEFAULT_LIST_LIMIT, MAX_LIST_LIMIT, Dashboard

logger = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
ALLOWED_METHODS = "GET, HEAD"
COPY_CHUNK_BYTES = 1 << 20
# Scripts, styles, images and fetches come from the dashboard itself; nothing inline, no
# plugins, no framing by other sites.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Resource-Policy": "same-origin",
}
# Static assets by URL path: the only files of the package the server reads.
PAGES = {"/": "index.html"}
JOB_PAGE = "job.html"
ASSETS = {
    "/static/style.css": "style.css",
    "/static/common.js": "common.js",
    "/static/charts.js": "charts.js",
    "/static/jobs.js": "jobs.js",
    "/static/job.js": "job.js",
}
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
}
# Objects with these suffixes download as text/plain; every other object as bytes.
TEXT_SUFFIXES = (".csv", ".json", ".jsonl", ".ndjson", ".log", ".txt", ".yaml", ".yml", ".html")


class HttpError(Exception):
    """An HTTP error response: its status code and the message of its JSON body."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def check_host(host: str) -> None:
    """Raise ConfigurationError unless ``host`` is a loopback address or ``localhost``."""
    if host == "localhost":
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ConfigurationError(
            f"--host {host!r} is not a loopback address: the dashboard has no authentication, "
            "so it listens on 127.0.0.1 (or another loopback address such as ::1) only"
        )


def load_assets() -> dict[str, bytes]:
    """Read the pages, scripts and style sheet shipped in ``prepflow/ui/static``."""
    folder = resources.files("prepflow.ui") / "static"
    names = [*PAGES.values(), JOB_PAGE, *ASSETS.values()]
    return {name: (folder / name).read_bytes() for name in names}


class DashboardServer(ThreadingHTTPServer):
    """A threading HTTP server that carries the dashboard and its assets to each handler."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], dashboard: Dashboard) -> None:
        self.dashboard = dashboard
        self.assets = load_assets()
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, DashboardHandler)

    @property
    def url(self) -> str:
        host, port = str(self.server_address[0]), self.server_address[1]
        netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        return f"http://{netloc}/"


class DashboardHandler(BaseHTTPRequestHandler):
    server: DashboardServer
    server_version = "prepflow-ui"

    def do_GET(self) -> None:
        self._answer(send_body=True)

    def do_HEAD(self) -> None:
        self._answer(send_body=False)

    def __getattr__(self, name: str) -> Any:
        # BaseHTTPRequestHandler looks up do_<METHOD> and sends 501 when it is missing, so
        # this hook makes every method but GET and HEAD get 405, with the methods allowed.
        if name.startswith("do_"):
            return self._reject_method
        raise AttributeError(name)

    def _reject_method(self) -> None:
        self._send_json(
            HTTPStatus.METHOD_NOT_ALLOWED,
            {"error": f"method {self.command} not allowed: the dashboard is read-only"},
            send_body=True,
            extra={"Allow": ALLOWED_METHODS},
        )

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s %s", self.address_string(), format % args)

    def _answer(self, *, send_body: bool) -> None:
        try:
            self._check_host_header()
            self._route(send_body=send_body)
        except HttpError as error:
            logger.info("%s %s: %d %s", self.command, self.path, error.status, error.message)
            self._send_json(error.status, {"error": error.message}, send_body=send_body)
        except JobNotFoundError as error:
            logger.info("%s %s: 404 job %s not found", self.command, self.path, error.job_name)
            self._send_json(HTTPStatus.NOT_FOUND, {"error": str(error)}, send_body=send_body)
        except PrepflowError as error:
            logger.error("request %s failed: %s", self.path, error)
            status = HTTPStatus.INTERNAL_SERVER_ERROR
            self._send_json(status, {"error": str(error)}, send_body=send_body)

    def _check_host_header(self) -> None:
        host = urlsplit(f"//{self.headers.get('Host', '')}").hostname or ""
        try:
            check_host(host)
        except ConfigurationError as error:
            raise HttpError(
                HTTPStatus.FORBIDDEN,
                f"Host {host!r} is not a loopback address; open the dashboard at {self.server.url}",
            ) from error

    def _route(self, *, send_body: bool) -> None:
        parts = urlsplit(self.path)
        path = parts.path
        if path in PAGES:
            self._send_asset(PAGES[path], send_body=send_body)
        elif path in ASSETS:
            self._send_asset(ASSETS[path], send_body=send_body)
        elif path.startswith("/jobs/"):
            _job_name(path.removeprefix("/jobs/"))
            self._send_asset(JOB_PAGE, send_body=send_body)
        elif path == "/api/jobs":
            self._send_json(HTTPStatus.OK, self._list_jobs(parts.query), send_body=send_body)
        elif path.startswith("/api/jobs/"):
            self._send_json(HTTPStatus.OK, self._job_view(path), send_body=send_body)
        elif path.startswith("/files/"):
            self._send_file(path.removeprefix("/files/"), send_body=send_body)
        else:
            raise HttpError(HTTPStatus.NOT_FOUND, f"no page at {path!r}")

    def _list_jobs(self, query: str) -> list[dict[str, Any]]:
        params = parse_qs(query)
        status = _status_param(params.get("status", [""])[-1])
        limit = _limit_param(params.get("limit", [""])[-1])
        return self.server.dashboard.list_jobs(status=status, limit=limit)

    def _job_view(self, path: str) -> Any:
        name, _, view = path.removeprefix("/api/jobs/").partition("/")
        dashboard = self.server.dashboard
        views: dict[str, Callable[[str], Any]] = {
            "": dashboard.job,
            "logs": dashboard.logs,
            "report": dashboard.reports,
            "rejected": dashboard.rejected_sample,
        }
        if view not in views:
            raise HttpError(HTTPStatus.NOT_FOUND, f"no API at {path!r}")
        return views[view](_job_name(name))

    def _send_file(self, location: str, *, send_body: bool) -> None:
        bucket, _, quoted_key = location.partition("/")
        key = unquote(quoted_key)
        try:
            with self.server.dashboard.open_file(unquote(bucket), key) as (handle, size):
                self.send_response(HTTPStatus.OK)
                self._send_security_headers()
                self.send_header("Content-Type", _download_type(key))
                self.send_header("Content-Disposition", _attachment(key))
                self.send_header("Content-Length", str(size))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                if send_body:
                    shutil.copyfileobj(handle, self.wfile, COPY_CHUNK_BYTES)
        except InvalidKeyError as error:
            raise HttpError(HTTPStatus.BAD_REQUEST, str(error)) from error
        except ObjectNotFoundError as error:
            raise HttpError(HTTPStatus.NOT_FOUND, str(error)) from error
        except StorageError as error:
            # A FIFO, a device or a folder link under the object's name.
            raise HttpError(HTTPStatus.FORBIDDEN, str(error)) from error

    def _send_asset(self, name: str, *, send_body: bool) -> None:
        body = self.server.assets[name]
        suffix = name[name.rindex(".") :]
        self.send_response(HTTPStatus.OK)
        self._send_security_headers()
        self.send_header("Content-Type", CONTENT_TYPES[suffix])
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def _send_json(
        self,
        status: HTTPStatus,
        payload: Any,
        *,
        send_body: bool,
        extra: dict[str, str] | None = None,
    ) -> None:
        body = json.dumps(payload, indent=1).encode()
        self.send_response(status)
        self._send_security_headers()
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def _send_security_headers(self) -> None:
        for name, value in SECURITY_HEADERS.items():
            self.send_header(name, value)


def _job_name(text: str) -> str:
    name = unquote(text)
    if not JOB_NAME_PATTERN.match(name):
        raise HttpError(
            HTTPStatus.NOT_FOUND,
            f"processing job not found: {name!r} is not a valid job name (1 to 63 letters, "
            "digits or hyphens)",
        )
    return name


def _status_param(value: str) -> JobStatus | None:
    if not value:
        return None
    try:
        return JobStatus(value)
    except ValueError as error:
        allowed = ", ".join(status.value for status in JobStatus)
        raise HttpError(
            HTTPStatus.BAD_REQUEST, f"invalid status {value!r}: use one of {allowed}"
        ) from error


def _limit_param(value: str) -> int:
    if not value:
        return DEFAULT_LIST_LIMIT
    if not value.isdigit() or not 1 <= int(value) <= MAX_LIST_LIMIT:
        raise HttpError(
            HTTPStatus.BAD_REQUEST,
            f"invalid limit {value!r}: use a whole number from 1 to {MAX_LIST_LIMIT}",
        )
    return int(value)


def _download_type(key: str) -> str:
    if key.lower().endswith(TEXT_SUFFIXES):
        return "text/plain; charset=utf-8"
    return "application/octet-stream"


def _attachment(key: str) -> str:
    """Build a Content-Disposition that saves the object under its file name (RFC 6266)."""
    name = key.rsplit("/", 1)[-1]
    fallback = "".join(_plain_char(c) for c in name)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


def _plain_char(char: str) -> str:
    """Return ``char`` if a quoted ASCII file name may hold it as it is, else "_"."""
    return char if char.isascii() and char.isprintable() and char not in '"\\' else "_"


def serve(
    dashboard: Dashboard,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    announce: Callable[[str], None],
) -> None:
    """Serve the dashboard until SIGINT or SIGTERM; ``announce`` gets the URL once it listens.

    Raises ConfigurationError for a non-loopback host or an address already in use.
    """
    check_host(host)
    try:
        server = DashboardServer((host, port), dashboard)
    except OSError as error:
        raise ConfigurationError(
            f"cannot listen on {host} port {port}: {error.strerror}; choose another port with "
            "--port, or --port 0 for a free one"
        ) from error

    def stop(signum: int, frame: object) -> None:
        # shutdown() waits for serve_forever() to return, so it must run on another thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    logger.info("dashboard listening on %s (home %s)", server.url, dashboard.local.settings.home)
    announce(server.url)
    try:
        server.serve_forever()
    finally:
        server.server_close()
        logger.info("dashboard on %s stopped", server.url)
