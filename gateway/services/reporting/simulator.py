"""The policy simulator: recorded traffic replayed offline under another policy, price table or
alias target. What it would have cost, which deployments would have served it, and the
difference per model, team and tag.

The records are grouped in SQL first, only by what the replay reads (time bucket, endpoint,
requested model, the key's team and bound policy, served deployment, the tags asked for), so a
replay reads a few thousand rows, not the records. Routing is decided once per requested model,
bound policy and context-window fit (and per request size only under the cost strategy, whose
ranking depends on it) with the routing code's own pieces (policies.pool, plan.in_regions,
plan.tiers, plan.first_shares) on a copy of the catalog snapshot with the scenario applied,
and applied to every group it covers; the live catalogue is never touched and nothing is sent
upstream. Splits are expected shares
(a 70/30 weighted pool sends 0.7 and 0.3 of each group), so a replay is deterministic.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime

from sqlalchemy import and_, case, cast, func, literal, null, select, union_all
from sqlalchemy.types import NullType

from gateway.errors import GatewayError, InvalidRequest
from gateway.extensions import db
from gateway.models import ApiKey, Team, UsageRecord
from gateway.providers.base import Usage
from gateway.services.accounting import pricing
from gateway.services.api_request import MEDIA_MODES, MODES
from gateway.services.reporting.charts import bucket_expr, bucket_unit
from gateway.services.reporting.filters import UsageFilter, conditions
from gateway.services.reporting.simulator_input import parse_pairs, parse_prices, parse_weights  # noqa: F401
from gateway.services.routing.catalog import Route, Snapshot, catalog
from gateway.services.routing.plan import Need, first_shares, in_regions, tiers
from gateway.services.routing.policies import (BUILT_IN, POLICY_PREFIX, STRATEGIES, policy_named, pool, requestable,
                                               resolve)

EVERY_MODEL = "*"               # a scenario route for every requested model
AD_HOC = "(scenario)"           # the name an ad hoc policy gets in the snapshot copy
MAX_TAG_KEYS = 3
SPLIT_METHOD = ("expected shares: a weighted or A/B split sends each arm its share of every group "
                "of requests (70/30 of 10 requests: 7 and 3), not a random or hashed pick")


@dataclass(frozen=True)
class Scenario:
    """What to change: requested model -> policy (a name, or an ad hoc policy dict), prices
    per model (USD per 1K input, output), aliases pointed elsewhere."""
    routes: dict[str, str | dict] = field(default_factory=dict)
    prices: dict[str, tuple[float, float]] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not (self.routes or self.prices or self.aliases)


def apply(snap: Snapshot, scenario: Scenario) -> Snapshot:
    """A copy of `snap` with the scenario's prices, aliases and ad hoc policy; `snap` is untouched."""
    def priced(r: Route) -> Route:
        price = scenario.prices.get(r.target.model) or scenario.prices.get(r.model)
        if price is None:
            return r
        return replace(r, input_per_1k=price[0], output_per_1k=price[1], own_price=True)

    routes = {m: [priced(r) for r in rs] for m, rs in snap.routes.items()}
    by_id = {r.deployment_id: r for rs in routes.values() for r in rs}
    aliases = {**snap.aliases, **scenario.aliases}
    policies = dict(snap.policies)
    for target in scenario.routes.values():
        if isinstance(target, dict):
            policies[AD_HOC] = dict(target, name=AD_HOC)
    return Snapshot(routes, by_id, aliases, policies)


def validate(scenario: Scenario, snap: Snapshot) -> dict[str, str]:
    """field -> message for a scenario the snapshot cannot run (pure: no database)."""
    errors: dict[str, str] = {}
    for model, target in scenario.routes.items():
        if not model:
            errors["route_model"] = "Name the requested model or alias to route (or * for every model)."
        if isinstance(target, str):
            if policy_named(target, snap) is None:
                errors["policy"] = f"There is no policy named '{target}'."
            continue
        if target.get("strategy") not in STRATEGIES:
            errors["strategy"] = "Pick a strategy."
        for c in target.get("candidates") or ():
            if c.startswith(POLICY_PREFIX) or not requestable(c, snap):
                errors["candidates"] = f"'{c}' is not a model or alias this gateway serves."
                break
        for c, w in (target.get("weights") or {}).items():
            if c not in (target.get("candidates") or ()):
                errors["weights"] = f"'{c}' has a weight but is not a candidate."
            elif not isinstance(w, int) or w < 0:
                errors["weights"] = "Weights are whole numbers, 0 or more."
        ab = target.get("ab")
        if ab:
            if not requestable(ab.get("model", ""), snap):
                errors["ab_model"] = f"'{ab.get('model')}' is not a model or alias this gateway serves."
            if not 0 <= float(ab.get("percent") or 0) <= 100:
                errors["ab_percent"] = "A percentage from 0 to 100."
    for name, target in scenario.aliases.items():
        if name == target:
            errors["aliases"] = f"The alias '{name}' cannot point at itself."
        elif not requestable(target, snap):
            errors["aliases"] = f"'{target}' is not a model, alias or policy this gateway serves."
        elif resolve(target, Snapshot(snap.routes, snap.by_id, {**snap.aliases, **scenario.aliases},
                                      snap.policies)) == name:
            errors["aliases"] = f"The alias '{name}' would point at itself through '{target}'."
    for model, (inp, out) in scenario.prices.items():
        if inp < 0 or out < 0:
            errors["prices"] = f"The price of '{model}' is negative."
    return errors


