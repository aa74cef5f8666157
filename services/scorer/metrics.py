"""The scorer's Prometheus metrics, one object per process (tests pass their own registry)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from shared.outcomes import recorded_counter

# Why the scorer dead-letters a signal (the `reason` header and label).
DEAD_LETTER_REASONS = ("invalid_signal", "refused_by_database", "scoring_failed")
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
FRESHNESS_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 3600, 86400)


class ScorerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.applied = Counter(
            "healthscore_scorer_signals_applied_total",
            "Signals folded into account state",
            registry=registry,
        )
        self.duplicates = Counter(
            "healthscore_scorer_duplicates_dropped_total",
            "Signals dropped as duplicates (same signal id, or older than an imported history)",
            registry=registry,
        )
        self.redelivered = Counter(
            "healthscore_scorer_records_redelivered_total",
            "Records the consumer handed out again within a batch or before the position "
            "prepared (dropped by offset)",
            registry=registry,
        )
        self.dead_lettered = Counter(
            "healthscore_scorer_dead_lettered_total",
            "Signals the scorer dead-lettered, by reason (invalid_signal: undecodable; "
            "refused_by_database, scoring_failed: isolated from a failing batch)",
            ["reason"],
            registry=registry,
        )
        for reason in DEAD_LETTER_REASONS:  # exported at 0 from the start, so rates are 0
            self.dead_lettered.labels(reason)
        self.isolations = Counter(
            "healthscore_scorer_isolations_total",
            "Batches split to isolate the records a non-retriable error came from",
            registry=registry,
        )
        self.batch_size = Histogram(
            "healthscore_scorer_batch_signals",
            "Signals per batch",
            buckets=(1, 10, 50, 100, 250, 500, 1000, 2500, 5000),
            registry=registry,
        )
        self.transaction = Histogram(
            "healthscore_scorer_transaction_duration_seconds",
            "Duration of one batch's PostgreSQL transaction",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.freshness = Histogram(
            "healthscore_scorer_freshness_seconds",
            "Commit time minus event time of applied signals",
            buckets=FRESHNESS_BUCKETS,
            registry=registry,
        )
        self.accounts = Gauge(
            "healthscore_scorer_accounts",
            "Accounts per band",
            ["objective", "model_role", "band"],
            registry=registry,
        )
        self.mrr = Gauge(
            "healthscore_scorer_mrr",
            "Monthly recurring revenue of the accounts in each band of the active model, in "
            "major units of each currency",
            ["objective", "band", "currency"],
            registry=registry,
        )
        self.outbox_backlog = Gauge(
            "healthscore_scorer_outbox_backlog_events",
            "Change events not yet published",
            registry=registry,
        )
        self.parents_due = Gauge(
            "healthscore_scorer_parents_due",
            "Parents queued for a rollup of their children's scores",
            registry=registry,
        )
        self.published = Counter(
            "healthscore_scorer_change_events_published_total",
            "Change events published to the changes topic",
            registry=registry,
        )
        self.outcomes = recorded_counter(registry)
        self.history = Counter(
            "healthscore_scorer_history_rows_total",
            "History rows written, by cause",
            ["cause"],
            registry=registry,
        )
        self.sweeps = Counter(
            "healthscore_scorer_sweep_runs_total", "Sweep runs", registry=registry
        )
        self.swept = Counter(
            "healthscore_scorer_sweep_rescored_total",
            "Accounts re-scored from stored state (time, news, a model change)",
            registry=registry,
        )
        self.sweep_refused = Counter(
            "healthscore_scorer_sweep_refused_total",
            "Accounts the sweep could not re-score (left due; the log says why)",
            registry=registry,
        )
        self.offset_resets = Counter(
            "healthscore_scorer_offset_resets_total",
            "Partitions whose stored offset the broker's log no longer held, started again "
            "from its earliest record, by reason (beyond_end: topic recreated; before_start: "
            "retention passed)",
            ["reason"],
            registry=registry,
        )
        for reason in ("beyond_end", "before_start"):
            self.offset_resets.labels(reason)
        self.rebalances = Counter(
            "healthscore_scorer_rebalances_total",
            "Rebalances: partition assignments received from the group",
            registry=registry,
        )
        self.fenced = Counter(
            "healthscore_scorer_fenced_batches_total",
            "Batches rolled back because another scorer owns the partition",
            registry=registry,
        )
        self.retries = Counter(
            "healthscore_scorer_retries_total",
            "Batches rolled back and read again after a retriable error",
            registry=registry,
        )
        self.model = Gauge(
            "healthscore_scorer_model_info",
            "The model version serving each role (value 1)",
            ["model_role", "version"],
            registry=registry,
        )
        self.model_reloads = Counter(
            "healthscore_scorer_model_reloads_total",
            "Switches to the model releases in the database, by result",
            ["result"],
            registry=registry,
        )
        self.model_rescheduled = Counter(
            "healthscore_scorer_model_change_accounts_total",
            "Accounts re-scored because their scores came from another model",
            registry=registry,
        )
        self.news_rescheduled = Counter(
            "healthscore_scorer_news_accounts_total",
            "Accounts scheduled for re-scoring because market news concerns them",
            registry=registry,
        )
        self.history_pruned = Counter(
            "healthscore_scorer_history_pruned_total",
            "Score history past retention: months dropped whole, and rows deleted from the"
            " partitions before and outside the months",
            ["unit"],
            registry=registry,
        )
        self.lag = Gauge(
            "healthscore_scorer_consumer_lag_records",
            "Signals behind the partition high-water mark, from the committed position",
            ["partition"],
            registry=registry,
        )
