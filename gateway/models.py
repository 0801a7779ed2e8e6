"""Database models. Times are naive UTC (SQLite keeps no zone); see utcnow()."""
from __future__ import annotations

from datetime import datetime, timezone

from flask_login import UserMixin
from sqlalchemy import (JSON, BigInteger, Boolean, DateTime, Float, ForeignKey, Index, Integer, LargeBinary,
                        String, Text)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from gateway.extensions import db

ROLES = ("admin", "member", "viewer")


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


class User(UserMixin, db.Model):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(255), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16), default="member")
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    team_id: Mapped[int | None] = mapped_column(ForeignKey("teams.id", ondelete="SET NULL"), nullable=True)
    # Part of every login session's id: raising it (logout, new password, role change,
    # deactivation) ends all of this user's sessions, in every process.
    session_version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")

    @property
    def is_active(self) -> bool:
        return self.active

    def get_id(self) -> str:
        """What flask-login keeps in the session cookie: the id and the session version."""
        return f"{self.id}:{self.session_version or 0}"


class Provider(db.Model):
    """An upstream account: a wire format (kind), its base URL and the encrypted key."""
    __tablename__ = "providers"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    kind: Mapped[str] = mapped_column(String(32))
    base_url: Mapped[str] = mapped_column(String(500), default="")
    api_key_enc: Mapped[str] = mapped_column(Text, default="")
    key_last4: Mapped[str] = mapped_column(String(8), default="")
    region: Mapped[str] = mapped_column(String(64), default="")
    options: Mapped[dict] = mapped_column(JSON, default=dict)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    source: Mapped[str] = mapped_column(String(16), default="cli")   # cli, console, config, demo
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)
    deployments: Mapped[list[Deployment]] = relationship(
        back_populates="provider", cascade="all, delete-orphan")


