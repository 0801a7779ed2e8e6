"""Declarative configuration: GATEWAY_CONFIG=gateway.yaml, applied idempotently at start.

The file owns what it declares: providers, deployments, aliases and policies it names are
created or updated and marked source="config"; rows it created earlier but no longer names
are removed. Rows made in the console or CLI under other names are left alone. Provider keys
come from environment variables (`api_key_env: OPENAI_KEY`, or `${OPENAI_KEY}` in any string).
Each row an apply creates, changes or removes is audited by actor "config"; an apply that
changes nothing leaves no entry.
"""
from __future__ import annotations

import copy
import os
import re
from pathlib import Path

import yaml
from flask import current_app
from sqlalchemy import select

from gateway import secrets
from gateway.errors import GatewayError
from gateway.extensions import db
from gateway.models import Alias, Deployment, Policy, Provider
from gateway.services.admin import audit, catalog_admin
from gateway.services.routing.catalog import catalog

SOURCE = "config"
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
DEPLOYMENT_KEYS = {"provider", "upstream", "upstream_model", "mode", "weight", "enabled", "region",
                   "input_per_1k", "output_per_1k", "context_window", "capabilities", "rpm", "tpm",
                   "rpm_limit", "tpm_limit", "unit_price", "price_unit"}
PROVIDER_KEYS = {"kind", "base_url", "api_key", "api_key_env", "region", "options", "enabled"}
# What the audit compares before and after an apply, per kind of row.
AUDITED = {"provider": ("kind", "base_url", "region", "options", "enabled", "source"),
           "deployment": (*catalog_admin.DEPLOYMENT_FIELDS, "source"),
           "alias": ("target", "source"), "policy": (*catalog_admin.POLICY_FIELDS, "source")}


class ConfigError(GatewayError):
    """The configuration file is invalid; the message says where."""


def _expand(value, where: str):
    if isinstance(value, str):
        def sub(m):
            if m[1] in os.environ:
                return os.environ[m[1]]
            if m[2] is not None:
                return m[2]
            raise ConfigError(f"{where}: environment variable {m[1]} is not set")
        return _VAR.sub(sub, value)
    if isinstance(value, list):
        return [_expand(v, where) for v in value]
    if isinstance(value, dict):
        return {k: _expand(v, f"{where}.{k}") for k, v in value.items()}
    return value


def _named(section, what: str) -> dict[str, dict]:
    """Sections may be a mapping name -> spec or a list of specs with `name`."""
    if section is None:
        return {}
    if isinstance(section, dict):
        return {str(k): (v if isinstance(v, dict) else {"target": v}) for k, v in section.items()}
    if isinstance(section, list):
        out = {}
        for i, item in enumerate(section):
            if not isinstance(item, dict) or not item.get("name"):
                raise ConfigError(f"{what}[{i}] needs a name")
            out[str(item["name"])] = {k: v for k, v in item.items() if k != "name"}
        return out
    raise ConfigError(f"{what} must be a mapping or a list")


def load(path: str | Path) -> dict:
    """Read and check a config file; environment variables are substituted."""
    try:
        doc = yaml.safe_load(Path(path).read_text()) or {}
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {e}") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    unknown = set(doc) - {"providers", "models", "aliases", "policies", "version"}
    if unknown:
        raise ConfigError(f"{path}: unknown section(s) {', '.join(sorted(unknown))}")
    return doc


