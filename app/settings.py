"""The one place that reads the process environment (MM_* variables)."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated

import msgspec


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    # None means "start the embedded PostgreSQL under data_dir" (the make-run default).
    database_url: str | None = None
    # None means "use the PostgreSQL-backed broker on the same database".
    broker_url: str | None = None
    host: str = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=1, le=65535)] = 8000
    admin_token: str | None = None
    # Seals runtime-endpoint credentials at rest (32 bytes, base64); `mm up` keeps one in data_dir.
    secret_key: str | None = None
    data_dir: Path = Path(".data")
    cors_origins: tuple[str, ...] = ()
    log_level: str = "INFO"
    pool_min_size: Annotated[int, msgspec.Meta(ge=0)] = 2
    pool_max_size: Annotated[int, msgspec.Meta(ge=1)] = 20
    # Short timeouts keep any one transaction from holding back the global log's visibility horizon.
    statement_timeout_ms: Annotated[int, msgspec.Meta(ge=0)] = 15_000
    idle_in_transaction_timeout_ms: Annotated[int, msgspec.Meta(ge=0)] = 5_000
    projection_batch_size: Annotated[int, msgspec.Meta(ge=1)] = 500
    projection_poll_interval_s: Annotated[float, msgspec.Meta(gt=0)] = 0.5
    # Under a steady stream of commits the projector waits up to this long after a read for more events to
    # arrive, so it applies them as one batch (projections/runner.py COALESCE_S): less CPU per event, more lag.
    projection_coalesce_ms: Annotated[float, msgspec.Meta(ge=0, le=1000)] = 25.0
    read_your_writes_timeout_s: Annotated[float, msgspec.Meta(ge=0)] = 2.0
    # Long streams (agents, endpoints, graphs, wallets) whose aggregate each process keeps a copy of, so a load
    # reads only what was appended since (app/store/aggregate_cache.py); 0 keeps none. A few KB each.
    aggregate_cache_entries: Annotated[int, msgspec.Meta(ge=0)] = 10_000
    # A database that does not answer a connect within this is reported unavailable (503), not waited on.
    database_connect_timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 5.0
    idempotency_ttl_hours: Annotated[int, msgspec.Meta(ge=1)] = 24
    # A request's claim on its Idempotency-Key, renewed every third of this while it runs: a retry after the
    # process died waits at most this long.
    idempotency_lease_s: Annotated[float, msgspec.Meta(ge=0.3, le=300)] = 5.0
    # How long an API process may use a credential row it has read: the bound on a revoked key when the
    # revocation's NOTIFY is lost (normally it is refused within milliseconds). At most 1 s by design.
    credential_cache_ttl_s: Annotated[float, msgspec.Meta(ge=0, le=1.0)] = 1.0
    challenge_ttl_seconds: Annotated[int, msgspec.Meta(ge=0)] = 300
    allow_query_api_key: bool = False
    # Let outbound calls (sellers' runtime endpoints, webhooks) reach loopback, private, link-local and other
    # non-public addresses. Off in production; `mm up` turns it on for its children (a stub seller on
    # loopback). Cloud metadata addresses stay refused either way (app/outbound/guard.py says why).
    allow_private_endpoints: bool = False
    # Total size of a request's header names and values; more is refused with 431.
    max_header_bytes: Annotated[int, msgspec.Meta(ge=1024)] = 16_384
    # How long a worker's claim on a PostgreSQL-broker message lasts unrenewed; renewed every third of it
    # while the actor runs, so a crashed worker's messages run again elsewhere within about this long.
    worker_claim_lease_s: Annotated[float, msgspec.Meta(ge=1, le=3600)] = 10.0
    # Seller reputation (the seller_stats read model): this many consecutive failed runs cool a seller down for
    # seller_cooldown_s after the failure that reached it; p50 latency is taken over the last
    # seller_latency_window runs. The projection folds with these, so a rebuild under other values differs.
    seller_cooldown_failures: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 3
    seller_cooldown_s: Annotated[float, msgspec.Meta(ge=0, le=86_400)] = 60.0
    seller_latency_window: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 100
    # The platform's Ed25519 audit key (raw 32-byte seed, base64): the projector signs audit checkpoints with
    # it. API processes need only its public half (MM_AUDIT_PUBLIC_KEY), which they derive from it if given.
    audit_signing_key: str | None = None
    audit_public_key: str | None = None
    # A checkpoint every N records of an account, or once its oldest unsigned record is T seconds of log time
    # (event occurredAt) old, whichever comes first. Both shape where checkpoints fall, so rebuilds use them too.
    audit_checkpoint_every: Annotated[int, msgspec.Meta(ge=1)] = 1000
    audit_checkpoint_interval_s: Annotated[float, msgspec.Meta(gt=0)] = 60.0
    # Rows per statement of an export: each batch is one short keyset query (see app/api/audit_export.py).
    audit_export_batch_size: Annotated[int, msgspec.Meta(ge=1, le=50_000)] = 5000
    # Live stream (SSE): keep-alive comment period, and how many records a slow subscriber may have queued
    # before it is sent a final `overflow` event naming where to resume.
    audit_stream_keepalive_s: Annotated[float, msgspec.Meta(gt=0)] = 15.0
    audit_stream_queue_size: Annotated[int, msgspec.Meta(ge=1)] = 1000
    # A stream ends after this long with a final `resume` event (clients reconnect with Last-Event-ID), so
    # long-lived connections spread over API processes as they come and go.
    audit_stream_max_s: Annotated[float, msgspec.Meta(gt=0)] = 3600.0
    # Webhook deliveries: a failing delivery is retried with exponential backoff (base doubling, capped per step,
    # full jitter) for at most webhook_retry_span_s after its first failure; an endpoint whose deliveries keep
    # failing longer than that is disabled (with a webhook-endpoint.disabled audit event). Tests use seconds.
    webhook_retry_span_s: Annotated[float, msgspec.Meta(gt=0)] = 3 * 86_400.0
    webhook_backoff_base_s: Annotated[float, msgspec.Meta(gt=0)] = 30.0
    webhook_backoff_max_s: Annotated[float, msgspec.Meta(gt=0)] = 6 * 3600.0
    webhook_timeout_s: Annotated[float, msgspec.Meta(gt=0, le=60)] = 10.0
    # Market orders: the platform's fee in basis points of the price (taken from the escrow on release), how long
    # a payment intent stays open, and the shared secret payment rails sign their callbacks with (HMAC-SHA256;
    # unset: every callback is refused).
    platform_fee_bps: Annotated[int, msgspec.Meta(ge=0, le=10_000)] = 250
    payment_intent_ttl_s: Annotated[int, msgspec.Meta(ge=1, le=7 * 86_400)] = 900
    payment_webhook_secret: str | None = None
    # The API key `mm audit export` sends (a client-side setting: the CLI talks to the API over HTTP).
    api_key: str | None = None

    @property
    def audit_public_key_b64(self) -> str | None:
        """The audit key's public half (standard base64), from either variable."""
        if self.audit_signing_key:
            from projections.audit_chain import public_key_of

            return public_key_of(self.audit_signing_key)
        return self.audit_public_key

    def __post_init__(self) -> None:
        if self.secret_key is not None:
            from app.sealing import decode_key

            decode_key(self.secret_key)  # a malformed key fails at start-up, not at the first credential
        if self.audit_signing_key is not None or self.audit_public_key is not None:
            from projections.audit_chain import decode_raw_key, public_key_of

            if self.audit_public_key is not None:
                decode_raw_key(self.audit_public_key, "MM_AUDIT_PUBLIC_KEY")
            if self.audit_signing_key is not None:
                public = public_key_of(self.audit_signing_key)
                if self.audit_public_key is not None and decode_raw_key(self.audit_public_key, "") != \
                        decode_raw_key(public, ""):
                    raise ValueError("MM_AUDIT_PUBLIC_KEY is not the public half of MM_AUDIT_SIGNING_KEY")
        if self.pool_min_size > self.pool_max_size:
            raise ValueError(f"MM_POOL_MIN_SIZE ({self.pool_min_size}) exceeds MM_POOL_MAX_SIZE ({self.pool_max_size})")


