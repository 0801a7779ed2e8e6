"""What a request reserves against: the counters (Limit) that apply to a key and its tags,
the reservation itself, and a counter's state after one. Shared by quota.py and counters.py."""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime

from flask import current_app
from sqlalchemy import select

from gateway.database import bounded_session
from gateway.extensions import db
from gateway.models import TagBudget, utcnow
from gateway.services.accounting import periods

log = logging.getLogger("gateway.quota")


@dataclass(frozen=True, slots=True)
class Limit:
    """One counter row a request reserves against, with the caps checked on it."""
    scope: str                  # key:7, key:7:m (per minute), key:7:p (in flight), team:2, plan:3, tag:k=v
    period_start: datetime
    period_end: datetime | None
    tokens: int | None = None
    usd: float | None = None
    requests: int | None = None
    inflight: int | None = None
    label: str = ""             # for messages: "token quota", "team budget", ...

    @property
    def rate(self) -> bool:
        return self.scope.endswith((":m", ":p"))

    @property
    def durable(self) -> bool:
        """Spend worth keeping in the database ledger (not per-minute or in-flight counts)."""
        return not self.rate


@dataclass
class Reservation:
    request_id: str
    key_id: int | None
    limits: tuple[Limit, ...]
    tokens: int
    usd: float
    created_at: datetime = field(default_factory=utcnow)
    settled: bool = False
    store: str = ""             # where it is held: "redis", or "db" (also while Redis is down)
    refused_by: Limit | None = None     # the limit a refused reservation did not fit (Redis says)

    @property
    def capped(self) -> bool:
        """Whether a quota or budget (not only a rate limit) applies: then the answer's length
        is capped at what was reserved for it."""
        return any(not x.rate and (x.tokens is not None or x.usd is not None) for x in self.limits)


@dataclass(frozen=True, slots=True)
class Counter:
    """A counter row's state right after a reservation."""
    scope: str
    used_tokens: int
    reserved_tokens: int
    used_usd: float
    reserved_usd: float
    requests: int
    inflight: int


def limits_for(key, tags: dict, now: datetime) -> list[Limit]:
    """Every counter a request by `key` carrying `tags` must fit in."""
    out: list[Limit] = []
    if key.token_quota is not None or key.budget_usd is not None:
        start, end = periods.bounds(key.quota_period, key.quota_tz, now)
        out.append(Limit(f"key:{key.id}", start, end, tokens=key.token_quota, usd=key.budget_usd,
                         label="quota"))
    if key.rpm is not None or key.tpm is not None:
        start, end = periods.minute(now)
        out.append(Limit(f"key:{key.id}:m", start, end, tokens=key.tpm, requests=key.rpm,
                         label="rate limit"))
    if key.max_parallel is not None:
        out.append(Limit(f"key:{key.id}:p", periods.EPOCH, None, inflight=key.max_parallel,
                         label="parallel request limit"))
    if key.team_id is not None and key.team_budget_usd is not None:
        start, end = periods.bounds(key.team_period, key.team_tz, now)
        out.append(Limit(f"team:{key.team_id}", start, end, usd=key.team_budget_usd, label="team budget"))
    if key.plan_id is not None and key.plan_budget_usd is not None:
        start, end = periods.bounds(key.plan_period, key.plan_tz, now)
        out.append(Limit(f"plan:{key.plan_id}", start, end, usd=key.plan_budget_usd, label="plan budget"))
    if tags:
        budgets = tag_budgets()
        for name, value in tags.items():
            b = budgets.get((name, value))
            if b is not None:
                start, end = periods.bounds(b[1], b[2], now)
                out.append(Limit(f"tag:{name}={value}", start, end, usd=b[0],
                                 label=f"budget for {name}={value}"))
    return out


class TagBudgetCache:
    """(tag, value) -> (budget_usd, period, tz), reloaded at most every ttl seconds."""

    def __init__(self, ttl: float):
        self.ttl = ttl
        self.loaded_at = float("-inf")
        self.budgets: dict[tuple[str, str], tuple[float, str, str]] = {}
        self.lock = threading.Lock()

    def get(self) -> dict[tuple[str, str], tuple[float, str, str]]:
        if time.monotonic() - self.loaded_at >= self.ttl:
            try:
                with bounded_session():
                    self.budgets = {(b.tag, b.value): (b.budget_usd, b.budget_period, b.timezone)
                                    for b in db.session.scalars(select(TagBudget))}
            except Exception:
                db.session.rollback()
                log.warning("tag budget reload failed", exc_info=True)
            finally:
                db.session.remove()
            self.loaded_at = time.monotonic()
        return self.budgets


def tag_budgets() -> dict:
    """(tag, value) -> budget, from this process's cache (built by services.init_app)."""
    return current_app.extensions["tag_budgets"].get()
