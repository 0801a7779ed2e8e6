"""Limits checked before a request goes upstream, settled after (issue: keys, quotas, budgets).

The proxy calls admit() once a request is authenticated and valid, and relay calls settle()
exactly once per admitted request, with the final usage entry, however the request ended.

admit() reserves the request's worst case (estimated prompt tokens + max_tokens, and that at
the most expensive deployment's price) against every limit that applies, in one guarded
statement: `used + reserved + estimate <= cap` on every counter row, or nothing. settle()
turns the reservation into the real usage (or releases it), once per request id. With
REDIS_URL set the counters live in Redis (ratelimit.RedisCounters), shared by every process.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from flask import Flask, current_app, has_app_context
from sqlalchemy import select

from gateway.errors import QuotaExceeded, RateLimited
from gateway.extensions import db
from gateway.models import TagBudget, utcnow
from gateway.services.accounting import periods, tokens
from gateway.services.accounting.usage import UsageEntry

log = logging.getLogger("gateway.quota")



@dataclass(frozen=True, slots=True)
class Limit:
    """One counter row a request reserves against, with the caps checked on it."""
    scope: str                  # key:7, key:7:m (per minute), key:7:p (in flight), team:2, tag:k=v
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
    app = current_app._get_current_object()
    if "tag_budgets" not in app.extensions:
        app.extensions["tag_budgets"] = TagBudgetCache(app.config["CATALOG_CACHE_SECONDS"])
    return app.extensions["tag_budgets"].get()


def estimate(call) -> tuple[int, float]:
    """Worst-case (tokens, USD) of a request: the prompt estimate plus every answer token allowed,
    at the price of the dearest deployment that may serve it."""
    body = call.body
    prompt = tokens.estimate_prompt(body)
    if call.endpoint == "chat":
        cap = current_app.config["QUOTA_DEFAULT_MAX_TOKENS"]
        out = body.get("max_completion_tokens") or body.get("max_tokens")
        if not isinstance(out, int) or isinstance(out, bool) or out <= 0:
            out = cap
        n = body.get("n") if isinstance(body.get("n"), int) and body.get("n", 1) > 1 else 1
        completion = out * n
    else:
        completion = 0
    usd = 0.0
    models = [m for m in [call.model, *(getattr(call, "fallbacks", None) or [])] if isinstance(m, str)]
    if models:
        from gateway.services.routing import plan
        mode = "chat" if call.endpoint == "chat" else "embedding"
        # Policies and aliases included: a `policy:cost-optimized` request reserves at the
        # price of the dearest deployment the policy may pick.
        for route in (r for m in models for r in plan.candidates(m, mode)):
            price = route.price()
            if price:
                usd = max(usd, (prompt * price[0] + completion * price[1]) / 1000.0)
    return prompt + completion, usd


def backend(app: Flask):
    """The counter store: Redis when REDIS_URL is set, else the database."""
    store = app.extensions.get("quota_backend")
    if store is None:
        url = app.config.get("REDIS_URL") or os.environ.get("REDIS_URL")
        if url:
            from gateway.services.accounting.counters import RedisCounters
            store = RedisCounters(app, url)
        else:
            from gateway.services.accounting.counters import DbCounters
            store = DbCounters(app)
        app.extensions["quota_backend"] = store
    return store


def admit(call, now: datetime | None = None) -> None:
    """Reserve the worst case against every limit that applies, or raise QuotaExceeded /
    RateLimited. May set call.reservation and call.rate_headers."""
    key = call.key
    if key is None:
        return
    if not key.limited and not (call.tags and tag_budgets()):
        return      # unlimited keys cost nothing here
    now = now or utcnow()
    limits = limits_for(key, call.tags, now)
    if not limits:
        return
    est_tokens, est_usd = estimate(call)
    res = Reservation(call.request_id, key.id, tuple(limits), est_tokens, est_usd, created_at=now)
    app = current_app._get_current_object()
    store = backend(app)
    counters = store.reserve(res, now)
    if counters is None:
        failed = store.diagnose(res, now)
        raise refusal(key, failed, res, now)
    call.reservation = res
    call.rate_headers = rate_headers(key, limits, counters, now)


def refusal(key, failed: Limit | None, res: Reservation, now: datetime) -> Exception:
    """The 429 for a reservation that did not fit."""
    headers = {}
    if failed is not None and failed.period_end is not None:
        wait = max(1, int((failed.period_end - now).total_seconds() + 0.999))
        headers["retry-after"] = str(wait)
    if failed is None:
        err = QuotaExceeded("The request does not fit in this key's remaining quota.")
    elif failed.scope.endswith(":p"):
        err = RateLimited(f"Too many parallel requests for this key (limit {failed.inflight}).")
        headers["retry-after"] = "1"
    elif failed.scope.endswith(":m"):
        err = RateLimited(f"Rate limit reached for this key: {_limits_text(failed)}. "
                          f"This request needs up to {res.tokens} tokens.")
    else:
        what = failed.label or "quota"
        err = QuotaExceeded(f"You exceeded the {what} of this key: it allows {_limits_text(failed)}; "
                            f"this request needs up to {res.tokens} tokens"
                            + (f" (${res.usd:.4f})" if failed.usd is not None else "") + ".")
    err.headers = headers
    return err


def _limits_text(limit: Limit) -> str:
    parts = []
    if limit.requests is not None:
        parts.append(f"{limit.requests} requests per minute")
    if limit.tokens is not None:
        parts.append(f"{limit.tokens} tokens" + (" per minute" if limit.rate else ""))
    if limit.usd is not None:
        parts.append(f"${limit.usd:g}")
    return " and ".join(parts) or "nothing"


def duration(seconds: float) -> str:
    """OpenAI's reset format: 20ms, 1s, 6m0s, 1h2m3s."""
    if seconds < 1:
        return f"{max(0, int(seconds * 1000))}ms"
    s = int(seconds + 0.999)
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    if h:
        return f"{h}h{m}m{s}s"
    return f"{m}m{s}s" if m else f"{s}s"


