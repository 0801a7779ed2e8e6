"""What can serve a request: providers, deployments, prices, aliases (with their history) and policies."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Boolean, DateTime, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from gateway.extensions import db
from gateway.models.clock import utcnow


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


class Alias(db.Model):
    """A stable name clients use, pointing at a model or at `policy:NAME`."""
    __tablename__ = "aliases"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    target: Mapped[str] = mapped_column(String(200))
    source: Mapped[str] = mapped_column(String(16), default="cli")
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)


class AliasVersion(db.Model):
    """One change of an alias (model version management): written by catalog_admin.set_alias,
    rollback_alias and delete_alias whatever the source, so the history is complete."""
    __tablename__ = "alias_versions"
    __table_args__ = (Index("ix_alias_versions_alias", "alias", "id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    alias: Mapped[str] = mapped_column(String(200))
    target: Mapped[str | None] = mapped_column(String(200), nullable=True)            # None: deleted
    previous_target: Mapped[str | None] = mapped_column(String(200), nullable=True)   # None: created
    change: Mapped[str] = mapped_column(String(16), default="set")      # set, rollback, delete
    actor: Mapped[str] = mapped_column(String(255), default="")         # email, cli:user, config
    source: Mapped[str] = mapped_column(String(16), default="cli")      # console, cli, config
    at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


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
