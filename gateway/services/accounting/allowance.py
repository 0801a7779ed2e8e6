"""How long a request's answer may be: what its quotas and budgets have left, and the body that
tells the upstream so.

A key with 50 tokens left can still ask something short: it reserves what is left, and the
upstream is told to stop there (max_tokens), instead of the request being refused for the
4,096 tokens it might otherwise have used. Rate limits are not shrunk into: they pass with time.
"""
from __future__ import annotations

from gateway.services.accounting import pricing
from gateway.services.accounting.limits import Counter

_EMPTY = Counter("", 0, 0, 0.0, 0.0, 0, 0)
FIELDS = ("max_completion_tokens", "max_tokens")


def prices(plan) -> list[tuple[float, float]]:
    """(input, output) USD per 1K tokens of every priced deployment the plan may use."""
    out = []
    for route in plan.routes:
        price = route.price()
        if price:
            out.append((price[0] or 0.0, price[1] or 0.0))
    return out


def media_worst(plan) -> float:
    """USD of a media request's worst-case units (plan.need.units) at the dearest deployment."""
    units = plan.need.units
    return max((pricing.unit_cost(route.unit_price_of(), units.count, units.unit) for route in plan.routes),
               default=0.0)


def worst(prompt: int, completion: int, costs: list[tuple[float, float]]) -> tuple[int, float]:
    """Tokens and USD of a request of this size at the dearest deployment."""
    usd = max(((prompt * i + completion * o) / 1000.0 for i, o in costs), default=0.0)
    return prompt + completion, usd


def fit(limits, counters: dict[str, Counter], prompt: int, n: int,
        costs: list[tuple[float, float]], want: int) -> int:
    """The most answer tokens per choice, at most `want`, that every quota and budget in `limits`
    still has room for, given `counters`; under 1 when not even one token fits."""
    best = want
    for x in limits:
        if x.rate:
            continue
        c = counters.get(x.scope) or _EMPTY
        if x.tokens is not None:
            best = min(best, (x.tokens - c.used_tokens - c.reserved_tokens - prompt) // n)
        if x.usd is not None:
            room = x.usd - c.used_usd - c.reserved_usd
            for i, o in costs:
                left = room - prompt * i / 1000.0
                if left < 0:
                    return 0
                if o > 0:
                    best = min(best, int(left * 1000.0 / o) // n)
    return best


def capped_body(body: dict, field: str, cap: int) -> dict | None:
    """`body` with its answer capped at `cap` tokens per choice, in the fields it uses (else in
    `field`); None when it asks for no more than that already."""
    out = dict(body)
    for name in [f for f in FIELDS if f in body] or [field]:
        v = body.get(name)
        valid = isinstance(v, int) and not isinstance(v, bool) and v > 0
        out[name] = min(v, cap) if valid else cap
    return None if out == body else out