# -- routing one group -----------------------------------------------------------------------

@dataclass(frozen=True)
class Decision:
    """Where a group of requests goes: (route, share) pairs summing to 1, or none (unserved),
    and the shadow copies the policy would send, with their share."""
    shares: tuple[tuple[Route, float], ...]
    shadow: tuple[tuple[Route, float], ...] = ()


def _first(routes: list[Route], policy: dict, need: Need) -> list[tuple[Route, float]]:
    """The expected first choice of plan._order: its strategy's best tier, split by weight."""
    strategy = policy.get("strategy") or "weighted"
    if not routes:
        return []
    if strategy == "keep":
        return [(routes[0], 1.0)]
    if strategy == "weighted" or len(routes) < 2:
        return first_shares(routes)
    unknown, ranked = tiers(routes, strategy, need)
    return first_shares(unknown or ranked[0])


def _policy(snap: Snapshot, scenario: Scenario, requested: str, mode: str,
            key_policy: str | None) -> tuple[list[Route], dict] | None:
    """The pool and policy a requested name routes by under `scenario` (None: it names nothing)."""
    target = scenario.routes.get(requested, scenario.routes.get(EVERY_MODEL))
    name = requested
    if target is not None:
        name = POLICY_PREFIX + (AD_HOC if isinstance(target, dict) else target)
    try:
        primary_pool, policy = pool(name, snap, mode)
    except GatewayError:
        return None
    if policy is None and key_policy:
        policy = policy_named(key_policy, snap)
    return primary_pool, policy or {}


def decide(snap: Snapshot, scenario: Scenario, requested: str, mode: str, key_policy: str | None,
           need: Need, largest: int) -> Decision:
    """Route a group the way plan.plan would (health and the explore share left out); `largest`
    is the group's biggest request in tokens, which must fit a deployment's context window."""
    resolved = _policy(snap, scenario, requested, mode, key_policy)
    if resolved is None:
        return Decision(())
    primary_pool, policy = resolved
    required = frozenset(policy.get("capabilities") or ())
    regions = policy.get("regions")

    def fits(r: Route) -> bool:
        return ((r.capabilities is None or required <= r.capabilities)
                and not (r.context_window and largest > r.context_window) and in_regions(r, regions))

    primary = [r for r in primary_pool if fits(r)]
    shares = _first(primary, policy, need)
    ab = policy.get("ab")
    if ab and ab.get("model") and primary:
        try:
            b_pool = [r for r in pool(ab["model"], snap, mode)[0] if fits(r)]
        except GatewayError:
            b_pool = []
        b_ids = {r.deployment_id for r in b_pool}
        a_pool = [r for r in primary if r.deployment_id not in b_ids]
        if b_pool and a_pool:
            b = min(max(float(ab.get("percent") or 0) / 100, 0.0), 1.0)
            shares = ([(r, s * (1 - b)) for r, s in _first(a_pool, policy, need)]
                      + [(r, s * b) for r, s in _first(b_pool, policy, need)])
    shadow: list[tuple[Route, float]] = []
    spec = policy.get("shadow")
    if shares and spec and spec.get("model") and mode not in MEDIA_MODES:     # media: never mirrored
        try:
            candidates = pool(spec["model"], snap, mode)[0]
        except GatewayError:
            candidates = []
        pct = min(max(float(spec.get("percent") or 0) / 100, 0.0), 1.0)
        shadow = [(r, s * pct) for r, s in first_shares(candidates)] if pct else []
    return Decision(tuple((r, s) for r, s in shares if s > 0), tuple(shadow))


# -- the replay ------------------------------------------------------------------------------

REPLAY, SHADOW, KEEP = 0, 1, 2      # served upstream / a shadow copy / failed or from the cache


TOTALS, BUCKETS, SERVED = 0, 1, 2     # the parts of the grouped read (below)


def _null_like(expr):
    """NULL of `expr`'s type, so the parts of a UNION agree (untyped where the type is unknown)."""
    return null() if isinstance(expr.type, NullType) else cast(null(), expr.type)


