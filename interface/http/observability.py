"""Operators' view: Prometheus metrics, JSON logs, a request id on every request.

Each app has its own registry (several apps can live in one test process). The request
id comes from ``X-Request-ID`` when the client sends a sane one, else a new uuid4; it is
echoed on the response and carried by every log record written while handling the
request, including in worker threads. Tokens, secrets and bodies are never logged.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import time
import uuid
from datetime import datetime, timezone
from typing import Any

from litestar.types import ASGIApp, Message, Receive, Scope, Send
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
access_log = logging.getLogger("skillbase.workflow.access")
_SANE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "skillbase_workflow_http_requests", "HTTP requests by route and status",
            ["method", "route", "status"], registry=self.registry,
        )
        self.latency = Histogram(
            "skillbase_workflow_http_request_duration_seconds", "HTTP request latency by route",
            ["method", "route"], buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.commands = Counter(
            "skillbase_workflow_commands", "Commands by type and result",
            ["command", "result"], registry=self.registry,
        )

    def watch_log(self, head: Any, positions: Any = None) -> None:
        """Exposes the event log head and, when given, each reader's lag behind it."""
        self.registry.register(_LogCollector(head, positions))


class _LogCollector:
    def __init__(self, head: Any, positions: Any) -> None:
        self._head, self._positions = head, positions

    def collect(self) -> Any:
        try:
            head = int(self._head() or 0)
        except Exception:  # noqa: BLE001 - a scrape must not fail because the database is down
            return
        yield GaugeMetricFamily("skillbase_workflow_event_log_head", "Last notification id in the event log", head)
        if self._positions is None:
            return
        lag = GaugeMetricFamily("skillbase_workflow_reader_lag", "Events a reader is behind the log", labels=["reader"])
        try:
            for name, position in self._positions().items():
                lag.add_metric([name], max(0, head - int(position or 0)))
        except Exception:  # noqa: BLE001
            return
        yield lag


class ObservabilityMiddleware:
    """Outermost layer: request id, access log line, request metrics."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        sent = _header(scope, b"x-request-id")
        request_id = sent if sent and _SANE_ID.match(sent) else uuid.uuid4().hex
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("path_template") or "unmatched"
            method = scope["method"]
            metrics: Metrics | None = getattr(scope["app"].state, "metrics", None)
            if metrics is not None:
                metrics.requests.labels(method, route, str(status)).inc()
                metrics.latency.labels(method, route).observe(elapsed)
            user = scope.get("user")
            access_log.info("request", extra={
                "http": {"method": method, "route": route, "status": status,
                         "duration_ms": round(elapsed * 1000, 2)},
                "user": getattr(user, "user_id", None),
            })
            request_id_var.reset(token)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return None


class JsonFormatter(logging.Formatter):
    """One JSON object per line; ``extra`` fields that are not LogRecord's own are kept."""

    _RESERVED = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime", "color_message"}

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": request_id_var.get(),
        }
        for key, value in record.__dict__.items():
            if key not in self._RESERVED and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_json_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # SpiffWorkflow logs every task state change at INFO with the task's data (a learner's
    # statement, an assessor's score): personal data, and a line per step. Its warnings stay.
    if logging.getLevelName(level.upper()) != logging.DEBUG:
        logging.getLogger("spiff").setLevel(logging.WARNING)
