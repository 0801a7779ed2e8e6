"""Which keys a console user may see, and the keys list: search and 30-day spend."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import func, or_, select
from sqlalchemy.orm import selectinload

from gateway.extensions import db
from gateway.models import ApiKey, UsageRecord, utcnow


@dataclass(frozen=True, slots=True)
class Owner:
    """A member's reach in the console: their own keys and their team's. Admins and viewers
    see every key; callers pass None for them."""
    user_id: int
    team_id: int | None = None


def _visible(q, owner: Owner | None):
    if owner is None:
        return q
    mine = [ApiKey.user_id == owner.user_id]
    if owner.team_id is not None:
        mine.append(ApiKey.team_id == owner.team_id)
    return q.where(or_(*mine))


def find_visible(key_id: int, owner: Owner | None) -> ApiKey | None:
    """The key, if `owner` may see it."""
    return db.session.scalar(_visible(select(ApiKey).where(ApiKey.id == key_id), owner))


def visible(owner: Owner | None, ids: list[int] | None = None, limit: int = 500) -> list[ApiKey]:
    """The keys `owner` may see (of `ids`, when given), by name."""
    q = select(ApiKey) if ids is None else select(ApiKey).where(ApiKey.id.in_(ids))
    return db.session.scalars(_visible(q, owner).order_by(ApiKey.name).limit(limit)).all()


def visible_ids(owner: Owner | None) -> tuple[int, ...] | None:
    """Ids of the keys `owner` may see; None when that is every key."""
    return None if owner is None else tuple(db.session.scalars(_visible(select(ApiKey.id), owner)))


# What the keys list shows of each key's owner and team: loaded for the page in one query each,
# not one per row (46 statements for a page of 50 keys before).
LIST_LOADS = (selectinload(ApiKey.user), selectinload(ApiKey.team))


def search(owner: Owner | None, text: str = "", state: str = "", page: int = 1,
           per_page: int = 50) -> tuple[list[ApiKey], bool]:
    """A page of the keys `owner` may see, newest first, and whether more follow. `text` matches
    the name or the start of the prefix; `state` is "active", "revoked" or "" for both."""
    q = _visible(select(ApiKey), owner)
    if text:
        q = q.where(ApiKey.name.contains(text) | ApiKey.prefix.startswith(text))
    if state in ("active", "revoked"):
        q = q.where(ApiKey.revoked_at.is_(None) if state == "active" else ApiKey.revoked_at.is_not(None))
    rows = db.session.scalars(q.order_by(ApiKey.id.desc()).limit(per_page + 1).offset((page - 1) * per_page)
                              .options(*LIST_LOADS)).all()
    return rows[:per_page], len(rows) > per_page


def spend_30d(ids: list[int]) -> dict[int, tuple[int, float]]:
    """key id -> (requests, USD) over the last 30 days."""
    if not ids:
        return {}
    r = UsageRecord
    rows = db.session.execute(select(r.key_id, func.count(), func.coalesce(func.sum(r.cost_usd), 0.0))
                              .where(r.key_id.in_(ids), r.created_at >= utcnow() - timedelta(days=30))
                              .group_by(r.key_id)).all()
    return {k: (n, float(c)) for k, n, c in rows}
