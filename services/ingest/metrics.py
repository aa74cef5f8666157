"""Ingest's Prometheus metrics."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class IngestMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.consumed = Counter(
            "healthscore_ingest_records_consumed_total",
            "Raw records read, by source topic",
            ["topic"],
            registry=registry,
        )
        self.signals = Counter(
            "healthscore_ingest_signals_produced_total",
            "Canonical signals produced, by source",
            ["source"],
            registry=registry,
        )
        self.dead_lettered = Counter(
            "healthscore_ingest_dlq_records_total",
            "Raw records (or messages of a batch) dead-lettered, by reason",
            ["reason"],
            registry=registry,
        )
        self.skipped = Counter(
            "healthscore_ingest_messages_skipped_total",
            "Messages that carry no signal (not_scored: a type the format does not score; "
            "link_only: it only ties a user to an account), by topic",
            ["topic", "reason"],
            registry=registry,
        )
        self.batch_size = Histogram(
            "healthscore_ingest_batch_records",
            "Records per batch",
            buckets=(1, 10, 50, 100, 250, 500, 1000, 2000, 5000),
            registry=registry,
        )
        self.batch_latency = Histogram(
            "healthscore_ingest_batch_duration_seconds",
            "Time from poll to commit of one batch",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=registry,
        )
        self.retries = Counter(
            "healthscore_ingest_delivery_retries_total",
            "Batches re-sent after a retriable broker error",
            registry=registry,
        )
        self.lag = Gauge(
            "healthscore_ingest_consumer_lag_records",
            "Records behind the partition high-water mark",
            ["topic", "partition"],
            registry=registry,
        )