def rate_headers(key, limits: list[Limit], counters: dict[str, Counter], now: datetime) -> dict:
    """x-ratelimit-* like OpenAI's: the per-minute limits when set, else the token quota."""
    h: dict[str, str] = {}
    minute = next((x for x in limits if x.scope.endswith(":m")), None)
    quota = next((x for x in limits if x.scope == f"key:{key.id}"), None)
    if minute is not None and minute.requests is not None and minute.scope in counters:
        c = counters[minute.scope]
        h["x-ratelimit-limit-requests"] = str(minute.requests)
        h["x-ratelimit-remaining-requests"] = str(max(0, minute.requests - c.requests))
        h["x-ratelimit-reset-requests"] = duration((minute.period_end - now).total_seconds())
    tok = minute if minute is not None and minute.tokens is not None else (
        quota if quota is not None and quota.tokens is not None else None)
    if tok is not None and tok.scope in counters:
        c = counters[tok.scope]
        h["x-ratelimit-limit-tokens"] = str(tok.tokens)
        h["x-ratelimit-remaining-tokens"] = str(max(0, tok.tokens - c.used_tokens - c.reserved_tokens))
        if tok.period_end is not None:
            h["x-ratelimit-reset-tokens"] = duration((tok.period_end - now).total_seconds())
    return h


def actual_of(entry: UsageEntry) -> tuple[int, float]:
    """What a finished request costs: its tokens and USD; a failure that produced none is free."""
    # A failure before any answer carries no tokens and is released; a stream the client cut
    # carries what was streamed, and that is charged.
    used = entry.total_tokens or (entry.prompt_tokens + entry.completion_tokens)
    return used, (entry.cost_usd or 0.0) if used else 0.0


def settle(app: Flask, call, entry: UsageEntry, now: datetime | None = None) -> None:
    """Turn the reservation into the real usage (or release it). May run outside an app
    context (at the end of a stream), so it must open its own."""
    res: Reservation | None = call.reservation
    if res is None or res.settled:
        return
    res.settled = True
    used_tokens, used_usd = actual_of(entry)
    try:
        if has_app_context():
            _settle(app, res, used_tokens, used_usd, now)
        else:
            with app.app_context():
                _settle(app, res, used_tokens, used_usd, now)
    except Exception:
        # Never lose the request's record over this; the reconcile job repairs the counters.
        log.exception("quota settle failed for %s", res.request_id)


def _settle(app: Flask, res: Reservation, used_tokens: int, used_usd: float, now) -> None:
    counters = backend(app).settle(res, used_tokens, used_usd, now or utcnow())
    if counters:
        from gateway.services.accounting import alerts
        alerts.check(app, res, counters)


def release_stale(app: Flask, older_than: timedelta | None = None, now: datetime | None = None) -> int:
    """Release reservations never settled (their process died); returns how many."""
    older_than = older_than or timedelta(seconds=app.config["QUOTA_RESERVATION_TTL"])
    return backend(app).release_stale((now or utcnow()) - older_than)


def reconcile(app: Flask, now: datetime | None = None) -> int:
    """Rebuild shared counters from the database ledger; returns how many were rewritten."""
    release_stale(app, now=now)
    return backend(app).reconcile(now or utcnow())
