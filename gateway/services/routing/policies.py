"""The routing vocabulary: strategies, built-in policies, and what a requested name stands for
(a model, an alias of one, or `policy:NAME`). Read from the catalog snapshot, no I/O."""
from __future__ import annotations

from dataclasses import replace

from gateway.errors import ModelNotFound
from gateway.services.routing.catalog import Route, Snapshot

POLICY_PREFIX = "policy:"
STRATEGIES = ("weighted", "cost", "latency", "throughput", "reliability")
BUILT_IN = {
    "cost-optimized": {"strategy": "cost"},
    "latency-optimized": {"strategy": "latency"},
    "throughput-optimized": {"strategy": "throughput"},
    "reliability-optimized": {"strategy": "reliability"},
}
CAPABILITIES = ("tools", "vision", "json", "audio", "embeddings")
_ALIAS_DEPTH = 5


def resolve(name: str, snap: Snapshot) -> str:
    """Follow aliases to a model name or `policy:NAME`."""
    seen = 0
    while name in snap.aliases and seen < _ALIAS_DEPTH:
        name, seen = snap.aliases[name], seen + 1
    return name


def requestable(name: str, snap: Snapshot) -> bool:
    """Whether a client may ask for `name`: a model, an alias or a policy the snapshot has."""
    if name in snap.routes or name in snap.aliases:
        return True
    policy = name.removeprefix(POLICY_PREFIX)
    return policy != name and (policy in snap.policies or policy in BUILT_IN)


def policy_named(name: str, snap: Snapshot) -> dict | None:
    """An admin-defined policy, else a built-in one, as the dict routing reads."""
    if name in snap.policies:
        return snap.policies[name]
    if name in BUILT_IN:
        return dict(BUILT_IN[name], name=name)
    return None


def pool(name: str, snap: Snapshot, mode: str) -> tuple[list[Route], dict | None]:
    """The deployments a requested name stands for, and the policy it names (if any).
    The demo's deployments are only in the pool of a name that leads to their model (the model
    itself, an alias of it, a policy listing it): an open policy never picks them."""
    target = resolve(name, snap)
    if not target.startswith(POLICY_PREFIX):
        return [r for r in snap.routes.get(target, ()) if r.mode == mode], None
    policy = policy_named(target[len(POLICY_PREFIX):], snap)
    if policy is None:
        raise ModelNotFound(f"The routing policy '{target[len(POLICY_PREFIX):]}' does not exist.",
                            param="model")
    candidates = policy.get("candidates")
    if not candidates:      # a built-in or open policy: every deployment that fits, but the demo
        return [r for routes in snap.routes.values() for r in routes if r.mode == mode and not r.demo], policy
    weights = policy.get("weights") or {}
    out = []
    for c in candidates:
        inner = resolve(c, snap)
        if inner.startswith(POLICY_PREFIX):
            continue        # no policies inside policies
        w = weights.get(c)
        for r in snap.routes.get(inner, ()):
            if r.mode == mode:
                out.append(r if w is None else replace(r, weight=max(r.weight * int(w), 0)))
    return out, policy