def _groups(f: UsageFilter, tag_keys: tuple[str, ...], windows: list[int]):
    """The filter's records summed three ways in one statement: per endpoint, model, the key's
    team and bound policy (what the replay reads of a key), kind, context-window fit and tag
    values (TOTALS: every breakdown but time and served deployment); per time bucket, endpoint,
    model, bound policy, kind and fit (BUCKETS); per served deployment and kind (SERVED). A
    record's fit is how many of `windows` (the catalogue's context windows, ascending) it exceeds."""
    r = UsageRecord
    kind = case((r.variant == "shadow", SHADOW), (and_(r.status < 400, r.cached.is_not(True)), REPLAY),
                else_=KEEP)
    fit = (case(*[(r.total_tokens > w, i) for i, w in reversed(list(enumerate(windows, 1)))], else_=0)
           if windows else literal(0))
    cols = {"bucket": bucket_expr(bucket_unit(f)), "endpoint": r.endpoint, "model": r.requested_model,
            "team": ApiKey.team_id, "policy": ApiKey.policy, "provider": r.provider, "upstream": r.upstream_model,
            "unit": r.unit, "kind": kind, "fit": fit} | {f"t{i}": r.tags[k].as_string() for i, k in enumerate(tag_keys)}
    parts = {TOTALS: ("endpoint", "model", "team", "policy", "unit", "kind", "fit", *(f"t{i}" for i in range(len(tag_keys)))),
             BUCKETS: ("bucket", "endpoint", "model", "policy", "unit", "kind", "fit"),
             SERVED: ("provider", "upstream", "kind")}
    sums = (func.count(), func.sum(r.prompt_tokens), func.sum(r.completion_tokens), func.sum(r.cached_tokens),
            func.sum(r.units), func.sum(r.cost_usd))
    selects = []
    for part, names in parts.items():
        grouped = [cols[c] for c in names]
        shown = [(cols[c] if c in names else _null_like(cols[c])).label(c) for c in cols]
        selects.append(select(literal(part).label("part"), *shown, *sums)
                       .select_from(r).outerjoin(ApiKey, ApiKey.id == r.key_id)
                       .where(*conditions(f)).group_by(*grouped))
    return db.session.execute(union_all(*selects)).all()


@dataclass
class Cell:
    """Actual and simulated requests, tokens and cost of one row of a breakdown."""
    actual_requests: float = 0
    actual_tokens: float = 0
    actual_cost: float = 0.0
    sim_requests: float = 0
    sim_tokens: float = 0
    sim_cost: float = 0.0

    @property
    def diff(self) -> float:
        return self.sim_cost - self.actual_cost

    @property
    def diff_pct(self) -> float | None:
        return self.diff / self.actual_cost * 100 if self.actual_cost else None


@dataclass
class Result:
    """A replay: totals, and Cells per deployment, model, team, tag and time bucket."""
    start: datetime
    end: datetime
    unit: str
    totals: Cell = field(default_factory=Cell)
    baseline_cost: float = 0.0      # the same traffic replayed under today's configuration
    replayed: int = 0               # requests routed again (served, not from the cache)
    unserved: float = 0             # requests the scenario could not route at all
    deployments: dict[str, Cell] = field(default_factory=dict)
    models: dict[str, Cell] = field(default_factory=dict)
    teams: dict[str, Cell] = field(default_factory=dict)
    tags: dict[str, dict[str, Cell]] = field(default_factory=dict)
    buckets: dict[datetime, Cell] = field(default_factory=dict)
    method: str = SPLIT_METHOD


def _as_time(value) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(str(value))   # SQLite: text


Priced = tuple[tuple[Route, float, tuple | None, tuple | None], ...]


def _priced(pairs: tuple[tuple[Route, float], ...]) -> Priced:
    """(route, share, token price, unit price): each route's prices looked up once per decision."""
    return tuple((r, s, r.price(), r.unit_price_of()) for r, s in pairs)


def _cost(price: tuple | None, unit_price: tuple | None, prompt: int, completion: int, cached: int,
          units: float | None, unit: str | None) -> float:
    if unit:
        return pricing.unit_cost(unit_price, units or 0, unit)
    return pricing.cost_of(price, Usage(prompt, completion, cached))


