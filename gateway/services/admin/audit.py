"""The audit trail: one row per change made in the console, the CLI or gateway.yaml, secrets
scrubbed before they are stored."""
from __future__ import annotations

import re
from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import func, select

from gateway.extensions import db
from gateway.models import AuditLog

_SECRET_FIELDS = re.compile(r"(key|secret|password|token)", re.I)
# sk-… keys (not a virtual key's visible prefix, sk-gw- and 8 characters), the value of a
# `?key=` / `&token=` query parameter, user:password@ in a URL
_SECRET_VALUES = re.compile(r"sk-(?!gw-[A-Za-z0-9_\-]{8}(?![A-Za-z0-9_\-]))[A-Za-z0-9_\-]{6,}"
                            r"|(?P<param>[?&][\w-]*(?:key|token|secret|sig|password)[\w-]*=)[^&#\s]+"
                            r"|(?<=://)[^/@\s]+(?=@)", re.I)
_ALLOWED = {"key_last4", "key_prefix", "prefix", "key_id", "keys", "key_ids",    # harmless identifiers
            "old_prefix", "key_changed", "token_quota", "password_changed", "their_keys"}
SOURCES = ("console", "cli", "config")


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
    return _SECRET_VALUES.sub(lambda m: (m["param"] or "") + "[redacted]", text)[:1000]


def record(actor, action: str, target: str = "", details: dict | None = None, ip: str = "",
           commit: bool = True, source: str = "console") -> AuditLog:
    """Append an audit row; `actor` is a User, a name (`cli:alice`, `config`) or None (the system)."""
    name = actor if isinstance(actor, str) else getattr(actor, "email", "") or "system"
    row = AuditLog(actor_id=getattr(actor, "id", None), actor=name[:255], action=action,
                   target=str(target)[:255], details=scrub(details or {}), ip=ip[:64], source=source)
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


def changes(before: dict | None, after: dict) -> dict:
    """The fields of `after` whose value differs from `before`; all of them for a new row."""
    return {k: v for k, v in after.items() if before is None or before.get(k) != v}


def entries(*, action: str = "", actor: str = "", source: str = "", page: int = 1, per_page: int = 50):
    """One page of audit rows, newest first, and the total count."""
    q = select(AuditLog)
    if action:
        q = q.where(AuditLog.action.startswith(action))
    if source:
        q = q.where(AuditLog.source == source)
    if actor:
        q = q.where(AuditLog.actor.contains(actor))
    total = db.session.scalar(select(func.count()).select_from(q.subquery()))
    rows = db.session.scalars(q.order_by(AuditLog.id.desc())
                              .limit(per_page).offset((page - 1) * per_page)).all()
    return rows, total
