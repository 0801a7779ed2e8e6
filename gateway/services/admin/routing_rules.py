"""Aliases and routing policies: the writes shared by the console, the CLI and gateway.yaml.
Targets, candidates and experiment models must exist; every change of an alias is kept in
alias_versions (model version management), whoever made it, so it can be rolled back."""
from __future__ import annotations

import math

from sqlalchemy import select

from gateway.errors import InvalidRequest
from gateway.extensions import db
from gateway.models import Alias, AliasVersion, Deployment, Policy
from gateway.services.accounting.redaction import check_mode
from gateway.services.routing.catalog import catalog
from gateway.services.routing.policies import _ALIAS_DEPTH, BUILT_IN, POLICY_PREFIX, STRATEGIES

POLICY_FIELDS = ("strategy", "candidates", "weights", "capabilities", "regions", "sticky", "ab", "shadow",
                 "redact", "cache_ttl", "enabled")
NAME_MAX = {"alias": 200, "policy": 100}


def _commit() -> None:
    db.session.commit()
    catalog().invalidate()


def served_models() -> set[str]:
    """Every model name a deployment serves (enabled or not: disabling one is not deleting it)."""
    return set(db.session.scalars(select(Deployment.model).distinct()))


def _aliases() -> dict[str, str]:
    return {a.name: a.target for a in db.session.scalars(select(Alias))}


def policy_exists(name: str) -> bool:
    """An admin-defined policy of this name, or a built-in one."""
    return name in BUILT_IN or db.session.scalar(select(Policy.id).where(Policy.name == name)) is not None


def _check_name(kind: str, name: str) -> str:
    name = (name or "").strip()
    if not name:
        raise InvalidRequest(f"a {kind} needs a name", param="name")
    if len(name) > NAME_MAX[kind] or any(c.isspace() for c in name) or name.startswith(POLICY_PREFIX):
        raise InvalidRequest(f"a {kind} name has at most {NAME_MAX[kind]} characters, no spaces, and does "
                             f"not start with '{POLICY_PREFIX}'", param="name")
    return name


def check_target(name: str, target: str) -> None:
    """`target` is a served model, an existing policy (`policy:NAME`), or another alias that
    does not lead back to `name`; else InvalidRequest on `target`."""
    if target.startswith(POLICY_PREFIX):
        if not policy_exists(target[len(POLICY_PREFIX):]):
            raise InvalidRequest(f"There is no routing policy '{target[len(POLICY_PREFIX):]}'.", param="target")
        return
    aliases = _aliases()
    if target in aliases:
        hop, depth = target, 0
        while hop in aliases:
            hop, depth = aliases[hop], depth + 1
            if hop == name:
                raise InvalidRequest(f"'{target}' leads back to '{name}': aliases would go round in a loop.",
                                     param="target")
            if depth >= _ALIAS_DEPTH:
                raise InvalidRequest(f"'{target}' is an alias chain longer than {_ALIAS_DEPTH}.", param="target")
        return
    if target not in served_models():
        raise InvalidRequest(f"No deployment serves '{target}', and it is no alias: add the deployment first, "
                             f"or point at policy:NAME.", param="target")


def _version(alias: str, target: str | None, previous: str | None, change: str, actor: str,
             source: str) -> AliasVersion:
    row = AliasVersion(alias=alias, target=target, previous_target=previous, change=change,
                       actor=(actor or "system")[:255], source=source)
    db.session.add(row)
    return row


def set_alias(name: str, target: str, source: str = "cli", actor: str = "", change: str = "set") -> Alias:
    """Point `name` at a model or `policy:NAME` (clients keep asking for `name`); a new target
    is a new entry of the alias's history. Setting the same target again changes nothing."""
    name, target = _check_name("alias", name), (target or "").strip()
    if not target or name == target:
        raise InvalidRequest("an alias needs a target other than itself", param="target")
    check_target(name, target)
    row = db.session.scalar(select(Alias).where(Alias.name == name))
    previous = row.target if row is not None else None
    if row is None:
        row = Alias(name=name, target=target, source=source)
        db.session.add(row)
    if previous != target:
        _version(name, target, previous, change, actor, source)
    row.target, row.source = target, source
    _commit()
    return row


def rollback_alias(name: str, source: str = "cli", actor: str = "") -> Alias:
    """Point the alias back at what it pointed at before its last change (a deleted alias
    comes back); the rollback is itself a history entry, so rolling back twice undoes it."""
    last = db.session.scalars(select(AliasVersion).where(AliasVersion.alias == name)
                              .order_by(AliasVersion.id.desc()).limit(1)).first()
    if last is None or not last.previous_target:
        raise InvalidRequest(f"The alias '{name}' has no earlier target to roll back to.", param="alias")
    return set_alias(name, last.previous_target, source=source, actor=actor, change="rollback")


def alias_history(name: str, limit: int = 50) -> list[AliasVersion]:
    """The alias's changes, newest first."""
    return list(db.session.scalars(select(AliasVersion).where(AliasVersion.alias == name)
                                   .order_by(AliasVersion.id.desc()).limit(limit)))


def delete_alias(name: str, source: str = "cli", actor: str = "") -> bool:
    """Remove the alias (its history stays, so a rollback can bring it back)."""
    row = db.session.scalar(select(Alias).where(Alias.name == name))
    if row is not None:
        _version(name, None, row.target, "delete", actor, source)
        db.session.delete(row)
        _commit()
    return row is not None


def record_pruned_alias(alias: Alias, source: str) -> None:
    """History of an alias gateway.yaml no longer names (declarative deletes it, uncommitted)."""
    _version(alias.name, None, alias.target, "delete", source, source)


