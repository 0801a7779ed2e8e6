"""Virtual API keys: issue, hash, look up (cached in key_cache.py), edit, rotate, revoke."""
from __future__ import annotations

import hashlib
import ipaddress
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy import or_, select

from gateway.errors import AuthenticationFailed, InvalidRequest, PermissionDenied
from gateway.extensions import db
from gateway.models import ApiKey, Plan, Team, utcnow
from gateway.services.accounting import key_cache, key_ceiling
from gateway.services.accounting.periods import zone
from gateway.services.accounting.redaction import check_mode

KEY_PREFIX = "sk-gw-"
PREFIX_LEN = 14     # "sk-gw-" + 8 characters: enough to tell keys apart, useless to an attacker
PERIODS = ("total", "day", "week", "month")

IPNet = ipaddress.IPv4Network | ipaddress.IPv6Network


def label(key: ApiKey) -> str:
    """How a key is named to people: its name and visible prefix, never more of the secret."""
    return f"{key.name} ({key.prefix}…)"


def hash_secret(secret: str) -> str:
    """SHA-256 is right here: the secret is 256 random bits, so no KDF is needed to slow guessing."""
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """What the hot path needs to know about a key, detached from any session. Limits are the
    effective ones: the key's own, else its plan's."""
    id: int
    name: str
    prefix: str
    user_id: int | None
    models: frozenset[str] | None
    expires_at: datetime | None
    revoked: bool
    enabled: bool = True
    team_id: int | None = None
    token_quota: int | None = None
    quota_period: str = "total"
    quota_tz: str = "UTC"
    budget_usd: float | None = None
    rpm: int | None = None
    tpm: int | None = None
    max_parallel: int | None = None
    policy: str | None = None
    ip_allow: tuple[IPNet, ...] | None = None
    team_budget_usd: float | None = None
    team_period: str = "month"
    team_tz: str = "UTC"
    plan_id: int | None = None
    plan_budget_usd: float | None = None    # the plan-wide cap shared by every key on the plan
    plan_period: str = "month"
    plan_tz: str = "UTC"
    valid_until: datetime | None = None     # set when this is a rotated-out secret in its grace
    redact: str | None = None               # the key's own redaction mode; None: the default
    cache_ttl: int | None = None            # response cache seconds; None: the policy's, else off
    valid_from: datetime | None = None      # refused before this moment; None: valid at once

    def allows(self, model: str) -> bool:
        return self.models is None or model in self.models

    def check_model(self, model: str) -> None:
        if not self.allows(model):
            raise PermissionDenied(f"This API key may not use the model '{model}'.", param="model")

    @property
    def limited(self) -> bool:
        """Whether admit() has anything to reserve or count for this key."""
        return any(v is not None for v in (self.token_quota, self.budget_usd, self.rpm, self.tpm,
                                           self.max_parallel, self.team_budget_usd,
                                           self.plan_budget_usd))

    def allows_ip(self, addr: str | None) -> bool:
        if self.ip_allow is None:
            return True
        try:
            ip = ipaddress.ip_address((addr or "").strip())
        except ValueError:
            return False
        if ip.version == 6 and ip.ipv4_mapped:
            ip = ip.ipv4_mapped
        return any(ip.version == net.version and ip in net for net in self.ip_allow)


def parse_networks(values) -> list[str] | None:
    """Normalise an IP allowlist ("10.0.0.0/8, 203.0.113.7"); InvalidRequest on a bad entry."""
    if values is None:
        return None
    if isinstance(values, str):
        values = [v for v in values.replace(" ", ",").split(",") if v]
    out = []
    for v in values:
        try:
            out.append(str(ipaddress.ip_network(str(v).strip(), strict=False)))
        except ValueError:
            raise InvalidRequest(f"'{v}' is not an IP address or CIDR range.", param="ip_allow") from None
    return out or None


def _pick(own, plan_value):
    return own if own is not None else plan_value


def info(key: ApiKey, valid_until: datetime | None = None) -> KeyInfo:
    plan: Plan | None = key.plan
    team: Team | None = key.team
    models = key.models if key.models is not None else (plan.models if plan else None)
    period = key.quota_period or "total"
    if plan and key.token_quota is None and key.budget_usd is None and (plan.token_quota or plan.budget_usd):
        period = plan.quota_period or period
    nets = tuple(ipaddress.ip_network(n, strict=False) for n in key.ip_allow) if key.ip_allow else None
    return KeyInfo(
        key.id, key.name, key.prefix, key.user_id,
        frozenset(models) if models is not None else None,
        key.expires_at, key.revoked_at is not None,
        enabled=key.enabled is not False, team_id=key.team_id,
        token_quota=_pick(key.token_quota, plan.token_quota if plan else None),
        quota_period=period, quota_tz=key.quota_tz or "UTC",
        budget_usd=_pick(key.budget_usd, plan.budget_usd if plan else None),
        rpm=_pick(key.rpm, plan.rpm if plan else None),
        tpm=_pick(key.tpm, plan.tpm if plan else None),
        max_parallel=_pick(key.max_parallel, plan.max_parallel if plan else None),
        policy=key.policy or None, ip_allow=nets,
        team_budget_usd=team.budget_usd if team else None,
        team_period=team.budget_period if team else "month",
        team_tz=team.timezone if team else "UTC",
        plan_id=key.plan_id, plan_budget_usd=plan.pool_budget_usd if plan else None,
        plan_period=(plan.pool_period or "month") if plan else "month",
        plan_tz=(plan.pool_timezone or "UTC") if plan else "UTC",
        valid_until=valid_until, redact=key.redact, cache_ttl=key.cache_ttl,
        valid_from=key.valid_from)


