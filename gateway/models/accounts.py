"""People and their keys: console users, virtual API keys, teams, plans and tag budgets."""
from __future__ import annotations

from datetime import datetime

from flask_login import UserMixin
from sqlalchemy import JSON, BigInteger, Boolean, DateTime, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from gateway.extensions import db
from gateway.models.clock import utcnow

ROLES = ("admin", "member", "viewer")


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
    valid_from: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)  # refused before; None: at once
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
    # budget_usd above is each key's default; this is one cap shared by every key on the plan
    # (counter scope plan:<id>).
    pool_budget_usd: Mapped[float | None] = mapped_column(Float, nullable=True)
    pool_period: Mapped[str] = mapped_column(String(8), default="month", server_default="month")
    pool_timezone: Mapped[str] = mapped_column(String(64), default="UTC", server_default="UTC")


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


class LoginFailure(db.Model):
    """A failed console login; counted per email and per IP to throttle guessing across workers."""
    __tablename__ = "login_failures"
    __table_args__ = (Index("ix_login_failures_email_at", "email", "at"),
                      Index("ix_login_failures_ip_at", "ip", "at"))
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(255))
    ip: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
