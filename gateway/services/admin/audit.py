"""The audit trail: one row per change made in the console, the CLI or gateway.yaml, secrets
scrubbed before they are stored."""
from __future__ import annotations

import re
from datetime import date

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
    """A copy of `value` with secret-looking fields and values replaced, dates as ISO text."""
    if isinstance(value, dict):
        return {k: ("[redacted]" if _SECRET_FIELDS.search(str(k)) and k not in _ALLOWED else scrub(v))
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [scrub(v) for v in value]
    if isinstance(value, str):
        return _SECRET_VALUES.sub(lambda m: (m["param"] or "") + "[redacted]", value)[:1000]
    if isinstance(value, date):         # datetime too: a JSON column stores text
        return value.isoformat()
    return value


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
