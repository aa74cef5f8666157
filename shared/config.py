"""One settings object for every process, read from the environment once.

Env names are `HEALTHSCORE_<SECTION>__<OPTION>` (e.g. `HEALTHSCORE_KAFKA__BOOTSTRAP_SERVERS`).
Explicit arguments win over the environment: entry points build a `Settings` once and pass it
down; nothing below them reads the environment again. Every option is documented in the README
table and in `.env.example` (a test keeps the three in step).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_MODEL_PATH = Path(__file__).parent / "scoring" / "models" / "default.yaml"


class TopicSettings(BaseModel):
    usage: str = "usage.events"
    support: str = "support.events"
    billing: str = "billing.events"
    signals: str = "account-health.signals"
    dlq: str = "account-health.dlq"
    changes: str = "account-health.changes"
    # raw topics in a vendor's format, and the format of each: segment, stripe, zendesk,
    # mapping:NAME (a mapping of ingest.mappings_path) or v1
    sources: dict[
        str, Annotated[str, Field(pattern=r"^(v1|segment|stripe|zendesk|mapping:[\w.-]+)$")]
    ] = {}

    @property
    def raw(self) -> tuple[str, ...]:
        """Every raw topic: the three v1 topics and the configured sources."""
        return tuple(dict.fromkeys((self.usage, self.support, self.billing, *self.sources)))

    def format_of(self, topic: str) -> str:
        return self.sources.get(topic, "v1")


class KafkaSettings(BaseModel):
    bootstrap_servers: str = "127.0.0.1:9092"
    client_id: str = "healthscore"
    topics: TopicSettings = TopicSettings()
    # Partitions used when this service creates a missing topic (dev and tests; production
    # topics are created by the operator).
    partitions: int = Field(default=4, ge=1)
    replication_factor: int = Field(default=1, ge=1)
    request_timeout_ms: int = Field(default=30_000, ge=1_000)
    session_timeout_ms: int = Field(default=10_000, ge=1_000)


class DatabaseSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = 5432
    user: str = "healthscore"
    password: SecretStr = SecretStr("healthscore")
    name: str = "healthscore"
    pool_size: int = Field(default=10, ge=1)

    def url(self, *, driver: str = "postgresql+asyncpg", name: str | None = None) -> str:
        from sqlalchemy.engine import URL

        return URL.create(
            driver,
            username=self.user,
            password=self.password.get_secret_value(),
            host=self.host,
            port=self.port,
            database=name or self.name,
        ).render_as_string(hide_password=False)


class IngestSettings(BaseModel):
    group_id: str = "healthscore-ingest"
    batch_max_records: int = Field(default=2_000, ge=1)
    batch_timeout_ms: int = Field(default=200, ge=1)
    max_record_bytes: int = Field(default=256 * 1024, ge=1_024)
    # Events further in the future than this (clock skew) or older than max_age are rejected.
    max_future_skew_seconds: int = Field(default=300, ge=0)
    max_age_days: int = Field(default=400, ge=1)
    # /healthz turns 503 when the committed position has not moved for this long while
    # records wait
    stall_after_seconds: float = Field(default=120.0, gt=0)
    metrics_port: int = 9101
    # the YAML file of the mappings that `mapping:NAME` topics name
    mappings_path: Path | None = None
    # Segment: the track/page property (or identify trait) naming the account, and the track
    # event names that are sessions rather than feature use
    segment_account_property: str | None = None
    segment_session_events: list[str] = [
        "Signed In",
        "Logged In",
        "Session Started",
        "Application Opened",
    ]
    # Stripe: the metadata key holding the account id (unset: the customer id is the account
    # id), and the metadata key holding the tier on subscriptions, prices or products
    stripe_account_metadata_key: str | None = None
    stripe_tier_metadata_key: str = "tier"
    # Zendesk: the ticket tag prefix naming the account (unset: the organization id)
    zendesk_account_tag_prefix: str | None = None
    # user/charge/ticket -> account links: kept in PostgreSQL this many days after last
    # seen, and cached per process (entries, and seconds before one is read again)
    links_retention_days: int = Field(default=400, ge=1)
    links_cache_size: int = Field(default=100_000, ge=0)
    links_cache_seconds: float = Field(default=300.0, ge=0)


class QualitySettings(BaseModel):
    """Live model quality (services/scorer/quality.py): how well each model role's scores
    foresaw the outcomes that followed them."""

    every_minutes: float = Field(default=60.0, gt=0)
    # the scores judged: as they stood at a cut every `step_days` over the last `window_days`
    # whose horizon has passed
    window_days: float = Field(default=90.0, gt=0)
    step_days: float = Field(default=7.0, gt=0)
    # for an objective whose model states no probability (no calibration, which names its own)
    horizon_days: float = Field(default=90.0, gt=0)


class ScorerSettings(BaseModel):
    group_id: str = "healthscore-scorer"
    # the model files an empty database's model proposals are seeded with (shared/proposals.py)
    model_path: Path = DEFAULT_MODEL_PATH
    shadow_model_path: Path | None = None
    # how often the scorer and the API look for a new active or shadow model
    model_follow_seconds: float = Field(default=5.0, gt=0)
    batch_max_records: int = Field(default=50_000, ge=1)
    batch_max_accounts: int = Field(default=1_000, ge=1)
    batch_timeout_ms: int = Field(default=100, ge=1)
    dedup_horizon_hours: float = Field(default=48.0, gt=0)
    dedup_max_ids_per_account: int = Field(default=512, ge=1)
    history_min_delta: float = Field(default=5.0, ge=0)
    state_cache_size: int = Field(default=5_000, ge=0)
    sweep_batch_size: int = Field(default=2_000, ge=1)
    sweep_interval_seconds: float = Field(default=60.0, gt=0)
    news_retention_days: float = Field(default=365.0, gt=0)
    # score history older than this is dropped, a month at a time (scorer/history_months.py)
    history_retention_days: int = Field(default=730, ge=1)
    relay_interval_seconds: float = Field(default=0.2, gt=0)
    # a change whose newest signal is older than this is a replay: band changes and drops
    # are held, and one net change is sent once the account has been quiet for the hold
    replay_after_seconds: float = Field(default=600.0, gt=0)
    replay_hold_seconds: float = Field(default=30.0, gt=0)
    stall_after_seconds: float = Field(default=120.0, gt=0)
    # a subscription change that raises the recurring revenue by this share is an expansion
    outcome_expansion_share: float = Field(default=0.1, gt=0)
    quality: QualitySettings = QualitySettings()
    metrics_port: int = 9102


class NotifySettings(BaseModel):
    """`healthscore notify`: webhook deliveries of the change events."""

    group_id: str = "healthscore-notify"
    # waits between a failed attempt and the next (each with 0-20% jitter); once they are
    # used up the delivery is dead-lettered: about 11 hours by default, as Standard Webhooks
    # senders commonly retry
    retry_seconds: list[float] = Field(
        default=[5, 30, 120, 600, 1800, 3600, 10800, 21600], min_length=1
    )
    request_timeout_seconds: float = Field(default=10.0, gt=0)
    concurrency: int = Field(default=16, ge=1)
    # a sender that takes a delivery holds it this long; if it dies mid-request, another
    # sends it again after that
    lease_seconds: float = Field(default=60.0, gt=0)
    poll_seconds: float = Field(default=0.5, gt=0)
    # delivered and dead deliveries are kept this long for GET /v1/webhooks/{id}/deliveries
    keep_days: float = Field(default=14.0, gt=0)
    # plain http:// URLs are refused in production unless allowed (signatures do not hide
    # the payload)
    allow_http: bool = False
    metrics_port: int = 9103


class ApiToken(BaseModel):
    name: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="hex SHA-256 of the token")
    # admin: manage webhook subscriptions (they send account data to the URL they name);
    # model: propose, review, promote and restore models (shared/proposals.py)
    scopes: list[Literal["read", "write", "admin", "model"]] = ["read"]


class ApiSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = 8000
    tokens: list[ApiToken] = []
    max_page_size: int = Field(default=500, ge=1)
    max_body_bytes: int = Field(default=16 * 1024, ge=256)
    # a proposed model's whole document (POST /v1/models/proposals, the console's form)
    max_model_bytes: int = Field(default=256 * 1024, ge=1024)
    max_override_days: int = Field(default=180, ge=1)
    # memory for GET .../health answers, kept until PostgreSQL notifies a change; 0: no cache
    health_cache_mb: int = Field(default=64, ge=0)
    # the console (/console): its session cookies are signed with this key; unset, a random
    # key per process (sessions end when it restarts and do not cross replicas)
    session_secret: SecretStr | None = None
    session_hours: float = Field(default=12, gt=0, le=24 * 30)
    # folder of `healthscore backtest` reports the console lists (each a folder of them)
    reports_dir: Path = Path("reports")
    # identity from a trusted authenticating proxy (e.g. oauth2-proxy): the header naming the
    # person, the proxy addresses it is believed from, and who of them may write
    proxy_user_header: str | None = None
    proxy_addresses: list[str] = ["127.0.0.1", "::1"]
    proxy_writers: list[str] = []
    proxy_modellers: list[str] = []  # who of them may propose and review models


class LogSettings(BaseModel):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["json", "console"] = "json"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="HEALTHSCORE_",
        env_nested_delimiter="__",
        env_file=".env",
        extra="ignore",
        frozen=True,
    )

    environment: Literal["development", "test", "production"] = "development"
    kafka: KafkaSettings = KafkaSettings()
    database: DatabaseSettings = DatabaseSettings()
    ingest: IngestSettings = IngestSettings()
    scorer: ScorerSettings = ScorerSettings()
    api: ApiSettings = ApiSettings()
    notify: NotifySettings = NotifySettings()
    log: LogSettings = LogSettings()

    @model_validator(mode="after")
    def _no_default_secrets_in_production(self) -> Settings:
        if self.environment == "production" and self.database.password.get_secret_value() in {
            "healthscore",
            "",
        }:
            raise ValueError("HEALTHSCORE_DATABASE__PASSWORD must be set in production")
        return self


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read from the environment on first use."""
    return Settings()
