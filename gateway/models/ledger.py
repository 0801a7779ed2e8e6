"""Spend against limits: quota counters, the reservation ledger and the alerts they raise."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, BigInteger, Boolean, DateTime, Float, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from gateway.extensions import db
from gateway.models.clock import utcnow


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
    """Something an admin should see, once per scope, kind, threshold and period: a spend or
    token threshold crossed (period: the budget's), or a deployment's error rate, p95 latency or
    open circuit (period: the hour). Shown as a banner until acknowledged or resolved."""
    __tablename__ = "alerts"
    __table_args__ = (db.UniqueConstraint("scope", "kind", "period_start", "threshold", name="uq_alerts_once"),
                      Index("ix_alerts_open", "acknowledged", "resolved_at"))
    id: Mapped[int] = mapped_column(primary_key=True)
    scope: Mapped[str] = mapped_column(String(300))     # team:2, tag:feature=search, key:7, plan:3, deployment:4
    label: Mapped[str] = mapped_column(String(300), default="")
    period_start: Mapped[datetime] = mapped_column(DateTime)
    threshold: Mapped[int] = mapped_column(Integer)     # percent; error_rate: %, latency_p95: ms
    spent_usd: Mapped[float] = mapped_column(Float, default=0.0)
    budget_usd: Mapped[float] = mapped_column(Float, default=0.0)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    webhook_status: Mapped[str] = mapped_column(String(64), default="")   # "", sent, failed: ..., none
    acknowledged: Mapped[bool] = mapped_column(Boolean, default=False)
    # spend, tokens, error_rate, latency_p95, provider_down (rows from before kinds: spend)
    kind: Mapped[str] = mapped_column(String(16), default="spend", server_default="spend")
    value: Mapped[float | None] = mapped_column(Float, nullable=True)     # tokens used, error %, p95 ms
    limit_value: Mapped[float | None] = mapped_column(Float, nullable=True)   # token quota, the setting
    message: Mapped[str] = mapped_column(String(500), default="", server_default="")
    key_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)   # who may see it
    team_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    acknowledged_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    acknowledged_by: Mapped[str] = mapped_column(String(255), default="", server_default="")
    email_status: Mapped[str] = mapped_column(String(64), default="", server_default="")
