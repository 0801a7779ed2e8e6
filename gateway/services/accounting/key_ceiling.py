"""What a member may set on a key: never more than an admin set on it, or than its plan allows.

"What an admin set" is stored: `ApiKey.admin_limits` holds the limit settings as an admin
(console or CLI) last saved them, and a member's edits never change it. So a member can narrow
a key and widen it again up to that ceiling, never past it. Where an admin set nothing, the
key's plan bounds it; a member's new key is on their team's plan, with no admin-set values yet.
A key from before admin_limits existed has its settings of that moment as its ceiling.

A field a member leaves empty takes the most they may have: the admin-set value, else nothing
of its own (so the plan's value applies at run time, as it does for admins' keys).
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from datetime import datetime

from gateway.formatting import money
from gateway.models import ApiKey, Plan

NUMBERS = ("token_quota", "budget_usd", "rpm", "tpm", "max_parallel")
FIELDS = ("models", "expires_at", "valid_from", "ip_allow", "quota_period", "enabled", *NUMBERS)
_PLAN_FIELDS = ("models", "quota_period", *NUMBERS)
_LABELS = {"token_quota": "{:,} tokens", "rpm": "{:,} requests a minute",
           "tpm": "{:,} tokens a minute", "max_parallel": "{:,} parallel requests"}


@dataclass(frozen=True, slots=True)
class Ceiling:
    """The widest settings a member may give one key."""
    admin: dict = field(default_factory=dict)   # admin-set values, JSON form (expiry as ISO text)
    plan: dict = field(default_factory=dict)    # the plan's values, inherited when the key has none

    def bound(self, name: str):
        """The tightest value of `name` a member must stay within; None: no bound."""
        value = self.admin.get(name)
        return value if value is not None or name not in _PLAN_FIELDS else self.plan.get(name)

    @property
    def expires_at(self) -> datetime | None:
        value = self.admin.get("expires_at")
        return datetime.fromisoformat(value) if value else None

    @property
    def valid_from(self) -> datetime | None:
        value = self.admin.get("valid_from")
        return datetime.fromisoformat(value) if value else None

    @property
    def period(self) -> str | None:
        """The quota period a member can't change: the one the bounding quota or budget counts in."""
        for source in (self.admin, self.plan):
            if source.get("token_quota") is not None or source.get("budget_usd") is not None:
                return source.get("quota_period") or "total"
        return None

    @property
    def may_enable(self) -> bool:
        return self.admin.get("enabled") is not False

    def hint(self, name: str) -> str:
        """The bound in words, for the form; "" when there is none."""
        value = self.bound(name)
        if value is None:
            return ""
        if name == "budget_usd":
            return money(value)
        if name in _LABELS:
            return _LABELS[name].format(value)
        return ", ".join(value) if isinstance(value, list) else str(value)


def for_key(key: ApiKey) -> Ceiling:
    """The ceiling of an existing key."""
    admin = key.admin_limits if key.admin_limits is not None else snapshot(key)
    return Ceiling(dict(admin), _plan_values(key.plan))


def for_new(plan: Plan | None) -> Ceiling:
    """The ceiling of a key a member makes on `plan` (their team's)."""
    return Ceiling({}, _plan_values(plan))


def snapshot(key: ApiKey) -> dict:
    """The key's limit settings as they are now, in admin_limits' form."""
    return admin_set({name: getattr(key, name) for name in FIELDS})


def admin_set(settings: dict) -> dict:
    """The limit settings among `settings`, JSON-safe, to merge into admin_limits."""
    out = {k: v for k, v in settings.items() if k in FIELDS}
    for name in ("expires_at", "valid_from"):
        if isinstance(out.get(name), datetime):
            out[name] = out[name].isoformat()
    return out


def narrow(settings: dict, ceiling: Ceiling) -> tuple[dict, dict[str, str]]:
    """A member's checked settings with empty fields filled from the ceiling, and field ->
    message for each one that would widen the key."""
    s, errors = dict(settings), {}
    if "models" in s:
        allowed = ceiling.bound("models")
        if s["models"] is None:
            s["models"] = ceiling.admin.get("models")
        elif allowed is not None and set(s["models"]) - set(allowed):
            errors["models"] = (f"An admin allowed only {', '.join(allowed)} for this key; "
                                f"{', '.join(sorted(set(s['models']) - set(allowed)))} is not among them.")
    if "expires_at" in s:
        latest = ceiling.expires_at
        if s["expires_at"] is None:
            s["expires_at"] = latest
        elif latest is not None and s["expires_at"] > latest:
            errors["expires_at"] = f"An admin set this key to expire on {latest:%Y-%m-%d}; choose that day or an earlier one."
    if "valid_from" in s:
        earliest = ceiling.valid_from
        if s["valid_from"] is None:
            s["valid_from"] = earliest
        elif earliest is not None and s["valid_from"] < earliest:
            errors["valid_from"] = f"An admin set this key to start on {earliest:%Y-%m-%d}; choose that day or a later one."
    if "ip_allow" in s:
        allowed = ceiling.admin.get("ip_allow")
        if s["ip_allow"] is None:
            s["ip_allow"] = allowed
        elif allowed:
            outside = [n for n in s["ip_allow"] if not _inside(n, allowed)]
            if outside:
                errors["ip_allow"] = (f"{', '.join(outside)} is outside the ranges an admin allowed "
                                      f"({', '.join(allowed)}).")
    for name in NUMBERS:
        if name not in s:
            continue
        most = ceiling.bound(name)
        if s[name] is None:
            s[name] = ceiling.admin.get(name)
        elif most is not None and s[name] > most:
            errors[name] = f"At most {ceiling.hint(name)}: the limit an admin set for this key."
    period = ceiling.period
    if period is not None and "quota_period" in s:
        if s["quota_period"] in (None, "", period):
            s["quota_period"] = period
        else:
            errors["quota_period"] = f"The period is {period}, as the admin-set quota counts."
    if s.get("enabled") is True and not ceiling.may_enable:
        errors["enabled"] = "An admin disabled this key; only an admin can enable it again."
    return s, errors


def _inside(net: str, allowed: list[str]) -> bool:
    n = ipaddress.ip_network(net, strict=False)
    return any(n.version == a.version and n.subnet_of(a)
               for a in (ipaddress.ip_network(x, strict=False) for x in allowed))


def _plan_values(plan: Plan | None) -> dict:
    return {name: getattr(plan, name) for name in _PLAN_FIELDS} if plan is not None else {}