class Deployment(db.Model):
    """One way to serve a public model name: a provider plus its upstream model name."""
    __tablename__ = "deployments"
    __table_args__ = (Index("ix_deployments_model", "model"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    model: Mapped[str] = mapped_column(String(200))              # what clients ask for
    provider_id: Mapped[int] = mapped_column(ForeignKey("providers.id", ondelete="CASCADE"))
    upstream_model: Mapped[str] = mapped_column(String(200))
    mode: Mapped[str] = mapped_column(String(16), default="chat")   # chat, embedding, image, audio, moderation, rerank
    weight: Mapped[int] = mapped_column(Integer, default=1)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    provider: Mapped[Provider] = relationship(back_populates="deployments")
    # Routing facts; None means "not set": the provider's region, the price table, no limit.
    region: Mapped[str | None] = mapped_column(String(64), nullable=True)
    input_per_1k: Mapped[float | None] = mapped_column(Float, nullable=True)
    output_per_1k: Mapped[float | None] = mapped_column(Float, nullable=True)
    context_window: Mapped[int | None] = mapped_column(Integer, nullable=True)
    capabilities: Mapped[list | None] = mapped_column(JSON, nullable=True)   # tools, vision, json, ...
    rpm_limit: Mapped[int | None] = mapped_column(Integer, nullable=True)
    tpm_limit: Mapped[int | None] = mapped_column(Integer, nullable=True)
    source: Mapped[str] = mapped_column(String(16), default="cli")        # cli, console, config, demo
    # Media prices (pricing.PRICE_UNITS): USD per image, second, minute, 1K characters, search unit
    unit_price: Mapped[float | None] = mapped_column(Float, nullable=True)
    price_unit: Mapped[str | None] = mapped_column(String(16), nullable=True)


class ModelPrice(db.Model):
    """USD per 1K tokens for an upstream model name; the admin edits these."""
    __tablename__ = "model_prices"
    id: Mapped[int] = mapped_column(primary_key=True)
    model: Mapped[str] = mapped_column(String(200), unique=True)
    input_per_1k: Mapped[float] = mapped_column(Float, default=0.0)
    output_per_1k: Mapped[float] = mapped_column(Float, default=0.0)
    cached_input_per_1k: Mapped[float | None] = mapped_column(Float, nullable=True)
    unit_price: Mapped[float | None] = mapped_column(Float, nullable=True)     # media: USD per price_unit
    price_unit: Mapped[str | None] = mapped_column(String(16), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)


class ApiKey(db.Model):
    """A virtual key. Only a SHA-256 of the secret is stored, with a visible prefix."""
    __tablename__ = "api_keys"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    prefix: Mapped[str] = mapped_column(String(16), index=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), nullable=True)
    models: Mapped[list | None] = mapped_column(JSON, nullable=True)   # None: every model
    expires_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    user: Mapped[User | None] = relationship()
    # Limits (issue 5). None: no limit of that kind here (the plan's default, if any, applies).
    team_id: Mapped[int | None] = mapped_column(ForeignKey("teams.id", ondelete="SET NULL"), nullable=True, index=True)
    plan_id: Mapped[int | None] = mapped_column(ForeignKey("plans.id", ondelete="SET NULL"), nullable=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    token_quota: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    quota_period: Mapped[str] = mapped_column(String(8), default="total")   # total, day, week, month
    quota_tz: Mapped[str] = mapped_column(String(64), default="UTC")        # where a period starts
    budget_usd: Mapped[float | None] = mapped_column(Float, nullable=True)  # per quota_period
    rpm: Mapped[int | None] = mapped_column(Integer, nullable=True)
    tpm: Mapped[int | None] = mapped_column(Integer, nullable=True)
    max_parallel: Mapped[int | None] = mapped_column(Integer, nullable=True)
    policy: Mapped[str | None] = mapped_column(String(100), nullable=True)  # bound routing policy
    ip_allow: Mapped[list | None] = mapped_column(JSON, nullable=True)      # CIDRs; None: anywhere
    redact: Mapped[str | None] = mapped_column(String(8), nullable=True)    # off, store, upstream; None: default
    cache_ttl: Mapped[int | None] = mapped_column(Integer, nullable=True)   # response cache seconds; None: off
    # The ceiling a member edits within (key_ceiling.py): these settings as an admin last set
    # them. None on keys from before it existed: their current settings are the ceiling.
    admin_limits: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    # Rotation: the previous secret keeps working until prev_valid_until.
    prev_key_hash: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    prev_valid_until: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    rotated_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    updated_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True, default=utcnow, onupdate=utcnow)
    team: Mapped[Team | None] = relationship(foreign_keys=[team_id])
    plan: Mapped[Plan | None] = relationship(foreign_keys=[plan_id])


class UsageRecord(db.Model):
    """One row per /v1 request, served or not."""
    __tablename__ = "usage_records"
    __table_args__ = (Index("ix_usage_created", "created_at"),
                      Index("ix_usage_key_created", "key_id", "created_at"),
                      Index("ix_usage_model_created", "requested_model", "created_at"),
                      # a member's scope: their own requests (this) or their keys' (ix_usage_key_created)
                      Index("ix_usage_user_created", "user_id", "created_at"),
                      # covers the usage page's cache and overhead tiles (reporting/cache_stats.py)
                      Index("ix_usage_created_cache", "created_at", "status", "cached", "overhead_ms",
                            "latency_ms", "saved_usd"))
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    request_id: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    endpoint: Mapped[str] = mapped_column(String(32))            # chat, embeddings, images, speech, ...
    key_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    key_prefix: Mapped[str | None] = mapped_column(String(16), nullable=True)
    user_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    requested_model: Mapped[str | None] = mapped_column(String(200), nullable=True)
    provider_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    provider: Mapped[str | None] = mapped_column(String(100), nullable=True)
    upstream_model: Mapped[str | None] = mapped_column(String(200), nullable=True)
    stream: Mapped[bool] = mapped_column(Boolean, default=False)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    total_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cached_tokens: Mapped[int] = mapped_column(Integer, default=0)
    estimated: Mapped[bool] = mapped_column(Boolean, default=False)
    cost_usd: Mapped[float] = mapped_column(Float, default=0.0)
    # What a media request is billed by: 2 image, 31.5 second, 120 character, 1 search_unit
    units: Mapped[float | None] = mapped_column(Float, nullable=True)
    unit: Mapped[str | None] = mapped_column(String(16), nullable=True)
    latency_ms: Mapped[float] = mapped_column(Float, default=0.0)
    ttft_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    overhead_ms: Mapped[float | None] = mapped_column(Float, nullable=True)  # the gateway's own time
    cached: Mapped[bool] = mapped_column(Boolean, default=False)     # answered from the response cache
    saved_usd: Mapped[float] = mapped_column(Float, default=0.0)     # a cached answer: what it cost first
    status: Mapped[int] = mapped_column(Integer)
    error_type: Mapped[str | None] = mapped_column(String(64), nullable=True)
    error_message: Mapped[str | None] = mapped_column(String(500), nullable=True)
    tags: Mapped[dict] = mapped_column(JSON, default=dict)
    attempts: Mapped[list] = mapped_column(JSON, default=list)
    variant: Mapped[str | None] = mapped_column(String(64), nullable=True)   # A/B arm, or "shadow"
    # Only when the admin turns on log_prompts; encrypted (prompt_log.seal_rows), deferred so
    # log lists never load them.
    request_body: Mapped[str | None] = mapped_column(Text, nullable=True, deferred=True)
    response_text: Mapped[str | None] = mapped_column(Text, nullable=True, deferred=True)


class StoredResponse(db.Model):
    """A Responses API answer kept (`store`) so `previous_response_id` can continue it: the
    conversation so far and the response object, both encrypted (prompt_log.seal_text)."""
    __tablename__ = "stored_responses"
    __table_args__ = (Index("ix_stored_responses_created", "created_at"),)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)      # resp_...
    key_id: Mapped[int] = mapped_column(Integer, index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    model: Mapped[str] = mapped_column(String(200))
    items: Mapped[str] = mapped_column(Text)        # the input items, earlier turns included
    output: Mapped[str] = mapped_column(Text)       # the response object


class CachedResponse(db.Model):
    """A stored answer (response cache) or idempotent response, when Redis is not configured.
    `key_hash` covers the scope; rows past `expires_at` are never read and purged in batches."""
    __tablename__ = "cached_responses"
    key_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    scope: Mapped[str] = mapped_column(String(80))
    body: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime, index=True)