def _bool(var: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"{var} must be true/false (or 1/0, yes/no, on/off), got {value!r}")


def _tuple(raw: str | None) -> tuple[str, ...]:
    return tuple(p.strip() for p in (raw or "").split(",") if p.strip())


def load_settings(env: dict[str, str] | None = None) -> Settings:
    """Build settings from MM_* variables; unknown values fail loudly at start-up, not at first use."""
    e = dict(os.environ if env is None else env)
    raw: dict[str, object] = {}
    simple = {
        "MM_DATABASE_URL": "database_url",
        "MM_BROKER_URL": "broker_url",
        "MM_HOST": "host",
        "MM_PORT": "port",
        "MM_ADMIN_TOKEN": "admin_token",
        "MM_SECRET_KEY": "secret_key",
        "MM_DATA_DIR": "data_dir",
        "MM_LOG_LEVEL": "log_level",
        "MM_POOL_MIN_SIZE": "pool_min_size",
        "MM_POOL_MAX_SIZE": "pool_max_size",
        "MM_STATEMENT_TIMEOUT_MS": "statement_timeout_ms",
        "MM_IDLE_IN_TRANSACTION_TIMEOUT_MS": "idle_in_transaction_timeout_ms",
        "MM_PROJECTION_BATCH_SIZE": "projection_batch_size",
        "MM_PROJECTION_POLL_INTERVAL_S": "projection_poll_interval_s",
        "MM_PROJECTION_COALESCE_MS": "projection_coalesce_ms",
        "MM_READ_YOUR_WRITES_TIMEOUT_S": "read_your_writes_timeout_s",
        "MM_AGGREGATE_CACHE_ENTRIES": "aggregate_cache_entries",
        "MM_DATABASE_CONNECT_TIMEOUT_S": "database_connect_timeout_s",
        "MM_IDEMPOTENCY_TTL_HOURS": "idempotency_ttl_hours",
        "MM_IDEMPOTENCY_LEASE_S": "idempotency_lease_s",
        "MM_CHALLENGE_TTL_SECONDS": "challenge_ttl_seconds",
        "MM_CREDENTIAL_CACHE_TTL_S": "credential_cache_ttl_s",
        "MM_ALLOW_QUERY_API_KEY": "allow_query_api_key",
        "MM_ALLOW_PRIVATE_ENDPOINTS": "allow_private_endpoints",
        "MM_MAX_HEADER_BYTES": "max_header_bytes",
        "MM_WORKER_CLAIM_LEASE_S": "worker_claim_lease_s",
        "MM_SELLER_COOLDOWN_FAILURES": "seller_cooldown_failures",
        "MM_SELLER_COOLDOWN_S": "seller_cooldown_s",
        "MM_SELLER_LATENCY_WINDOW": "seller_latency_window",
        "MM_AUDIT_SIGNING_KEY": "audit_signing_key",
        "MM_AUDIT_PUBLIC_KEY": "audit_public_key",
        "MM_AUDIT_CHECKPOINT_EVERY": "audit_checkpoint_every",
        "MM_AUDIT_CHECKPOINT_INTERVAL_S": "audit_checkpoint_interval_s",
        "MM_AUDIT_EXPORT_BATCH_SIZE": "audit_export_batch_size",
        "MM_AUDIT_STREAM_KEEPALIVE_S": "audit_stream_keepalive_s",
        "MM_AUDIT_STREAM_QUEUE_SIZE": "audit_stream_queue_size",
        "MM_AUDIT_STREAM_MAX_S": "audit_stream_max_s",
        "MM_WEBHOOK_RETRY_SPAN_S": "webhook_retry_span_s",
        "MM_WEBHOOK_BACKOFF_BASE_S": "webhook_backoff_base_s",
        "MM_WEBHOOK_BACKOFF_MAX_S": "webhook_backoff_max_s",
        "MM_WEBHOOK_TIMEOUT_S": "webhook_timeout_s",
        "MM_API_KEY": "api_key",
        "MM_PLATFORM_FEE_BPS": "platform_fee_bps",
        "MM_PAYMENT_INTENT_TTL_S": "payment_intent_ttl_s",
        "MM_PAYMENT_WEBHOOK_SECRET": "payment_webhook_secret",
    }
    for var, field in simple.items():
        if e.get(var):
            raw[field] = e[var]
    if e.get("MM_CORS_ORIGINS"):
        raw["cors_origins"] = _tuple(e["MM_CORS_ORIGINS"])
    for var, field in (("MM_ALLOW_QUERY_API_KEY", "allow_query_api_key"),
                       ("MM_ALLOW_PRIVATE_ENDPOINTS", "allow_private_endpoints")):
        if raw.get(field) is not None:
            raw[field] = _bool(var, str(raw[field]))
    return msgspec.convert(raw, Settings, strict=False, dec_hook=_dec_hook)


def _dec_hook(type_: type, value: object) -> object:
    if type_ is Path and isinstance(value, str):
        return Path(value)
    raise NotImplementedError(f"cannot read {type_} from the environment")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()
