"""Typed settings, read from ``FLYSWATTER_*`` environment variables."""

from __future__ import annotations

from ipaddress import ip_address, ip_network
from typing import Literal
from urllib.parse import urlsplit

from cryptography.fernet import Fernet
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

DEFAULT_SQLITE_URL = "sqlite:///./flyswatter.db"
# The longest period a report may cover, and so the longest default period: ten years of
# weeks render in well under a second, where an unbounded one took minutes.
REPORT_MAX_DAYS = 3660


class UnsafeSettings(ValueError):
    """Settings that must not run in production; the message is one line for the operator."""


def is_loopback_host(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def address_of(url: str, default_port: int | None = None) -> str:
    """``host:port`` of a URL: what a log line may say of where something is."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    if port is None:
        port = default_port or {"https": 443, "http": 80}.get(parts.scheme)
    return f"{parts.hostname or '?'}:{port or '?'}"


def normalise_database_url(url: str) -> str:
    """Map the URL forms operators type onto the drivers Flyswatter ships with (psycopg 3)."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FLYSWATTER_", extra="ignore", frozen=True)

    database_url: str = DEFAULT_SQLITE_URL
    # SQLAlchemy pool per worker process; PostgreSQL only.
    database_pool_size: int = Field(default=10, ge=1, le=200)
    database_max_overflow: int = Field(default=10, ge=0, le=200)
    # A query that cannot get a connection within this time fails with 503 instead of hanging.
    database_timeout_seconds: float = Field(default=5.0, gt=0, le=120)

    keycloak_url: str | None = None
    # ``serve`` refuses a loopback Keycloak URL: that is where ``flyswatter dev``'s development
    # identity provider listens, and it signs tokens for anyone. Set this when Keycloak really
    # runs on the same host (or in the same network namespace) as the service.
    allow_loopback_keycloak: bool = False
    keycloak_realm: str = "flyswatter"
    # The resource-server client id that must appear in a token's ``aud``.
    audience: str = "flyswatter-api"
    # The issuer tokens carry; defaults to ``{keycloak_url}/realms/{realm}``. Set it when the
    # service reaches Keycloak by another name than the one users' browsers use.
    issuer: str | None = None
    # Client ids offered in Swagger UI's Authorize dialog.
    swagger_client_id: str = "flyswatter-web"
    token_algorithms: list[str] = ["RS256"]
    token_leeway_seconds: int = Field(default=30, ge=0, le=300)
    # An unknown ``kid`` triggers at most one JWKS refetch per this many seconds.
    jwks_refresh_min_interval_seconds: float = Field(default=10.0, ge=0)

    redis_url: str | None = None
    rate_limit_writes: str = "120/minute"
    rate_limit_reads: str = "1200/minute"
    rate_limit_enabled: bool = True

    # Signs page cursors (HMAC-SHA256). ``serve`` refuses to start without it: every replica
    # must sign alike, and nothing else the replicas share is secret. Unset (``dev``, an app
    # built in-process), the process signs with a random key of its own.
    cursor_secret: SecretStr | None = None

    # How long a POST's Idempotency-Key is remembered (and its response replayed).
    idempotency_window_seconds: int = Field(default=86_400, ge=60, le=30 * 86_400)

    # Jobs (Celery). The broker is FLYSWATTER_REDIS_URL; job state lives in the database.
    # A message not acknowledged this long after delivery (a worker killed mid-task) goes
    # back to the queue. One redelivered while its job still runs finds the job's lease live
    # and is dropped.
    job_visibility_timeout_seconds: int = Field(default=900, ge=5, le=86_400)
    # A running job's lease: its run renews it every third of this while it works, and no
    # other run may take the job before it lapses (its worker stopped). Keep it well below the
    # visibility timeout, so that a message redelivered after its worker died finds it lapsed.
    job_lease_seconds: int = Field(default=60, ge=2, le=3600)
    job_max_retries: int = Field(default=5, ge=0, le=50)
    # Exponential backoff between retries, from this base, capped, with full jitter.
    job_retry_backoff_seconds: float = Field(default=2.0, gt=0, le=600)
    job_retry_backoff_max_seconds: float = Field(default=120.0, gt=0, le=3600)
    # Queued jobs older than this are published again by the periodic sweep (a broker that
    # was down when they were requested); tasks are idempotent, so a twin does no harm.
    job_requeue_after_seconds: int = Field(default=60, ge=5, le=86_400)
    # Reports: rows in the issue table at most (the total is stated), default period.
    report_table_limit: int = Field(default=1000, ge=10, le=20_000)
    report_default_days: int = Field(default=30, ge=1, le=REPORT_MAX_DAYS)
    # Sub-issues nest at most this many levels below a top-level issue.
    subissue_max_depth: int = Field(default=5, ge=1, le=50)

    # Artifacts (report files): a local directory, or S3-compatible object storage.
    storage_backend: Literal["local", "s3"] = "local"
    storage_dir: str = "./flyswatter-artifacts"
    s3_bucket: str = "flyswatter-artifacts"
    s3_endpoint_url: str | None = None
    s3_region: str = "us-east-1"
    s3_access_key_id: str | None = None
    s3_secret_access_key: str | None = None
    # The worker creates the bucket at start when missing (development stacks such as compose).
    s3_create_bucket: bool = False
    # Downloads answer with a redirect to a presigned URL valid this long (S3 only).
    s3_presigned_downloads: bool = False
    s3_presign_seconds: int = Field(default=300, ge=10, le=7 * 86_400)
    # Files attached to issues: the largest accepted (413 beyond it, counted as it streams in).
    attachment_max_bytes: int = Field(default=10 * 1024 * 1024, ge=1, le=5 * 1024**3)
    artifact_ttl_seconds: int = Field(default=7 * 86_400, ge=60, le=365 * 86_400)
    artifact_sweep_interval_seconds: int = Field(default=3600, ge=5, le=86_400)

    # The worker's main process serves /metrics (all its pool processes) and /healthz here.
    worker_metrics_port: int = Field(default=9808, ge=0, le=65535)
    worker_metrics_host: str = "127.0.0.1"

    # Optional error reporting (sentry-sdk); off without a DSN.
    sentry_dsn: str | None = None
    sentry_environment: str = "production"
    sentry_release: str | None = None

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    workers: int = Field(default=1, ge=1, le=64)
    forwarded_allow_ips: str | None = None
    # On SIGTERM, in-flight requests get this long to finish before they are cancelled; keep
    # it below the orchestrator's kill timeout (compose's ``stop_grace_period``).
    graceful_shutdown_seconds: int = Field(default=20, ge=1, le=600)
    cors_origins: list[str] = []
    log_format: Literal["json", "text"] = "json"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    max_body_bytes: int = Field(default=1_048_576, ge=1024)

    # Webhooks. Targets must be https unless plain http is allowed (``flyswatter dev`` does);
    # loopback, private, link-local, multicast and cloud-metadata addresses are refused
    # unless they are in ``webhook_allowed_networks`` (CIDRs). ``webhook_allow_loopback`` is
    # for ``flyswatter dev`` only: ``serve`` refuses it (allow-list the address instead).
    webhook_allow_http: bool = False
    webhook_allow_loopback: bool = False
    webhook_allowed_networks: list[str] = []
    webhook_timeout_seconds: float = Field(default=10.0, gt=0, le=60)
    # Attempts per delivery, the backoff between them (doubling from the base, capped): the
    # defaults retry for about a day (1 min, 2, 4, ... then every 6 h; 13 attempts, 26 h).
    webhook_max_attempts: int = Field(default=13, ge=1, le=30)
    webhook_retry_base_seconds: float = Field(default=60.0, gt=0, le=3600)
    webhook_retry_max_delay_seconds: float = Field(default=6 * 3600.0, gt=0, le=86_400)
    # A webhook is disabled after this many failed attempts in a row (any success resets).
    webhook_disable_after_failures: int = Field(default=50, ge=1, le=10_000)
    # Fernet keys that encrypt webhook signing secrets in the database (flyswatter.webhooks.
    # secret_box): the first encrypts, all decrypt. Unset, one is derived from the database URL.
    webhook_secret_keys: list[SecretStr] = []
    # After a secret rotation the previous secret keeps signing this long, beside the new one.
    webhook_secret_overlap_seconds: int = Field(default=86_400, ge=0, le=7 * 86_400)
    # Deliveries a worker claims at once, and sends concurrently.
    webhook_batch_size: int = Field(default=20, ge=1, le=500)
    # The periodic sweep's interval (due deliveries, pruning).
    webhook_sweep_interval_seconds: float = Field(default=5.0, gt=0, le=3600)
    # Events (and their delivery logs) are kept this long, then pruned.
    event_retention_days: int = Field(default=7, ge=2, le=365)

    # The live event stream (Server-Sent Events).
    events_heartbeat_seconds: float = Field(default=15.0, gt=0, le=300)
    events_max_streams_per_principal: int = Field(default=5, ge=1, le=1000)
    # Events waiting for one slow client; past this it is told to resync instead.
    events_stream_buffer: int = Field(default=256, ge=1, le=100_000)
    # A stream ends after this long at the latest (the client resumes with Last-Event-ID),
    # and sooner when its token expires or its caller may no longer see the project.
    events_stream_max_seconds: int = Field(default=900, ge=5, le=86_400)
    # Redis pub/sub channel that fans events out to every worker and replica.
    events_channel: str = Field(default="flyswatter:events", min_length=1, max_length=200)

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: str) -> str:
        value = normalise_database_url(value)
        if not value.startswith(("sqlite://", "sqlite+aiosqlite://", "postgresql+psycopg://")):
            raise ValueError("must be a sqlite:// or postgresql:// URL")
        try:
            # An unencoded @ in a password leaves part of it in the host: refused, so that
            # no log line naming the host can carry it.
            if "@" in (make_url(value).host or ""):
                raise ValueError("@ in the host")
        except (ArgumentError, ValueError):
            raise ValueError(
                "is not a URL of the form postgresql://user:password@host:5432/database "
                "(a password with @, : or / must be percent-encoded)"
            ) from None
        return value

    @field_validator("keycloak_url", "issuer")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.rstrip("/")
        if urlsplit(value).scheme not in ("http", "https") or not urlsplit(value).hostname:
            raise ValueError("must be an http(s) URL")
        return value

    @field_validator("token_algorithms")
    @classmethod
    def _asymmetric_only(cls, value: list[str]) -> list[str]:
        allowed = {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"}
        bad = [alg for alg in value if alg not in allowed]
        if bad or not value:
            raise ValueError(f"token_algorithms must be asymmetric algorithms, got {bad or value}")
        return value

    @field_validator("webhook_secret_keys")
    @classmethod
    def _fernet_keys(cls, value: list[SecretStr]) -> list[SecretStr]:
        for number, key in enumerate(value, start=1):
            try:
                Fernet(key.get_secret_value().encode())
            except ValueError:
                # The key itself stays out of the message.
                raise ValueError(
                    f"key {number} is not a Fernet key (32 url-safe base64-encoded bytes)"
                ) from None
        return value

    @field_validator("webhook_allowed_networks")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for network in value:
            try:
                ip_network(network, strict=False)
            except ValueError:
                raise ValueError(f"not a network (CIDR or address): {network!r}") from None
        return value

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    # Plain properties, not cached: ``model_copy(update=...)`` copies cached values along.
    @property
    def async_database_url(self) -> str:
        url = normalise_database_url(self.database_url)
        if url.startswith("sqlite://"):
            return "sqlite+aiosqlite://" + url[len("sqlite://") :]
        return url

    @property
    def sync_database_url(self) -> str:
        """The URL Alembic runs on: same database, synchronous driver."""
        url = normalise_database_url(self.database_url)
        if url.startswith("sqlite+aiosqlite://"):
            return "sqlite://" + url[len("sqlite+aiosqlite://") :]
        return url

    @property
    def database_address(self) -> str:
        """Where the database is, for log lines: host and port, or the SQLite file; never
        the user or the password."""
        url = make_url(self.sync_database_url)
        if url.get_backend_name() == "sqlite":
            return f"SQLite file {url.database or ':memory:'}"
        return f"{url.host or 'localhost'}:{url.port or 5432}"

    @property
    def keycloak_address(self) -> str:
        """Keycloak's host and port, for log lines."""
        return address_of(self.keycloak_url or "")

    @property
    def redis_address(self) -> str:
        """Redis' host and port, for log lines (the URL may carry a password)."""
        return address_of(self.redis_url or "", default_port=6379)

    @property
    def realm_url(self) -> str:
        if self.keycloak_url is None:
            raise UnsafeSettings("FLYSWATTER_KEYCLOAK_URL is not set")
        return f"{self.keycloak_url}/realms/{self.keycloak_realm}"

    @property
    def expected_issuer(self) -> str:
        return self.issuer or self.realm_url

    def check_production(self) -> None:
        """Refuse settings that are fine for ``flyswatter dev`` but unsafe for ``serve``."""
        if self.keycloak_url is None:
            raise UnsafeSettings(
                "FLYSWATTER_KEYCLOAK_URL is not set: serve validates Keycloak tokens and needs "
                "the Keycloak base URL (e.g. https://sso.example.org)"
            )
        keycloak_host = urlsplit(self.keycloak_url).hostname
        if is_loopback_host(keycloak_host) and not self.allow_loopback_keycloak:
            raise UnsafeSettings(
                f"FLYSWATTER_KEYCLOAK_URL points at loopback ({keycloak_host}), where the "
                "development identity provider runs: point it at Keycloak, or set "
                "FLYSWATTER_ALLOW_LOOPBACK_KEYCLOAK=true if Keycloak really runs on this host"
            )
        if not self.audience.strip():
            raise UnsafeSettings("FLYSWATTER_AUDIENCE is empty: tokens for any client would pass")
        if self.is_sqlite and self.workers > 1:
            raise UnsafeSettings(
                "SQLite cannot be shared by several workers: set FLYSWATTER_DATABASE_URL to "
                "PostgreSQL or FLYSWATTER_WORKERS=1"
            )
        if self.workers > 1 and self.rate_limit_enabled and self.redis_url is None:
            raise UnsafeSettings(
                "several workers need shared rate limits: set FLYSWATTER_REDIS_URL "
                "(or FLYSWATTER_RATE_LIMIT_ENABLED=false)"
            )
        if self.webhook_allow_loopback:
            raise UnsafeSettings(
                "FLYSWATTER_WEBHOOK_ALLOW_LOOPBACK is for flyswatter dev: list the receiver's "
                "address in FLYSWATTER_WEBHOOK_ALLOWED_NETWORKS instead"
            )
        if "*" in self.cors_origins:
            raise UnsafeSettings("FLYSWATTER_CORS_ORIGINS must list origins, not '*'")
        if self.cursor_secret is None or not self.cursor_secret.get_secret_value().strip():
            raise UnsafeSettings(
                "FLYSWATTER_CURSOR_SECRET is not set: serve signs page cursors with it; give "
                "every replica the same random value (e.g. `openssl rand -hex 32`)"
            )
        if not self.webhook_secret_keys:
            # Else the key would be derived from the database URL: whoever reads the
            # configuration and a backup of the database could open every signing secret.
            raise UnsafeSettings(
                "FLYSWATTER_WEBHOOK_SECRET_KEYS is not set: serve encrypts webhook signing "
                "secrets with it; give every replica and worker the same JSON list of Fernet "
                "keys (`python -c 'from cryptography.fernet import Fernet; "
                "print(Fernet.generate_key().decode())'`)"
            )