class AuditLog(db.Model):
    """Who changed what, in the console, the CLI or gateway.yaml. Append-only: no route edits
    or deletes these rows."""
    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_at", "at"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    actor_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    actor: Mapped[str] = mapped_column(String(255), default="")        # email at the time
    action: Mapped[str] = mapped_column(String(64))                    # e.g. key.create
    target: Mapped[str] = mapped_column(String(255), default="")
    details: Mapped[dict] = mapped_column(JSON, default=dict)          # never secrets
    ip: Mapped[str] = mapped_column(String(64), default="")
    source: Mapped[str] = mapped_column(String(16), default="console", server_default="console")  # cli, config


class Setting(db.Model):
    """Console-editable settings (prompt logging, budget, public URL): name -> JSON value."""
    __tablename__ = "settings"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[dict | list | str | int | float | bool | None] = mapped_column(JSON, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)


class LoginFailure(db.Model):
    """A failed console login; counted per email and per IP to throttle guessing across workers."""
    __tablename__ = "login_failures"
    __table_args__ = (Index("ix_login_failures_email_at", "email", "at"),
                      Index("ix_login_failures_ip_at", "ip", "at"))
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(255))
    ip: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Team(db.Model):
    """Owns keys and users; carries a spend budget with soft alerts and a hard cap."""
    __tablename__ = "teams"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    budget_usd: Mapped[float | None] = mapped_column(Float, nullable=True)   # hard cap per period
    budget_period: Mapped[str] = mapped_column(String(8), default="month")  # total, day, week, month
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    alert_thresholds: Mapped[list] = mapped_column(JSON, default=lambda: [50, 80, 100])  # percent
    webhook_url: Mapped[str] = mapped_column(String(500), default="")
    webhook_secret_enc: Mapped[str] = mapped_column(Text, default="")     # secrets.encrypt()
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    # The plan keys made by the team's members are on: their defaults and ceiling.
    plan_id: Mapped[int | None] = mapped_column(ForeignKey("plans.id", ondelete="SET NULL"), nullable=True)


