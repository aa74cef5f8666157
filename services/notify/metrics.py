"""notify's Prometheus metrics (docs/metrics.md)."""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram


class NotifyMetrics:
    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.events = Counter(
            "healthscore_notify_events",
            "change events read from the changes topic",
            registry=registry,
        )
        self.unreadable = Counter(
            "healthscore_notify_unreadable_events",
            "records on the changes topic that are not change events (skipped)",
            registry=registry,
        )
        self.queued = Counter(
            "healthscore_webhook_deliveries_queued",
            "deliveries recorded: one per matching subscription and event",
            registry=registry,
        )
        self.attempts = Counter(
            "healthscore_webhook_attempts",
            "POSTs to subscribers, by result: delivered (2xx), failed (another status, a "
            "timeout or no connection), dead (failed with no attempt left), gone (410: the "
            "subscription is disabled)",
            ["result"],
            registry=registry,
        )
        for result in ("delivered", "failed", "dead", "gone"):
            self.attempts.labels(result)  # each series exists from the start, at 0
        self.pending = Gauge(
            "healthscore_webhook_deliveries_pending",
            "deliveries waiting for their first or next attempt",
            registry=registry,
        )
        self.dead = Gauge(
            "healthscore_webhook_deliveries_dead",
            "dead-lettered deliveries kept (GET /v1/webhooks/{id}/deliveries?status=dead)",
            registry=registry,
        )
        self.oldest_pending = Gauge(
            "healthscore_webhook_oldest_pending_seconds",
            "age of the oldest delivery still pending",
            registry=registry,
        )
        self.latency = Histogram(
            "healthscore_webhook_request_seconds",
            "time a subscriber took to answer a POST",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=registry,
        )
