"""Which keys a console user may see, and the keys list: search and 30-day spend."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import selectinload

from gateway.extensions import db
from gateway.models import ApiKey, Plan, UsageRecord, utcnow

# A key's state, the first that holds: revoked, expired, disabled, not yet valid, active.
STATES = ("active", "disabled", "expired", "not-yet-valid", "revoked")


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


def state(key: ApiKey, now: datetime | None = None) -> str:
    """The one word for where `key` stands (one of STATES); keys.authenticate refuses all but active."""
    now = now or utcnow()
    if key.revoked_at:
        return "revoked"
    if key.expires_at and key.expires_at <= now:
        return "expired"
    if key.enabled is False:
        return "disabled"
    if key.valid_from and key.valid_from > now:
        return "not-yet-valid"
    return "active"


def _state_condition(name: str, now: datetime):
    """The SQL twin of state(): keys whose state is `name`."""
    live = ApiKey.revoked_at.is_(None)
    unexpired = or_(ApiKey.expires_at.is_(None), ApiKey.expires_at > now)
    enabled = ApiKey.enabled.is_not(False)
    started = or_(ApiKey.valid_from.is_(None), ApiKey.valid_from <= now)
    return {"revoked": ApiKey.revoked_at.is_not(None),
            "expired": and_(live, ApiKey.expires_at.is_not(None), ApiKey.expires_at <= now),
            "disabled": and_(live, unexpired, ApiKey.enabled.is_(False)),
            "not-yet-valid": and_(live, unexpired, enabled, ApiKey.valid_from > now),
            "active": and_(live, unexpired, enabled, started)}[name]


def search(owner: Owner | None, text: str = "", state: str = "", page: int = 1, per_page: int = 50, *,
           team_id: int | None = None, plan_id: int | None = None,
           now: datetime | None = None) -> tuple[list[ApiKey], bool]:
    """A page of the keys `owner` may see, newest first, and whether more follow. `text` matches
    the name or the start of the prefix; `state` is one of STATES or "" for any; team and plan
    narrow it further."""
    q = _visible(select(ApiKey), owner)
    if text:
        q = q.where(ApiKey.name.contains(text) | ApiKey.prefix.startswith(text))
    if state in STATES:
        q = q.where(_state_condition(state, now or utcnow()))
    if team_id is not None:
        q = q.where(ApiKey.team_id == team_id)
    if plan_id is not None:
        q = q.where(ApiKey.plan_id == plan_id)
    # the list shows each key's owner, team and plan (its limits): loaded with the page, not per row
    q = q.options(selectinload(ApiKey.user), selectinload(ApiKey.team), selectinload(ApiKey.plan))
    rows = db.session.scalars(q.order_by(ApiKey.id.desc()).limit(per_page + 1).offset((page - 1) * per_page)).all()
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


def plans() -> list[Plan]:
    """Every plan, by name: the keys list filters on them."""
    return db.session.scalars(select(Plan).order_by(Plan.name)).all()
