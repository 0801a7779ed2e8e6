"""The console's own records: the audit log and settings."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, DateTime, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from gateway.extensions import db
from gateway.models.clock import utcnow


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