def _known_model(value, param: str, what: str) -> str:
    """A policy's reference to a model: a served model or an alias (not a policy)."""
    name = str(value or "").strip()
    if not name:
        raise InvalidRequest(f"{what} needs a model", param=param)
    if name.startswith(POLICY_PREFIX):
        raise InvalidRequest(f"{what}: '{name}' is a policy; name a model or an alias (no policies in policies)",
                             param=param)
    aliases = _aliases()
    if name not in served_models() and name not in aliases:
        raise InvalidRequest(f"{what}: no deployment serves '{name}', and it is no alias", param=param)
    hop = name
    for _ in range(_ALIAS_DEPTH):
        hop = aliases.get(hop, hop)
    if hop.startswith(POLICY_PREFIX):
        raise InvalidRequest(f"{what}: the alias '{name}' leads to {hop} (no policies in policies)", param=param)
    return name


def _experiment(exp: str, spec) -> dict | None:
    """An A/B split or shadow share: {"model": a known model, "percent": 0..100}."""
    if spec is None:
        return None
    if not isinstance(spec, dict):
        raise InvalidRequest(f"{exp} needs a model and a percent from 0 to 100", param=exp)
    label = "the A/B split" if exp == "ab" else "the shadow share"
    model = _known_model(spec.get("model"), f"{exp}_model", label)
    try:
        percent = float(spec.get("percent"))
    except (TypeError, ValueError):
        percent = math.nan
    if not 0 <= percent <= 100:        # NaN fails too
        raise InvalidRequest(f"{label}: the percent is a number from 0 to 100", param=f"{exp}_percent")
    return {"model": model, "percent": percent}


def _names(value, param: str) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise InvalidRequest(f"{param} is a list", param=param)
    out = [str(v).strip() for v in value if str(v).strip()]
    return out or None


def _weights(weights, candidates: list[str] | None) -> dict | None:
    """Candidate -> a positive whole number (a deployment's weight is multiplied by it)."""
    if not weights:
        return None
    if not isinstance(weights, dict):
        raise InvalidRequest("weights map a candidate to a number", param="weights")
    out = {}
    for name, w in weights.items():
        if candidates is None or name not in candidates:
            raise InvalidRequest(f"weights: '{name}' is not one of the policy's candidates", param="weights")
        try:
            value = float(w)
        except (TypeError, ValueError):
            value = math.nan
        if isinstance(w, bool) or not (value >= 1 and value == int(value)):
            raise InvalidRequest(f"weights: the weight of '{name}' must be a positive whole number", param="weights")
        out[name] = int(value)
    return out


def save_policy(name: str, source: str = "cli", exists_ok: bool = True, **fields) -> Policy:
    """Create or update a routing policy; only the fields given change. Candidates and the
    A/B and shadow models must be served models or aliases. With exists_ok=False an existing
    or built-in name is an error (the console's create)."""
    unknown = set(fields) - set(POLICY_FIELDS)
    if unknown:
        raise InvalidRequest(f"unknown policy field(s): {', '.join(sorted(unknown))}")
    name = _check_name("policy", name)
    row = db.session.scalar(select(Policy).where(Policy.name == name))
    if not exists_ok and (row is not None or name in BUILT_IN):
        raise InvalidRequest("A policy with this name exists already" + (" (built in)." if name in BUILT_IN else "."),
                             param="name")
    if fields.get("strategy") is not None and fields["strategy"] not in STRATEGIES:
        raise InvalidRequest(f"strategy must be one of {', '.join(STRATEGIES)}", param="strategy")
    for list_field in ("candidates", "regions", "capabilities"):
        if list_field in fields:
            fields[list_field] = _names(fields[list_field], list_field)
    if fields.get("candidates"):
        fields["candidates"] = [_known_model(c, "candidates", "candidates") for c in fields["candidates"]]
    if fields.get("capabilities"):
        fields["capabilities"] = sorted({c.lower() for c in fields["capabilities"]})
    if "weights" in fields:
        candidates = fields.get("candidates", row.candidates if row else None)
        fields["weights"] = _weights(fields["weights"], candidates)
    for exp in ("ab", "shadow"):
        if exp in fields:
            fields[exp] = _experiment(exp, fields[exp])
    if problem := check_mode(fields.get("redact")):
        raise InvalidRequest(problem, param="redact")
    ttl = fields.get("cache_ttl")
    if ttl is not None and (not isinstance(ttl, int) or isinstance(ttl, bool) or ttl < 0):
        raise InvalidRequest("cache_ttl must be a whole number of seconds, at least 0", param="cache_ttl")
    sticky = fields.get("sticky")
    if sticky is not None and (not isinstance(sticky, str) or len(sticky) > 64):
        raise InvalidRequest("sticky is a request field name of at most 64 characters", param="sticky")
    if "sticky" in fields:
        fields["sticky"] = (sticky or "").strip() or None
    if row is None:
        row = Policy(name=name, source=source)
        db.session.add(row)
    row.source = source
    for key, value in fields.items():
        setattr(row, key, value)
    _commit()
    return row


def delete_policy(name: str) -> bool:
    """Remove an admin-defined policy; refused while an alias points at it."""
    row = db.session.scalar(select(Policy).where(Policy.name == name))
    if row is None:
        return False
    users = sorted(a.name for a in db.session.scalars(select(Alias).where(Alias.target == POLICY_PREFIX + name)))
    if users:
        raise InvalidRequest(f"The alias(es) {', '.join(users)} point at policy:{name}: point them elsewhere first.",
                             param="name")
    db.session.delete(row)
    _commit()
    return True


def policy_names(enabled_only: bool = False) -> list[str]:
    """Policy names for the console's pickers (the key form offers disabled ones too)."""
    q = select(Policy.name).order_by(Policy.name)
    if enabled_only:
        q = q.where(Policy.enabled)
    return list(db.session.scalars(q))
