"""Login throttling: back off per (account, address) and per address, shared by every process.

Failures are counted per (email, IP) pair, so someone guessing one account from many addresses
never locks its owner out from their own; and per IP across accounts, so one address can't try
many accounts. After `free` failures within LOOKBACK each further one doubles the wait, from
`base` up to `cap`. The counts live in Redis when REDIS_URL is set, else in the database (the
login_failures table); either way every worker and instance sees the same ones. `forget()`
clears an account (the CLI's password reset and unlock).
"""
from __future__ import annotations

import hashlib
import logging
import math
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from flask import Flask, current_app
from sqlalchemy import delete, func, select

from gateway.extensions import db
from gateway.models import LoginFailure, utcnow

log = logging.getLogger("gateway.auth")
LOOKBACK = timedelta(hours=1)       # failures older than this are forgotten


@dataclass(frozen=True, slots=True)
class Rule:
    free: int               # failures allowed within LOOKBACK before any wait
    base: timedelta         # the first wait; each further failure doubles it
    cap: timedelta

    def wait(self, count: int, last: datetime | None, now: datetime) -> float:
        """Seconds until the next try is allowed, 0 when it is allowed now."""
        if last is None or count < self.free:
            return 0.0
        delay = min(self.cap, self.base * 2 ** min(count - self.free, 16))
        return max(0.0, (last + delay - now).total_seconds())


PER_PAIR = Rule(5, timedelta(minutes=1), timedelta(minutes=15))     # one account from one address
PER_IP = Rule(20, timedelta(minutes=1), timedelta(minutes=15))      # one address, any accounts


def retry_after(email: str, ip: str, now: datetime | None = None) -> int:
    """Whole seconds this email must wait before trying again from this address; 0: try now."""
    now = now or utcnow()
    pair, by_ip = _store().recent(email, ip, now - LOOKBACK)
    return math.ceil(max(PER_PAIR.wait(*pair, now), PER_IP.wait(*by_ip, now)))


def failed(email: str, ip: str, now: datetime | None = None) -> None:
    """Count a failed login."""
    _store().add(email[:255], ip[:64], now or utcnow())


def succeeded(email: str, ip: str) -> None:
    """Clear this pair's failures (not the address's: logging into one's own account between
    guesses must not reset them)."""
    _store().clear(email, ip)


def forget(email: str) -> None:
    """Clear every failure naming this account, from any address."""
    _store().clear(email, None)


class DbFailures:
    """One row per failure; the lookups use the (email, at) and (ip, at) indexes."""

    def recent(self, email: str, ip: str, since: datetime):
        f = LoginFailure
        q = select(func.count(), func.max(f.at)).where(f.at > since)
        pair = db.session.execute(q.where(f.email == email, f.ip == ip)).one()
        by_ip = db.session.execute(q.where(f.ip == ip)).one()
        return tuple(pair), tuple(by_ip)

    def add(self, email: str, ip: str, at: datetime) -> None:
        db.session.add(LoginFailure(email=email, ip=ip, at=at))
        db.session.execute(delete(LoginFailure).where(LoginFailure.at < at - LOOKBACK))
        db.session.commit()

    def clear(self, email: str, ip: str | None) -> None:
        q = delete(LoginFailure).where(LoginFailure.email == email)
        db.session.execute(q if ip is None else q.where(LoginFailure.ip == ip))
        db.session.commit()


class RedisFailures:
    """A sorted set of failure times per pair and per address, expiring after LOOKBACK. While
    Redis is unreachable the database counts instead (logged once per outage)."""

    def __init__(self, url: str, prefix: str):
        import redis
        self.r = redis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
        self.prefix = prefix
        self.fallback = DbFailures()
        self.down = False

    def _pair(self, email: str, ip: str) -> str:
        # Hashed: the key needs no real address book of emails, and stays short.
        return f"{self.prefix}pair:{hashlib.sha256(email.encode()).hexdigest()[:32]}:{ip}"

    def _ip(self, ip: str) -> str:
        return f"{self.prefix}ip:{ip}"

    def _run(self, work, fallback):
        try:
            result = work()
        except Exception:       # noqa: BLE001 - Redis down: count in the database meanwhile
            if not self.down:
                log.warning("Redis unreachable: login failures are counted in the database", exc_info=True)
            self.down = True
            return fallback()
        if self.down:
            log.warning("Redis is back: login failures are counted there again")
        self.down = False
        return result

    def recent(self, email: str, ip: str, since: datetime):
        def work():
            floor = _epoch(since)
            p = self.r.pipeline()
            for k in (self._pair(email, ip), self._ip(ip)):
                p.zremrangebyscore(k, "-inf", floor)
                p.zcard(k)
                p.zrange(k, -1, -1, withscores=True)
            out = p.execute()
            return tuple((n, _from_epoch(last[0][1]) if last else None)
                         for n, last in ((out[1], out[2]), (out[4], out[5])))
        return self._run(work, lambda: self.fallback.recent(email, ip, since))

    def add(self, email: str, ip: str, at: datetime) -> None:
        def work():
            score, member = _epoch(at), f"{_epoch(at)}:{secrets.token_hex(4)}"
            p = self.r.pipeline()
            for k in (self._pair(email, ip), self._ip(ip)):
                p.zadd(k, {member: score})
                p.expire(k, int(LOOKBACK.total_seconds()))
            p.execute()
        self._run(work, lambda: self.fallback.add(email, ip, at))

    def clear(self, email: str, ip: str | None) -> None:
        def work():
            if ip is not None:
                self.r.delete(self._pair(email, ip))
                return
            for k in self.r.scan_iter(match=self._pair(email, "*"), count=500):
                self.r.delete(k)
        self._run(work, lambda: None)
        self.fallback.clear(email, ip)      # what was counted there during an outage


def _epoch(t: datetime) -> float:
    return (t - datetime(1970, 1, 1)).total_seconds()


def _from_epoch(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, timezone.utc).replace(tzinfo=None)


def build(app: Flask) -> DbFailures | RedisFailures:
    """This process's store of failures (services.init_app keeps it)."""
    c = app.config
    return RedisFailures(c["REDIS_URL"], c["LOGIN_THROTTLE_REDIS_PREFIX"]) if c["REDIS_URL"] else DbFailures()


def _store() -> DbFailures | RedisFailures:
    return current_app.extensions["login_failures"]