# Settings update_key() accepts, with the column each one sets.
SETTINGS = ("name", "models", "expires_at", "user_id", "team_id", "plan_id", "enabled", "token_quota",
            "quota_period", "quota_tz", "budget_usd", "rpm", "tpm", "max_parallel", "policy", "ip_allow",
            "redact", "cache_ttl", "valid_from")


def _check_dates(s: dict, key: ApiKey | None, now: datetime) -> dict[str, str]:
    """An expiry must be in the future (one already stored may stay: editing an expired key's
    name is fine) and after the valid-from date, the key's stored one when not given."""
    errors = {}
    expires = s.get("expires_at", key.expires_at if key is not None else None)
    starts = s.get("valid_from", key.valid_from if key is not None else None)
    if s.get("expires_at") is not None and s["expires_at"] <= now and (
            key is None or key.expires_at != s["expires_at"]):
        errors["expires_at"] = f"The expiry {s['expires_at']:%Y-%m-%d %H:%M} is in the past; choose a later date."
    elif expires is not None and starts is not None and starts >= expires:
        field = "valid_from" if "valid_from" in s else "expires_at"
        errors[field] = (f"The key would expire ({expires:%Y-%m-%d %H:%M}) before it becomes valid "
                         f"({starts:%Y-%m-%d %H:%M}); the valid-from date must come first.")
    return errors


def check(settings: dict, ceiling: key_ceiling.Ceiling | None = None, key: ApiKey | None = None,
          now: datetime | None = None) -> tuple[dict, dict[str, str]]:
    """The settings as stored, and field -> message for every invalid one (a form shows them all).
    With a ceiling (the editor is a member) nothing may widen the key past it; `key` is the
    key being edited (None: a new one), whose stored dates the new ones are checked against."""
    unknown = set(settings) - set(SETTINGS)
    if unknown:
        raise InvalidRequest(f"Unknown key setting(s): {', '.join(sorted(unknown))}.")
    s = dict(settings)
    errors = {name: f"{name} must be a date and time." for name in ("expires_at", "valid_from")
              if s.get(name) is not None and not isinstance(s[name], datetime)}
    if "quota_period" in s and s["quota_period"] not in PERIODS:
        errors["quota_period"] = f"quota_period must be one of {', '.join(PERIODS)}."
    if s.get("quota_tz"):
        try:
            zone(s["quota_tz"])
        except InvalidRequest as e:
            errors["quota_tz"] = e.message
    for name in ("token_quota", "rpm", "tpm", "max_parallel", "cache_ttl"):
        v = s.get(name)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 0):
            errors[name] = f"{name} must be a whole number of at least 0."
    if s.get("budget_usd") is not None and float(s["budget_usd"]) < 0:
        errors["budget_usd"] = "budget_usd must not be negative."
    if "ip_allow" in s:
        try:
            s["ip_allow"] = parse_networks(s["ip_allow"])
        except InvalidRequest as e:
            errors["ip_allow"] = e.message
    if "models" in s and s["models"] is not None:
        s["models"] = sorted({m.strip() for m in s["models"] if m and m.strip()}) or None
    if problem := check_mode(s.get("redact")):
        errors["redact"] = problem
    if "name" in s and not (s["name"] or "").strip():
        errors["name"] = "A key needs a name."
    if ceiling is not None:     # only fields that are valid so far can be compared
        narrowed, wider = key_ceiling.narrow({k: v for k, v in s.items() if k not in errors}, ceiling)
        s.update(narrowed)
        errors = {**wider, **errors}
    # after the ceiling filled in what a member left empty: those dates must hold together too
    dates = _check_dates({k: v for k, v in s.items() if k not in errors}, key, now or utcnow())
    return s, {**errors, **{k: v for k, v in dates.items() if k not in errors}}


def _validate(settings: dict, ceiling: key_ceiling.Ceiling | None, key: ApiKey | None = None) -> dict:
    s, errors = check(settings, ceiling, key)
    if errors:
        name, message = next(iter(errors.items()))
        raise InvalidRequest(message, param=name)
    return s


def create_key(name: str, *, models: list[str] | None = None, expires_at: datetime | None = None,
               user_id: int | None = None, ceiling: key_ceiling.Ceiling | None = None,
               **settings) -> tuple[ApiKey, str]:
    """Make a key; the secret is returned once and never stored. Without a ceiling an admin
    makes it and its limits become its admin-set ones; a member passes theirs (key_ceiling)."""
    s = _validate(dict(settings, name=name, models=models, expires_at=expires_at, user_id=user_id), ceiling)
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey(prefix=secret[:PREFIX_LEN], key_hash=hash_secret(secret), **s,
                 admin_limits={} if ceiling is not None else key_ceiling.admin_set(s))
    db.session.add(key)
    db.session.commit()
    return key, secret