class Plan(db.Model):
    """A tier: default limits and model allowlist for the keys on it."""
    __tablename__ = "plans"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    token_quota: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    quota_period: Mapped[str] = mapped_column(String(8), default="month")
    budget_usd: Mapped[float | None] = mapped_column(Float, nullable=True)
    rpm: Mapped[int | None] = mapped_column(Integer, nullable=True)
    tpm: Mapped[int | None] = mapped_column(Integer, nullable=True)
    max_parallel: Mapped[int | None] = mapped_column(Integer, nullable=True)
    models: Mapped[list | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class TagBudget(db.Model):
    """A budget on requests carrying a tag, e.g. feature=search or tenant=acme."""
    __tablename__ = "tag_budgets"
    __table_args__ = (db.UniqueConstraint("tag", "value"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    tag: Mapped[str] = mapped_column(String(64))
    value: Mapped[str] = mapped_column(String(200))
    budget_usd: Mapped[float] = mapped_column(Float)
    budget_period: Mapped[str] = mapped_column(String(8), default="month")
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    alert_thresholds: Mapped[list] = mapped_column(JSON, default=lambda: [50, 80, 100])
    webhook_url: Mapped[str] = mapped_column(String(500), default="")
    webhook_secret_enc: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class QuotaCounter(db.Model):
    """Spend of one scope (key:7, key:7:m, team:2, tag:feature=search) in one period.
    Reservations sit in reserved_*, settled usage in used_*; the guard is used+reserved <= cap."""
    __tablename__ = "quota_counters"
    __table_args__ = (db.UniqueConstraint("scope", "period_start"),)
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    scope: Mapped[str] = mapped_column(String(300))
    period_start: Mapped[datetime] = mapped_column(DateTime)      # naive UTC
    used_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    reserved_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    used_usd: Mapped[float] = mapped_column(Float, default=0.0)
    reserved_usd: Mapped[float] = mapped_column(Float, default=0.0)
    requests: Mapped[int] = mapped_column(BigInteger, default=0)
    inflight: Mapped[int] = mapped_column(Integer, default=0)


class Reservation(db.Model):
    """The ledger: what one request reserved, and what it finally cost. Settled once."""
    __tablename__ = "reservations"
    __table_args__ = (Index("ix_reservations_open", "settled_at", "created_at"),)
    request_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    key_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    counters: Mapped[list] = mapped_column(JSON)          # [[scope, period_start iso], ...]
    tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    usd: Mapped[float] = mapped_column(Float, default=0.0)
    used_tokens: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    used_usd: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    settled_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class Alert(db.Model):
    """A budget threshold crossed: once per scope, threshold and period; shown as a banner."""
    __tablename__ = "alerts"
    __table_args__ = (db.UniqueConstraint("scope", "period_start", "threshold"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    scope: Mapped[str] = mapped_column(String(300))     # team:2, tag:feature=search, key:7
    label: Mapped[str] = mapped_column(String(300), default="")
    period_start: Mapped[datetime] = mapped_column(DateTime)
    threshold: Mapped[int] = mapped_column(Integer)     # percent
    spent_usd: Mapped[float] = mapped_column(Float, default=0.0)
    budget_usd: Mapped[float] = mapped_column(Float, default=0.0)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    webhook_status: Mapped[str] = mapped_column(String(64), default="")   # "", sent, failed: ..., none
    acknowledged: Mapped[bool] = mapped_column(Boolean, default=False)


class Alias(db.Model):
    """A stable name clients use, pointing at a model or at `policy:NAME`."""
    __tablename__ = "aliases"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    target: Mapped[str] = mapped_column(String(200))
    source: Mapped[str] = mapped_column(String(16), default="cli")
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)


class Policy(db.Model):
    """An admin-defined routing policy (the built-in ones need no row)."""
    __tablename__ = "policies"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    strategy: Mapped[str] = mapped_column(String(32), default="weighted")  # cost, latency, throughput, reliability
    candidates: Mapped[list | None] = mapped_column(JSON, nullable=True)  # model names; None: the requested model
    weights: Mapped[dict | None] = mapped_column(JSON, nullable=True)     # candidate -> weight
    capabilities: Mapped[list | None] = mapped_column(JSON, nullable=True)
    regions: Mapped[list | None] = mapped_column(JSON, nullable=True)
    sticky: Mapped[str | None] = mapped_column(String(64), nullable=True)  # body field, e.g. "user"
    ab: Mapped[dict | None] = mapped_column(JSON, nullable=True)          # {"model": ..., "percent": ...}
    shadow: Mapped[dict | None] = mapped_column(JSON, nullable=True)      # {"model": ..., "percent": ...}
    redact: Mapped[str | None] = mapped_column(String(8), nullable=True)   # off, store, upstream; None: not set
    cache_ttl: Mapped[int | None] = mapped_column(Integer, nullable=True)  # response cache seconds; None: off
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    source: Mapped[str] = mapped_column(String(16), default="cli")
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)


ROLLUP_BUCKETS = 48     # latency histogram columns h0..h47; edges in services/rollup.py


class UsageHourly(db.Model):
    """Usage records summed per hour and dimensions, for the charts (services/rollup.py).
    grain 0: every dimension, hourly; 1: per day, key_id and user_id summed away (0);
    2: per day, requested_model, provider and variant summed away ("").
    Absent values are stored as 0 or "" so the primary key can serve the upsert."""
    __tablename__ = "usage_hourly"
    grain: Mapped[int] = mapped_column(Integer, primary_key=True)
    hour: Mapped[datetime] = mapped_column(DateTime, primary_key=True)     # bucket start, naive UTC
    key_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    requested_model: Mapped[str] = mapped_column(String(200), primary_key=True)
    provider: Mapped[str] = mapped_column(String(100), primary_key=True)
    status: Mapped[int] = mapped_column(Integer, primary_key=True)
    variant: Mapped[str] = mapped_column(String(64), primary_key=True)
    requests: Mapped[int] = mapped_column(BigInteger, default=0)
    errors: Mapped[int] = mapped_column(BigInteger, default=0)
    prompt_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    completion_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    total_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    cached_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    cost_usd: Mapped[float] = mapped_column(Float, default=0.0)
    latency_ms_sum: Mapped[float] = mapped_column(Float, default=0.0)
    ttft_ms_sum: Mapped[float] = mapped_column(Float, default=0.0)
    ttft_count: Mapped[int] = mapped_column(BigInteger, default=0)


for _i in range(ROLLUP_BUCKETS):
    setattr(UsageHourly, f"h{_i}", mapped_column(f"h{_i}", BigInteger, default=0))
del _i