class _Router:
    """Decisions under the scenario and under today's configuration, each made once per requested
    model, mode, bound policy and context-window fit. A cost ranking reads the request's size: the
    average of that model's and policy's replayed requests over the whole range."""

    def __init__(self, snap: Snapshot, base: Snapshot, scenario: Scenario):
        self.snap, self.base, self.scenario = snap, base, scenario
        self.windows = sorted({r.context_window for s in (snap, base) for r in s.by_id.values() if r.context_window})
        self.sizes: dict[tuple, list[int]] = {}
        self.memo: dict[tuple, tuple[Decision, Priced, Priced, float]] = {}

    def count(self, model: str, mode: str, key_policy: str | None, n: int, prompt: int, completion: int) -> None:
        size = self.sizes.setdefault((model, mode, key_policy), [0, 0, 0])
        size[0] += n
        size[1] += prompt
        size[2] += completion

    def route(self, model: str, mode: str, key_policy: str | None, fit: int):
        """(scenario decision, its priced shares and shadow, today's priced shares and shadow,
        the scenario's share of client requests served)."""
        k = (model, mode, key_policy, fit)
        if k not in self.memo:
            n, prompt, completion = self.sizes.get((model, mode, key_policy), (0, 0, 0))
            need = Need(mode, frozenset(), prompt // max(n, 1), (completion // max(n, 1)) or None)
            largest = self.windows[fit - 1] + 1 if fit else 0      # over exactly `fit` windows
            decision = decide(self.snap, self.scenario, model, mode, key_policy, need, largest)
            baseline = decide(self.base, Scenario(), model, mode, key_policy, need, largest)
            self.memo[k] = (decision, _priced(decision.shares + decision.shadow),
                            _priced(baseline.shares + baseline.shadow), sum(s for _, s in decision.shares))
        return self.memo[k]


def _add(cells: list[Cell], n: float, tokens: float, cost: float, sim: bool = False) -> None:
    for c in cells:
        if sim:
            c.sim_requests += n
            c.sim_tokens += tokens
            c.sim_cost += cost
        else:
            c.actual_requests += n
            c.actual_tokens += tokens
            c.actual_cost += cost


def replay(f: UsageFilter, scenario: Scenario, tag_keys: tuple[str, ...] = ()) -> Result:
    """Replay the filter's records under `scenario` (raises InvalidRequest when it cannot run)."""
    live = catalog().snapshot()
    errors = validate(scenario, live)
    if errors:
        field_name, message = next(iter(errors.items()))
        raise InvalidRequest(message, param=field_name)
    router = _Router(apply(live, scenario), live, scenario)
    tag_keys = tag_keys[:MAX_TAG_KEYS]
    rows = _groups(f, tag_keys, router.windows)
    team_names = {t.id: t.name for t in db.session.scalars(select(Team))}
    out = Result(f.start, f.end, bucket_unit(f), tags={k: {} for k in tag_keys})
    n_tags = len(tag_keys)
    for row in rows:    # the request sizes a cost ranking reads, before anything is routed
        if row.part == TOTALS and row.kind == REPLAY:
            router.count(row.model or "", MODES.get(row.endpoint, "chat"), row.policy, row[-6],
                         int(row[-5] or 0), int(row[-4] or 0))
    for row in rows:
        part, kind = row.part, row.kind
        n, prompt, completion, cached, units, cost = row[-6:]
        prompt, completion, cached, cost = int(prompt or 0), int(completion or 0), int(cached or 0), float(cost or 0)
        units = float(units) if units is not None else None
        tokens = prompt + completion
        if part == SERVED:
            label = f"{row.provider}/{row.upstream}" if row.provider and row.upstream else "—"
            cells = [out.deployments.setdefault(label, Cell())]
        elif part == BUCKETS:
            cells = [out.buckets.setdefault(_as_time(row.bucket), Cell())]
        else:
            cells = [out.totals, out.models.setdefault(row.model or "—", Cell()),
                     out.teams.setdefault(team_names.get(row.team, "—") if row.team else "—", Cell())]
            cells += [out.tags[k].setdefault(v if v is not None else "—", Cell())
                      for k, v in zip(out.tags, row[-6 - n_tags:-6], strict=True)]
        _add(cells, n, tokens, cost)
        if kind == KEEP:    # failed or answered from the cache: the same under any policy
            _add(cells, n, tokens, cost, sim=True)
        if kind != REPLAY or part == SERVED:
            continue
        decision, priced, baseline, served_share = router.route(row.model or "", MODES.get(row.endpoint, "chat"),
                                                                row.policy, row.fit)
        if part == TOTALS:
            out.replayed += n
            if not decision.shares:
                out.unserved += n
            for _, share, price, unit_price in baseline:
                out.baseline_cost += share * _cost(price, unit_price, prompt, completion, cached, units, row.unit)
        for route, share, price, unit_price in priced:
            usd = share * _cost(price, unit_price, prompt, completion, cached, units, row.unit)
            _add(cells, 0, tokens * share, usd, sim=True)
            if part == TOTALS:
                _add([out.deployments.setdefault(route.label, Cell())], n * share, tokens * share, usd, sim=True)
        _add(cells, n * served_share, 0, 0.0, sim=True)    # client requests; shadow copies only at their deployment
    return out


def known_policies(snap: Snapshot | None = None) -> list[str]:
    """Policy names a scenario may name: the admin's and the built-in ones."""
    snap = snap or catalog().snapshot()
    return sorted(set(snap.policies) | set(BUILT_IN))
