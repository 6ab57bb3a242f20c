"""Request counts, latencies and batch sizes in Prometheus' text format (``GET /metrics``).

:class:`Metrics` owns one registry per app (so two apps in one process do not
mix their counts). :class:`MetricsMiddleware` is plain ASGI: it times every
HTTP request and labels it with the route, never the raw path, so a scan of
random URLs cannot grow the label set.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

disable_created_metrics()  # no `_created` timestamp series next to every counter: they only add noise

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)  # seconds
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)  # images per forward pass


class Metrics:
    """The server's Prometheus metrics."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, routes: Iterable[str]):
        self.routes = frozenset(routes)
        self.registry = CollectorRegistry()
        self.requests = Counter("fittingroom_http_requests", "HTTP requests by route, method and status",
                                ("route", "method", "status"), registry=self.registry)
        self.latency = Histogram("fittingroom_http_request_duration_seconds", "Time from request to last byte sent",
                                 ("route",), buckets=LATENCY_BUCKETS, registry=self.registry)
        self.predictions = Counter("fittingroom_predictions", "Images classified", registry=self.registry)
        self.image_errors = Counter("fittingroom_image_errors", "Uploads that were not readable images",
                                    registry=self.registry)
        self.batch_size = Histogram("fittingroom_batch_size", "Images per forward pass", buckets=BATCH_BUCKETS,
                                    registry=self.registry)

    def track_load(self, requests: Callable[[], float], body_bytes: Callable[[], float],
                   queued: Callable[[], float]) -> None:
        """Gauges read at each scrape: requests with a body in flight, their body bytes, images awaiting a batch."""
        for name, doc, read in (("fittingroom_requests_in_flight", "Requests with a body being read or answered", requests),
                                ("fittingroom_request_body_bytes", "Body bytes of the requests in flight", body_bytes),
                                ("fittingroom_queued_images", "Images waiting for a forward pass", queued)):
            Gauge(name, doc, registry=self.registry).set_function(read)

    def route(self, path: str) -> str:
        return path if path in self.routes else "other"

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Counts and times each HTTP request into a :class:`Metrics`."""

    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status = [500]  # what the client gets if the app fails before answering

        async def send_and_record(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            route = self.metrics.route(scope["path"])
            self.metrics.requests.labels(route, scope["method"], str(status[0])).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - start)
