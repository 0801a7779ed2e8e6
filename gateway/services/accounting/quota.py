"""Limits checked before a request goes upstream, settled after.

The proxy calls admit() once a request is authenticated and planned, and the usage recorder
calls settle() exactly once per admitted request, with the final usage entry, however the
request ended.

admit() reserves the request's worst case (estimated prompt tokens + max_tokens, at the price
of the dearest deployment its plan may use) against every limit that applies, in one guarded
statement: `used + reserved + estimate <= cap` on every counter row, or nothing. When a quota or
budget has less left than that, it reserves what is left and caps the answer there
(allowance.py). settle() turns the reservation into the real usage (or releases it), once per
request id; one that fails is tried again in the background (settle_retry.py). With REDIS_URL
set the counters live in Redis (redis_counters.RedisCounters), shared by every process.
A database that is locked or down makes admit() answer 503 within DB_LOCK_TIMEOUT.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from flask import Flask, current_app, has_app_context

from gateway.database import UNAVAILABLE, DatabaseBusy
from gateway.errors import QuotaExceeded, RateLimited, ServiceUnavailable
from gateway.formatting import money
from gateway.models import utcnow
from gateway.services.accounting import alerts, allowance
from gateway.services.accounting.limits import Counter, Limit, Reservation, limits_for, tag_budgets

log = logging.getLogger("gateway.quota")


@dataclass(frozen=True)
class Admission:
    """What admit() decided: the key the request runs as, its reservation (None when no limit
    applies), the x-ratelimit-* headers for the response, and the body to send upstream when
    admission capped the answer's length (None: the request's own body)."""
    key: object | None
    reservation: Reservation | None = None
    rate_headers: dict = field(default_factory=dict)
    body: dict | None = None


def _wanted(req, plan) -> int:
    """Answer tokens per choice the request may use: its max_tokens, else the default."""
    if req.mode != "chat":      # Messages and other dialects served by chat deployments too
        return 0
    return plan.need.max_output or current_app.config["QUOTA_DEFAULT_MAX_TOKENS"]


def estimate(req, plan) -> tuple[int, float]:
    """Worst-case (tokens, USD) of a request: the prompt estimate plus every answer token allowed,
    at the price of the dearest deployment in its plan (fallbacks, policy and A/B arms included)."""
    return _worst(plan, _wanted(req, plan), allowance.prices(plan))


def _worst(plan, want: int, costs) -> tuple[int, float]:
    """Tokens and USD to reserve; a media request (billed per image, second, ...) reserves
    no tokens, so token quotas never count it."""
    need = plan.need
    if getattr(need, "units", None) is not None:
        return 0, allowance.media_worst(plan)
    return allowance.worst(need.prompt_tokens, want * need.n, costs)


def backend(app: Flask):
    """The counter store: Redis when REDIS_URL is set, else the database."""
    return app.extensions["quota_backend"]


def spent(limits: list[Limit]) -> dict[str, float]:
    """USD settled on each counter in its period (reservations in flight not counted), for pages.
    With Redis, the larger of Redis's count and the database ledger's (Redis may not hold a
    counter no request has touched since it started)."""
    store = backend(current_app._get_current_object())
    now = store.current(Reservation("spent", None, tuple(limits), 0, 0.0))
    ledger = getattr(store, "db", None)
    durable = ledger.durable_used(limits) if ledger is not None and limits else {}
    return {x.scope: max(now[x.scope].used_usd if x.scope in now else 0.0,
                         durable.get((x.scope, x.period_start), (0, 0.0))[1]) for x in limits}


def admit(req, key, plan, now: datetime | None = None) -> Admission:
    """Reserve the worst case of `req` (planned as `plan`) against every limit of `key` and its
    tags, or raise QuotaExceeded / RateLimited."""
    if key is None or not key.limited and not (req.tags and tag_budgets()):
        return Admission(key)      # unlimited keys cost nothing here
    now = now or utcnow()
    limits = limits_for(key, req.tags, now)
    if not limits:
        return Admission(key)
    store = backend(current_app._get_current_object())
    try:
        res, counters, cap = _reserve(store, req, plan, key.id, tuple(limits), now)
    except UNAVAILABLE as e:     # a traceback for the failure, one line for what it skips
        log.warning("admission could not use the database: %s", e, exc_info=not isinstance(e, DatabaseBusy))
        raise ServiceUnavailable(
            "The gateway's database is busy or unreachable, so this key's limits cannot be checked "
            "now; retry shortly.", code="database_unavailable",
            retry_after=current_app.config["UNAVAILABLE_RETRY_AFTER"]) from None
    headers = rate_headers(key, limits, counters, now)
    body = allowance.capped_body(req.body, plan.output_field, cap) if cap else None
    if body is not None:
        headers["x-gateway-max-tokens"] = str(cap)
    return Admission(key, res, headers, body)


def _reserve(store, req, plan, key_id: int, limits: tuple[Limit, ...], now: datetime):
    """(reservation, counters after it, the answer's cap per choice or None). The worst case
    first; when a quota or budget cannot take it, what is left, re-read and tried again a few
    times under concurrency (the guarded reserve never lets two requests share the same room)."""
    need, want = plan.need, _wanted(req, plan)
    costs = allowance.prices(plan)
    res = Reservation(req.request_id, key_id, limits, *_worst(plan, want, costs), created_at=now)
    counters = store.reserve(res, now)
    answer = want
    shrink = want > 0 and res.capped
    for _ in range(3):
        if counters is not None or not shrink:
            break
        failed = store.diagnose(res, now)
        if failed is None or failed.rate:
            break       # a rate limit: waiting helps, a shorter answer does not
        answer = allowance.fit(limits, store.current(res), need.prompt_tokens, need.n, costs, answer)
        res.tokens, res.usd = allowance.worst(need.prompt_tokens, max(answer, 1) * need.n, costs)
        if answer < 1:
            break
        counters = store.reserve(res, now)
    if counters is None:
        failed = store.diagnose(res, now)
        if failed is not None and not failed.rate:
            _cap_alert(failed, res, store)
        raise refusal(failed, res, now, at_least=shrink)
    return res, counters, (answer if shrink else None)


def _cap_alert(failed: Limit, res: Reservation, store) -> None:
    # The cap refused this request: its 100% alert fires now (settled spend may never get there).
    try:
        alerts.cap_reached(current_app._get_current_object(), failed, res, lambda: store.current(res))
    except Exception:       # an alert never changes the answer
        log.warning("cap alert failed for %s", res.request_id, exc_info=True)


def refusal(failed: Limit | None, res: Reservation, now: datetime, at_least: bool = False) -> Exception:
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
        needs = f"{res.tokens} tokens" + (f" ({money(res.usd)})" if failed.usd is not None else "")
        if not res.tokens:      # a media request: priced per unit
            needs = money(res.usd)
        err = QuotaExceeded(f"You exceeded the {what} of this key: it allows {_limits_text(failed)}; "
                            f"this request needs {'at least' if at_least else 'up to'} {needs}.")
    if isinstance(err, QuotaExceeded):
        headers["x-should-retry"] = "false"     # a spent quota doesn't return in seconds: the SDKs' retries stop
    err.headers = headers
    return err


def _limits_text(limit: Limit) -> str:
    parts = []
    if limit.requests is not None:
        parts.append(f"{limit.requests} requests per minute")
    if limit.tokens is not None:
        parts.append(f"{limit.tokens} tokens" + (" per minute" if limit.rate else ""))
    if limit.usd is not None:
        parts.append(money(limit.usd))
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


def actual_of(entry) -> tuple[int, float]:
    """What a finished request costs: its tokens and USD; a failure that produced none is free."""
    # A failure before any answer carries no tokens and is released; a stream the client cut
    # carries what was streamed, and that is charged. A cached answer is free (its tokens are
    # recorded for reporting only).
    if getattr(entry, "cached", False):
        return 0, 0.0
    used = entry.total_tokens or (entry.prompt_tokens + entry.completion_tokens)
    return used, (entry.cost_usd or 0.0) if used or getattr(entry, "units", None) else 0.0


def settle(app: Flask, admission: Admission, entry, now: datetime | None = None) -> dict | None:
    """Turn the reservation into the real usage (or release it); the counters afterwards, for
    alerts. May run outside an app context (at the end of a stream), so it opens its own."""
    res = admission.reservation
    if res is None or res.settled:
        return None
    res.settled = True
    used_tokens, used_usd = actual_of(entry)
    now = now or utcnow()
    try:
        if has_app_context():
            return backend(app).settle(res, used_tokens, used_usd, now)
        with app.app_context():
            return backend(app).settle(res, used_tokens, used_usd, now)
    except Exception:
        # Never lose the request's record over this: the record is queued anyway, and the
        # settle is tried again until the database takes it.
        log.warning("quota settle failed for %s; trying again in the background", res.request_id,
                    exc_info=True)
        app.extensions["settle_retry"].add(res, used_tokens, used_usd, now)
        return None


def release_stale(app: Flask, older_than: timedelta | None = None, now: datetime | None = None) -> int:
    """Release reservations never settled (their process died); returns how many."""
    older_than = older_than or timedelta(seconds=app.config["QUOTA_RESERVATION_TTL"])
    return backend(app).release_stale((now or utcnow()) - older_than)


def reconcile(app: Flask, now: datetime | None = None) -> int:
    """Rebuild shared counters from the database ledger; returns how many were rewritten."""
    release_stale(app, now=now)
    return backend(app).reconcile(now or utcnow())
