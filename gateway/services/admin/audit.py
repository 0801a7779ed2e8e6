"""The audit trail: one row per change made in the console, the CLI or gateway.yaml, secrets
scrubbed before they are stored."""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import func, select

from gateway.extensions import db
from gateway.models import AuditLog

# Field names that hold secrets (api_key, password, webhook_secret, token, client_secret, ...);
# their values are replaced unless they are True, False or None ("password_changed": True).
_SECRET_NAME = re.compile(r"(?:^|_)(?:password|passwd|passphrase|secret|api_?key|apikey|private_key|access_key"
                          r"|authorization|credentials?|bearer|cookie|signature)(?:_|$)|(?:^|_)(?:key|token)$", re.I)
# Secret-looking values wherever they appear: sk-… keys (not a virtual key's visible prefix,
# sk-gw- and 8 characters), vendor key shapes (Google AIza…, AWS AKIA…, GitHub, Slack,
# webhook whsec_…), JWTs, Bearer credentials, the value of a `?key=` / `&token=` query
# parameter, user:password@ in a URL.
_SECRET_VALUES = re.compile(r"sk-(?!gw-[A-Za-z0-9_\-]{8}(?![A-Za-z0-9_\-]))[A-Za-z0-9_\-]{6,}"
                            r"|AIza[0-9A-Za-z_\-]{12,}|AKIA[0-9A-Z]{12,}|gh[pousr]_[A-Za-z0-9]{12,}"
                            r"|xox[abposr]-[A-Za-z0-9\-]{8,}|whsec_[A-Za-z0-9+/=_\-]{6,}"
                            r"|eyJ[\w\-]+\.eyJ[\w\-]+\.[\w\-]+|(?<=Bearer )\S+"
                            r"|(?P<param>[?&][\w-]*(?:key|token|secret|sig|password)[\w-]*=)[^&#\s]+"
                            r"|(?<=://)[^/@\s]+(?=@)", re.I)
# A long run of random-looking characters (upper, lower and digits mixed): a token of a shape
# the patterns above do not know. Model names and dates are shorter runs, or not mixed.
_RANDOM_RUN = re.compile(r"[A-Za-z0-9]{24,}")
_ALLOWED = {"key_last4", "key_prefix", "prefix", "prefixes", "key_id", "keys", "key_ids",    # harmless identifiers
            "old_prefix", "key_changed", "token_quota", "password_changed", "their_keys"}
SOURCES = ("console", "cli", "config", "api")     # api: a change made through an HTTP API (none today)
REDACTED = "[redacted]"


def secret_name(name: str) -> bool:
    """Whether a field called `name` holds a secret."""
    return name not in _ALLOWED and bool(_SECRET_NAME.search(name))


def _random(run: str) -> bool:
    return any(c.isupper() for c in run) and any(c.islower() for c in run) and sum(c.isdigit() for c in run) >= 2


def scrub_text(text: str) -> str:
    """`text` with secret-looking values replaced."""
    text = _SECRET_VALUES.sub(lambda m: (m["param"] or "") + REDACTED, text)
    return _RANDOM_RUN.sub(lambda m: REDACTED if _random(m[0]) else m[0], text)


def scrub(value):
    """A JSON-safe copy of `value`: secret fields' values and secret-looking values replaced,
    everything else (quotas, budgets, key prefixes, names) kept as it is."""
    if isinstance(value, dict):
        return {str(k): (REDACTED if secret_name(str(k)) and not (v is None or isinstance(v, bool)) else scrub(v))
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
    return scrub_text(text)[:1000]


def readable(value) -> str:
    """A detail's value as people read it: lists joined, mappings as k=v, nothing as —."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(readable(v) for v in value) or "none"
    if isinstance(value, dict):
        return "; ".join(f"{k}: {readable(v)}" for k, v in value.items()) or "none"
    return str(value)


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


@dataclass(frozen=True, slots=True)
class AuditFilter:
    """Which audit rows to show or export; empty fields don't narrow."""
    action: str = ""            # a prefix: "key" matches key.create, key.batch_extend, ...
    actor: str = ""             # part of the actor: an email, cli:alice, config
    source: str = ""            # one of SOURCES
    target: str = ""            # part of the target: a key's name or prefix, a provider, ...
    start: datetime | None = None
    end: datetime | None = None     # exclusive

    def query(self):
        q = select(AuditLog)
        if self.action:
            q = q.where(AuditLog.action.startswith(self.action))
        if self.source:
            q = q.where(AuditLog.source == self.source)
        if self.actor:
            q = q.where(AuditLog.actor.contains(self.actor))
        if self.target:
            q = q.where(AuditLog.target.contains(self.target))
        if self.start is not None:
            q = q.where(AuditLog.at >= self.start)
        if self.end is not None:
            q = q.where(AuditLog.at < self.end)
        return q


def entries(f: AuditFilter | None = None, *, action: str = "", actor: str = "", source: str = "", page: int = 1,
            per_page: int = 50):
    """One page of audit rows, newest first, and the total count."""
    q = (f or AuditFilter(action=action, actor=actor, source=source)).query()
    total = db.session.scalar(select(func.count()).select_from(q.subquery()))
    rows = db.session.scalars(q.order_by(AuditLog.id.desc())
                              .limit(per_page).offset((page - 1) * per_page)).all()
    return rows, total


def export_rows(f: AuditFilter, limit: int = 50_000) -> list[AuditLog]:
    """The rows `f` selects, newest first, at most `limit` (an export)."""
    return db.session.scalars(f.query().order_by(AuditLog.id.desc()).limit(limit)).all()