def update_key(key: ApiKey, *, ceiling: key_ceiling.Ceiling | None = None, **settings) -> ApiKey:
    """Edit a key's settings in place; the secret stays the same. A member passes the key's
    ceiling; an admin's edit (no ceiling) moves the ceiling with it."""
    s = _validate(settings, ceiling, key)
    admin_limits = key.admin_limits if key.admin_limits is not None else key_ceiling.snapshot(key)
    for name, value in s.items():
        setattr(key, name, value)
    key.admin_limits = admin_limits if ceiling is not None else {**admin_limits, **key_ceiling.admin_set(s)}
    db.session.commit()
    _forget(key)
    return key


def rotate_key(key: ApiKey, grace_seconds: float = 86400, now: datetime | None = None) -> tuple[ApiKey, str]:
    """A new secret with the same settings and counters; the old one works for grace_seconds."""
    now = now or utcnow()
    old = (key.key_hash, key.prev_key_hash)
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    key.prev_key_hash = key.key_hash if grace_seconds > 0 else None
    key.prev_valid_until = now + timedelta(seconds=grace_seconds) if grace_seconds > 0 else None
    key.key_hash = hash_secret(secret)
    key.prefix = secret[:PREFIX_LEN]
    key.rotated_at = now
    db.session.commit()
    _forget_hashes(*old)
    return key, secret


def revoke_key(key: ApiKey) -> None:
    key.revoked_at = key.revoked_at or utcnow()
    db.session.commit()
    _forget(key)


def delete_key(key: ApiKey) -> None:
    """Revoke first, so every cache drops the key before its row goes."""
    revoke_key(key)
    db.session.delete(key)
    db.session.commit()


def _forget(key: ApiKey) -> None:
    _forget_hashes(key.key_hash, key.prev_key_hash)


def _forget_hashes(*hashes: str | None) -> None:
    """Drop cached lookups here and, through Redis when set, in every other process."""
    c = cache()
    for h in hashes:
        if h:
            c.forget(h)
            if c.bus is not None:
                c.bus.publish(key_cache.INVALIDATE_CHANNEL, h)


def find_by_prefix(prefix: str) -> ApiKey:
    """The one key whose visible prefix is `prefix` (a trailing … is ignored)."""
    prefix = prefix.rstrip("….")
    found = db.session.scalars(select(ApiKey).where(ApiKey.prefix == prefix)).all()
    if len(found) != 1:
        raise InvalidRequest(f"{len(found)} keys have the prefix {prefix}.")
    return found[0]


def lookup(key_hash: str) -> KeyInfo | None:
    """The key a secret's hash belongs to, from the database (what the cache keeps)."""
    row = db.session.scalar(select(ApiKey).where(or_(ApiKey.key_hash == key_hash, ApiKey.prev_key_hash == key_hash)))
    if row is None:
        return None
    if row.key_hash == key_hash:
        return info(row)
    return info(row, valid_until=row.prev_valid_until or utcnow())     # rotated out: valid until its grace ends


def cache() -> key_cache.KeyCache:
    """This process's key cache (built by services.init_app)."""
    return current_app.extensions["key_cache"]


def authenticate(secret: str | None, ip: str | None = None, now: datetime | None = None) -> KeyInfo:
    """The KeyInfo for a presented secret used from `ip`, or AuthenticationFailed / PermissionDenied."""
    if not secret:
        raise AuthenticationFailed("You didn't provide an API key. Send it as 'Authorization: Bearer sk-...'.")
    if not secret.startswith(KEY_PREFIX) or len(secret) > 200:
        raise AuthenticationFailed("Incorrect API key provided.")
    found = cache().get(hash_secret(secret))
    if found is None:
        raise AuthenticationFailed("Incorrect API key provided.")
    if found.revoked:
        raise AuthenticationFailed("This API key has been revoked.", code="key_revoked")
    now = now or utcnow()
    if found.valid_until is not None and found.valid_until <= now:
        raise AuthenticationFailed("This API key was rotated and its grace period is over.",
                                   code="key_rotated")
    if not found.enabled:
        raise AuthenticationFailed("This API key is disabled.", code="key_disabled")
    if found.expires_at is not None and found.expires_at <= now:
        raise AuthenticationFailed("This API key has expired.", code="key_expired")
    if found.valid_from is not None and now < found.valid_from:
        raise AuthenticationFailed(f"This API key is not valid yet; it can be used from "
                                   f"{found.valid_from:%Y-%m-%d %H:%M} UTC.", code="key_not_yet_valid")
    if found.ip_allow is not None:
        if not found.allows_ip(ip):
            raise PermissionDenied("This API key may not be used from this IP address.",
                                   code="ip_not_allowed")
    return found
