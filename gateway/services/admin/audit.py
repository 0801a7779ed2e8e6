"""The audit trail: one row per console change, secrets scrubbed before they are stored."""
from __future__ import annotations

import re
from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import func, select

from gateway.extensions import db
from gateway.models import AuditLog

_SECRET_FIELDS = re.compile(r"(key|secret|password|token)", re.I)
_SECRET_VALUES = re.compile(r"sk-[A-Za-z0-9_\-]{6,}")
_ALLOWED = {"key_last4", "key_prefix", "prefix", "key_id", "keys", "key_ids"}   # harmless identifiers


def scrub(value):
    """A JSON-safe copy of `value` with secret-looking fields and values replaced."""
    if isinstance(value, dict):
        return {str(k): ("[redacted]" if _SECRET_FIELDS.search(str(k)) and k not in _ALLOWED else scrub(v))
                for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=str) if isinstance(value, (set, frozenset)) else value
        return [scrub(v) for v in items]
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, Decimal):
        return float(value)
    # A datetime (a key's expiry) or anything else the JSON column can't hold: its text.
    text = value.isoformat() if isinstance(value, (datetime, date)) else str(value)
    return _SECRET_VALUES.sub("[redacted]", text)[:1000]


def record(actor, action: str, target: str = "", details: dict | None = None, ip: str = "",
           commit: bool = True) -> AuditLog:
    """Append an audit row; `actor` is a User or None (the system)."""
    row = AuditLog(actor_id=getattr(actor, "id", None), actor=getattr(actor, "email", "") or "system",
                   action=action, target=str(target)[:255], details=scrub(details or {}), ip=ip[:64])
    db.session.add(row)
    if commit:
        db.session.commit()
    return row


def complete(row_id: int, **details) -> None:
    """Add the outcome to a row written when an action started (Test connection audits the
    attempt first, so concurrent attempts count against its rate limit)."""
    row = db.session.get(AuditLog, row_id)
    row.details = {**(row.details or {}), **scrub(details)}
    db.session.commit()


def recent(action: str, since: datetime, *, actor_id: int | None = None, ip: str | None = None) -> int:
    """How many `action` rows were written since `since` by this actor, or from this address."""
    q = select(func.count()).select_from(AuditLog).where(AuditLog.action == action, AuditLog.at >= since)
    if actor_id is not None:
        q = q.where(AuditLog.actor_id == actor_id)
    if ip is not None:
        q = q.where(AuditLog.ip == ip[:64])
    return db.session.scalar(q) or 0


def entries(*, action: str = "", actor: str = "", page: int = 1, per_page: int = 50):
    """One page of audit rows, newest first, and the total count."""
    q = select(AuditLog)
    if action:
        q = q.where(AuditLog.action.startswith(action))
    if actor:
        q = q.where(AuditLog.actor.contains(actor))
    total = db.session.scalar(select(func.count()).select_from(q.subquery()))
    rows = db.session.scalars(q.order_by(AuditLog.id.desc())
                              .limit(per_page).offset((page - 1) * per_page)).all()
    return rows, total
