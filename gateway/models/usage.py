"""What requests did: usage records, the hourly rollup, breaker transitions, stored and cached answers."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, BigInteger, Boolean, DateTime, Float, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from gateway.extensions import db
from gateway.models.clock import utcnow


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


class DeploymentEvent(db.Model):
    """A circuit-breaker transition of a deployment (opened, half_open, closed), kept for the
    downtime history; written in batches by the usage writer (accounting/deployment_events.py).
    deployment_id is no foreign key: the history outlives a deleted deployment."""
    __tablename__ = "deployment_events"
    __table_args__ = (Index("ix_deployment_events_dep_at", "deployment_id", "at"),
                      Index("ix_deployment_events_at", "at"))
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    deployment_id: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16))          # opened, half_open, closed
    at: Mapped[datetime] = mapped_column(DateTime)
    reason: Mapped[str] = mapped_column(String(200), default="")


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
