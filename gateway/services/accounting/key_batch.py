"""One change applied to many keys: enable, disable, delete, extend the expiry, set a token
quota or budget, assign a policy or a team. Each key goes through keys.update_key (so a
member stays within each key's ceiling); a key the change can't apply to is skipped, with why."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from gateway.errors import InvalidRequest
from gateway.extensions import db
from gateway.models import ApiKey, utcnow
from gateway.services.accounting import key_ceiling, keys

ACTIONS = ("enable", "disable", "delete", "extend", "quota", "policy", "team")
ADMIN_ONLY = ("policy", "team")     # the key form shows these to admins only, too
MAX_DAYS = 3650


@dataclass(frozen=True, slots=True)
class Change:
    """What a batch does, checked: the action and its parameters."""
    action: str
    days: int | None = None                 # extend: by this many days ...
    until: datetime | None = None           # ... or to this date
    token_quota: int | None = None          # quota: either or both
    budget_usd: float | None = None
    policy: str | None = None               # policy: None clears it
    team_id: int | None = None              # team: None clears it

    def details(self) -> dict:
        """The parameters, for the audit row."""
        keep = {"extend": ("days", "until"), "quota": ("token_quota", "budget_usd"),
                "policy": ("policy",), "team": ("team_id",)}.get(self.action, ())
        return {name: getattr(self, name) for name in keep if getattr(self, name) is not None or
                self.action in ("policy", "team")}


@dataclass
class Result:
    action: str
    done: list[str] = field(default_factory=list)           # prefixes of the keys changed
    skipped: dict[str, str] = field(default_factory=dict)   # prefix -> why not


def change(action: str, *, days: int | None = None, until: datetime | None = None,
           token_quota: int | None = None, budget_usd: float | None = None, policy: str | None = None,
           team_id: int | None = None, admin: bool = True, now: datetime | None = None) -> Change:
    """The checked Change, or InvalidRequest naming the field at fault."""
    if action not in ACTIONS:
        raise InvalidRequest(f"Unknown batch action '{action}'.", param="action")
    if action in ADMIN_ONLY and not admin:
        raise InvalidRequest(f"Only an admin can assign a {action} to keys.", param=action)
    if action == "extend":
        if (days is None) == (until is None):
            raise InvalidRequest("Extend by a number of days or to a date (one of them).", param="days")
        if days is not None and not 1 <= days <= MAX_DAYS:
            raise InvalidRequest(f"Extend by 1 to {MAX_DAYS} days.", param="days")
        if until is not None and until <= (now or utcnow()):
            raise InvalidRequest(f"{until:%Y-%m-%d} is in the past; choose a later date.", param="until")
    if action == "quota":
        if token_quota is None and budget_usd is None:
            raise InvalidRequest("Give a token quota, a budget, or both.", param="token_quota")
        if token_quota is not None and token_quota < 0:
            raise InvalidRequest("The token quota must be 0 or more.", param="token_quota")
        if budget_usd is not None and budget_usd < 0:
            raise InvalidRequest("The budget must not be negative.", param="budget_usd")
    return Change(action, days=days, until=until, token_quota=token_quota, budget_usd=budget_usd,
                  policy=policy or None, team_id=team_id)


def _settings(key: ApiKey, c: Change, now: datetime) -> dict:
    """What update_key gets for `key`; InvalidRequest when the change does not apply to it."""
    if c.action in ("enable", "disable"):
        return {"enabled": c.action == "enable"}
    if c.action == "extend":
        if key.expires_at is None:
            raise InvalidRequest("it never expires")
        new = c.until if c.until is not None else max(key.expires_at, now) + timedelta(days=c.days)
        if new <= key.expires_at:
            raise InvalidRequest(f"it already expires later ({key.expires_at:%Y-%m-%d})")
        return {"expires_at": new}
    if c.action == "quota":
        return {name: getattr(c, name) for name in ("token_quota", "budget_usd") if getattr(c, name) is not None}
    if c.action == "policy":
        return {"policy": c.policy}
    return {"team_id": c.team_id}


def run(targets: list[ApiKey], c: Change, ceiling_for: Callable[[ApiKey], key_ceiling.Ceiling | None],
        now: datetime | None = None) -> Result:
    """Apply `c` to each of `targets`; `ceiling_for(key)` bounds a member's edit (None: an admin)."""
    now = now or utcnow()
    result = Result(c.action)
    for key in targets:
        prefix = key.prefix
        if key.revoked_at is not None and c.action != "delete":
            result.skipped[prefix] = "it is revoked"
            continue
        try:
            if c.action == "delete":
                keys.delete_key(key)
            else:
                keys.update_key(key, ceiling=ceiling_for(key), **_settings(key, c, now))
        except InvalidRequest as e:
            db.session.rollback()
            result.skipped[prefix] = e.message
            continue
        result.done.append(prefix)
    return result
