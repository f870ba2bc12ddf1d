"""Observability: Prometheus metrics (own registry per app) and one structured log line per request."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from litestar.enums import ScopeType
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

log = logging.getLogger("xlgen.service")

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    """The service's Prometheus metrics, in a registry of their own (so several apps can live in
    one process, as in the tests)."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("xlgen_http_requests", "HTTP requests", ["method", "route", "status"], registry=r)
        self.latency = Histogram("xlgen_http_request_seconds", "HTTP request latency", ["route"], buckets=_LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("xlgen_batch_size", "texts per model call", buckets=_BATCH_BUCKETS, registry=r)
        self.batch_seconds = Histogram("xlgen_batch_seconds", "model call duration", buckets=_LATENCY_BUCKETS, registry=r)
        self.queue_depth_gauge = Gauge("xlgen_queue_depth", "texts waiting in the micro-batcher", registry=r)
        self.queue_wait_seconds = Histogram("xlgen_queue_wait_seconds", "time a request waits before its batch runs",
                                            buckets=_LATENCY_BUCKETS, registry=r)
        self.texts = Counter("xlgen_tagged_texts", "texts tagged", registry=r)
        self.rejected = Counter("xlgen_rejected_requests", "tag requests refused (queue full, timeout or over the work budget)",
                                ["reason"], registry=r)
        self.running = Gauge("xlgen_batch_running", "1 while a tag batch runs on the model thread", registry=r)
        self.cancelled_chunks = Counter("xlgen_cancelled_chunks", "chunks of tag requests dropped or stopped because nobody "
                                        "waited for them any more (timeout, disconnect)", registry=r)
        self.model_version = Gauge("xlgen_model_info", "the served model (value 1)", ["version"], registry=r)
        self.model_swaps = Counter("xlgen_model_swaps", "models swapped in", registry=r)
        self.annotations = Counter("xlgen_annotations", "annotations stored", registry=r)

    # the micro-batcher's observer interface
    def batch_ran(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.batch_seconds.observe(seconds)
        self.texts.inc(size)

    def queue_wait(self, seconds: float) -> None:
        self.queue_wait_seconds.observe(seconds)

    def queue_depth(self, depth: int) -> None:
        self.queue_depth_gauge.set(depth)

    def batch_running(self, running: bool) -> None:
        self.running.set(1 if running else 0)

    def chunks_cancelled(self, n: int) -> None:
        self.cancelled_chunks.inc(n)

    def serving(self, version: str) -> None:
        """Marks ``version`` as the one served (and no other)."""
        self.model_version.clear()
        self.model_version.labels(version=version).set(1)

    def render(self) -> bytes:
        return generate_latest(self.registry)


COUNTED = "xlgen_counted"
"""Scope key the middleware sets, so that :func:`unmatched_counter` leaves the requests it counted alone."""


class RequestMetricsMiddleware(ASGIMiddleware):
    """Counts and times every HTTP request of a route by its template and writes one JSON log line (requests
    that match no route or method never reach a route's middleware: :func:`unmatched_counter` counts those)."""

    scopes = (ScopeType.HTTP,)

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        started = time.perf_counter()
        status = 500
        scope[COUNTED] = True  # type: ignore[literal-required]

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await next_app(scope, receive, send_wrapper)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("path_template") or "unmatched"
            method = scope.get("method", "")
            self.metrics.requests.labels(method=method, route=route, status=str(status)).inc()
            self.metrics.latency.labels(route=route).observe(elapsed)
            log.info("request", extra={"fields": {"method": method, "path": scope.get("path"), "route": route,
                                                  "status": status, "ms": round(elapsed * 1000, 2)}})


def unmatched_counter(metrics: Metrics) -> Callable[[Message, Scope], Awaitable[None]]:
    """A ``before_send`` hook counting the HTTP responses of requests no route's middleware saw (a 404 for an
    unknown path, a 405 for a method the path lacks) under the route ``unmatched``; not logged one by one, so
    that a scan of unknown paths cannot flood the log."""

    async def count(message: Message, scope: Scope) -> None:
        if message["type"] == "http.response.start" and scope.get("type") == "http" and not scope.get(COUNTED):
            metrics.requests.labels(method=scope.get("method", ""), route="unmatched", status=str(message["status"])).inc()

    return count


class JsonFormatter(logging.Formatter):
    """One JSON object per log record: time, level, logger, message and the record's ``fields``."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        out.update(getattr(record, "fields", {}))
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


def configure_logging(level: str) -> None:
    """Structured (JSON Lines) logs on standard error for the ``xlgen.service`` logger, once."""
    logger = logging.getLogger("xlgen.service")
    logger.setLevel(level.upper())
    if not any(isinstance(h.formatter, JsonFormatter) for h in logger.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(JsonFormatter())
        logger.addHandler(handler)
        logger.propagate = False
