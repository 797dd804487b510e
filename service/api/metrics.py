"""Prometheus metrics of one API process (``GET /metrics``).

Each app owns its registry, so several apps in one process (tests) never collide. Batch size,
queue wait and engine time are observed once per translated image in both modes: in
distributed mode the worker reports them with the result, so the API sees the batching the
workers did without scraping them.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from service.inference.requests import Translated

__all__ = ["Metrics"]

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "unpaired_http_requests",
            "HTTP requests by route template, method and status",
            ["route", "method", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "unpaired_http_request_duration_seconds",
            "time from the request's first byte to the response, by route template",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge(
            "unpaired_http_requests_in_flight", "requests being handled now", registry=r
        )
        self.translations = Counter(
            "unpaired_translations",
            "images translated, by model and direction",
            ["model", "direction"],
            registry=r,
        )
        self.batch_size = Histogram(
            "unpaired_batch_size",
            "size of the engine batch each translated image ran in",
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.queue_seconds = Histogram(
            "unpaired_queue_wait_seconds",
            "time each image waited for its batch to start",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.engine_seconds = Histogram(
            "unpaired_engine_seconds",
            "engine time of the batch each image ran in",
            ["model", "direction"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "unpaired_queue_depth",
            "requests waiting for an engine (embedded: the batcher; distributed: the Redis queue)",
            registry=r,
        )
        self.workers = Gauge(
            "unpaired_workers",
            "workers alive by their heartbeat and consuming the interactive queue (distributed; "
            "0 while the workers are scaled to zero)",
            registry=r,
        )

        self.memory = Gauge(
            "unpaired_memory_bytes",
            "the memory budget of the images in flight (capacity_bytes, large_capacity_bytes) and "
            "what they hold (used_bytes, large_used_bytes, peak_bytes); distributed: summed over "
            "the live workers",
            ["kind"],
            registry=r,
        )
        self.memory_refused = Gauge(
            "unpaired_memory_refused",
            "requests answered 503 over_budget since start (distributed: all live workers)",
            registry=r,
        )

    def observe_memory(self, memory: dict[str, int]) -> None:
        for name, value in memory.items():
            if name == "refused":
                self.memory_refused.set(value)
            else:
                self.memory.labels(name.removesuffix("_bytes")).set(value)

    def observe(self, model: str, direction: str, result: Translated) -> None:
        self.translations.labels(model, direction).inc()
        self.batch_size.observe(result.batch_size)
        self.queue_seconds.observe(result.queue_seconds)
        self.engine_seconds.labels(model, direction).observe(result.engine_seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
