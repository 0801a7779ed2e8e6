"""Virtual API keys: issue, hash, look up (cached), revoke."""
from __future__ import annotations

import hashlib
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime

from flask import current_app
from sqlalchemy import select

from gateway.errors import AuthenticationFailed, PermissionDenied
from gateway.extensions import db
from gateway.models import ApiKey, utcnow

KEY_PREFIX = "sk-gw-"
PREFIX_LEN = 14     # "sk-gw-" + 8 characters: enough to tell keys apart, useless to an attacker


def hash_secret(secret: str) -> str:
    """SHA-256 is right here: the secret is 256 random bits, so no KDF is needed to slow guessing."""
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """What the hot path needs to know about a key, detached from any session."""
    id: int
    name: str
    prefix: str
    user_id: int | None
    models: frozenset[str] | None
    expires_at: datetime | None
    revoked: bool

    def allows(self, model: str) -> bool:
        return self.models is None or model in self.models

    def check_model(self, model: str) -> None:
        if not self.allows(model):
            raise PermissionDenied(f"This API key may not use the model '{model}'.", param="model")


def info(key: ApiKey) -> KeyInfo:
    return KeyInfo(key.id, key.name, key.prefix, key.user_id,
                   frozenset(key.models) if key.models is not None else None,
                   key.expires_at, key.revoked_at is not None)


def create_key(name: str, *, models: list[str] | None = None, expires_at: datetime | None = None,
               user_id: int | None = None) -> tuple[ApiKey, str]:
    """Make a key; the secret is returned once and never stored."""
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey(name=name, prefix=secret[:PREFIX_LEN], key_hash=hash_secret(secret),
                 models=models, expires_at=expires_at, user_id=user_id)
    db.session.add(key)
    db.session.commit()
    return key, secret


def revoke_key(key: ApiKey) -> None:
    key.revoked_at = key.revoked_at or utcnow()
    db.session.commit()
    cache().forget(key.key_hash)


class KeyCache:
    """hash -> (KeyInfo or None, fetched at). Short TTL: a revoke elsewhere lands within it."""

    def __init__(self, ttl: float, max_entries: int = 20_000):
        self.ttl = ttl
        self.max_entries = max_entries
        self.entries: dict[str, tuple[KeyInfo | None, float]] = {}
        self.lock = threading.Lock()

    def get(self, key_hash: str) -> KeyInfo | None:
        now = time.monotonic()
        hit = self.entries.get(key_hash)
        if hit and now - hit[1] < self.ttl:
            return hit[0]
        try:
            row = db.session.scalar(select(ApiKey).where(ApiKey.key_hash == key_hash))
            found = info(row) if row else None
        except Exception:
            db.session.rollback()
            if hit:     # database locked or down: keep serving what we knew
                current_app.logger.warning("key lookup failed; using cached entry", exc_info=True)
                return hit[0]
            raise
        finally:
            db.session.remove()
        with self.lock:
            if len(self.entries) >= self.max_entries:
                self.entries.clear()
            self.entries[key_hash] = (found, now)
        return found

    def forget(self, key_hash: str) -> None:
        self.entries.pop(key_hash, None)


def cache() -> KeyCache:
    app = current_app._get_current_object()
    if "key_cache" not in app.extensions:
        app.extensions["key_cache"] = KeyCache(app.config["KEY_CACHE_SECONDS"])
    return app.extensions["key_cache"]


def authenticate(secret: str | None) -> KeyInfo:
    """The KeyInfo for a presented secret, or AuthenticationFailed."""
    if not secret:
        raise AuthenticationFailed("You didn't provide an API key. Send it as 'Authorization: Bearer sk-...'.")
    if not secret.startswith(KEY_PREFIX) or len(secret) > 200:
        raise AuthenticationFailed("Incorrect API key provided.")
    found = cache().get(hash_secret(secret))
    if found is None:
        raise AuthenticationFailed("Incorrect API key provided.")
    if found.revoked:
        raise AuthenticationFailed("This API key has been revoked.", code="key_revoked")
    if found.expires_at is not None and found.expires_at <= utcnow():
        raise AuthenticationFailed("This API key has expired.", code="key_expired")
    return found