def apply(doc: dict, out=print) -> dict:
    """Make the database match the file; returns counts of what the file declares."""
    providers = _named(doc.get("providers"), "providers")
    models = _named(doc.get("models"), "models")
    aliases = _named(doc.get("aliases"), "aliases")
    policies = _named(doc.get("policies"), "policies")

    for name, spec in providers.items():
        where = f"providers.{name}"
        bad = set(spec) - PROVIDER_KEYS
        if bad:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(bad))}")
        if not spec.get("kind"):
            raise ConfigError(f"{where}: needs a kind")
        api_key = _expand(spec.get("api_key"), where)
        if spec.get("api_key_env"):
            env = spec["api_key_env"]
            if env not in os.environ:
                raise ConfigError(f"{where}: environment variable {env} is not set")
            api_key = os.environ[env]
        existing = _named_row(Provider, name)
        before, old_key = _state("provider", existing), _stored_key(existing)
        try:    # a changed base_url needs its key in the file too: a stored key stays where it was
            p = catalog_admin.save_provider(name, spec["kind"], base_url=_expand(spec.get("base_url"), where),
                                            api_key=api_key, region=_expand(spec.get("region") or "", where),
                                            options=_expand(spec.get("options"), where), source=SOURCE)
        except GatewayError as e:
            raise ConfigError(f"{where}: {e.message}") from None
        p.source, p.enabled = SOURCE, bool(spec.get("enabled", True))
        db.session.commit()
        _audit("provider", name, before, p, base_url=p.base_url,
               **({"key_changed": True} if api_key is not None and api_key != old_key else {}))

    kept: set[tuple[str, str, str]] = set()
    for model, spec in models.items():
        deployments = spec.get("deployments")
        if not isinstance(deployments, list) or not deployments:
            raise ConfigError(f"models.{model}: needs a list of deployments")
        for i, d in enumerate(deployments):
            where = f"models.{model}.deployments[{i}]"
            if not isinstance(d, dict) or not d.get("provider"):
                raise ConfigError(f"{where}: needs a provider")
            bad = set(d) - DEPLOYMENT_KEYS
            if bad:
                raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(bad))}")
            d = _expand(d, where)
            upstream = str(d.get("upstream") or d.get("upstream_model") or model)
            fields = {"mode": d.get("mode") or spec.get("mode"),     # None: the model catalogue's
                      "weight": int(d.get("weight", 1)), "enabled": bool(d.get("enabled", True)),
                      "region": d.get("region"), "input_per_1k": d.get("input_per_1k"),
                      "output_per_1k": d.get("output_per_1k"), "context_window": d.get("context_window"),
                      "capabilities": d.get("capabilities"),
                      "rpm_limit": d.get("rpm", d.get("rpm_limit")), "tpm_limit": d.get("tpm", d.get("tpm_limit")),
                      "unit_price": d.get("unit_price"), "price_unit": d.get("price_unit")}
            provider = _named_row(Provider, str(d["provider"]))
            before = _state("deployment", next((x for x in provider.deployments if (x.model, x.upstream_model)
                                                == (model, upstream)), None) if provider else None)
            try:
                row = catalog_admin.save_deployment(model, str(d["provider"]), upstream, source=SOURCE, **fields)
            except GatewayError as e:
                raise ConfigError(f"{where}: {e.message}") from None
            _audit("deployment", f"{d['provider']}/{model}", before, row, deployment_id=row.id)
            kept.add((model, str(d["provider"]), upstream))

    # Aliases and policies name each other (an alias of policy:x, a policy whose candidate is
    # an alias), and each must name what exists: apply them in passes, in whatever order
    # they can be, until none is left; what still fails names something that is not there.
    pending = [("alias", name, spec) for name, spec in aliases.items()] + \
              [("policy", name, spec) for name, spec in policies.items()]
    while pending:
        failed = []
        for item in pending:
            try:
                (_apply_alias if item[0] == "alias" else _apply_policy)(item[1], item[2])
            except GatewayError as e:
                failed.append((item, e))
        if len(failed) == len(pending):
            (kind, name, _), e = failed[0]
            if isinstance(e, ConfigError):
                raise e
            raise ConfigError(f"{'aliases' if kind == 'alias' else 'policies'}.{name}: {e.message}") from None
        pending = [item for item, _ in failed]

    removed = _prune(set(providers), kept, set(aliases), set(policies))
    catalog().invalidate()
    summary = {"providers": len(providers), "deployments": len(kept), "aliases": len(aliases),
               "policies": len(policies), "removed": removed}
    out(f"config: {summary['providers']} providers, {summary['deployments']} deployments, "
        f"{summary['aliases']} aliases, {summary['policies']} policies"
        + (f"; removed {removed} no longer in the file" if removed else ""))
    return summary


def _apply_alias(name: str, spec: dict) -> None:
    target = spec.get("target")
    if not isinstance(target, str) or not target:
        raise ConfigError(f"aliases.{name}: needs a target (a model or policy:NAME)")
    before = _state("alias", _named_row(Alias, name))
    catalog_admin.set_alias(name, target, source=SOURCE, actor=SOURCE)
    _audit("alias", name, before, _named_row(Alias, name))


def _apply_policy(name: str, spec: dict) -> None:
    fields = {k: spec.get(k) for k in catalog_admin.POLICY_FIELDS if k != "enabled"}
    fields["strategy"] = fields["strategy"] or "weighted"
    fields["enabled"] = bool(spec.get("enabled", True))
    bad = set(spec) - set(catalog_admin.POLICY_FIELDS)
    if bad:
        raise ConfigError(f"policies.{name}: unknown key(s) {', '.join(sorted(bad))}")
    before = _state("policy", _named_row(Policy, name))
    row = catalog_admin.save_policy(name, source=SOURCE, **fields)
    _audit("policy", name, before, row)


def _prune(providers: set, deployments: set, aliases: set, policies: set) -> int:
    """Delete what an earlier version of the file made and this one no longer names."""
    removed = 0
    for d in db.session.scalars(select(Deployment).where(Deployment.source == SOURCE)):
        if (d.model, d.provider.name, d.upstream_model) not in deployments:
            _removed("deployment", f"{d.provider.name}/{d.model}", deployment_id=d.id, upstream_model=d.upstream_model)
            db.session.delete(d)
            removed += 1
    for kind, model, names in (("alias", Alias, aliases), ("policy", Policy, policies),
                               ("provider", Provider, providers)):
        for row in db.session.scalars(select(model).where(model.source == SOURCE)):
            if row.name not in names:
                if kind == "alias":
                    catalog_admin.record_pruned_alias(row, SOURCE)
                _removed(kind, row.name, **({"base_url": row.base_url} if kind == "provider" else {}))
                db.session.delete(row)
                removed += 1
    db.session.commit()
    return removed


def _named_row(model, name: str):
    return db.session.scalar(select(model).where(model.name == name))


def _state(kind: str, row) -> dict | None:
    """A copy of what the audit compares of `row` (None: no row yet)."""
    return None if row is None else {f: copy.deepcopy(getattr(row, f)) for f in AUDITED[kind]}


def _stored_key(provider: Provider | None) -> str | None:
    try:
        return secrets.decrypt(provider.api_key_enc) if provider is not None else None
    except RuntimeError:        # encrypted under another key: whatever the file gives is new
        return None


def _audit(kind: str, target: str, before: dict | None, row, **extra) -> None:
    """Audit what the file created or changed: every field of a new row, [old, new] of a
    changed one; nothing when it changed nothing (extra is said only alongside a change)."""
    after = _state(kind, row)
    changed = audit.changes(before, after)
    if before is not None:
        changed = {k: [before[k], v] for k, v in changed.items()}
    if changed or "key_changed" in extra:
        audit.record(SOURCE, f"{kind}.{'create' if before is None else 'update'}", target,
                     {**changed, **extra}, source=SOURCE)


def _removed(kind: str, target: str, **details) -> None:
    audit.record(SOURCE, f"{kind}.delete", target, details, source=SOURCE, commit=False)


def apply_file(path: str | Path, out=print) -> dict:
    return apply(load(path), out)


def apply_from_env(out=print) -> dict | None:
    """Apply GATEWAY_CONFIG (or the CONFIG_FILE setting) when set; None when not."""
    path = os.environ.get("GATEWAY_CONFIG") or current_app.config.get("CONFIG_FILE")
    if not path:
        return None
    return apply_file(path, out)
