"""What the console's routing pages read: deployments with their providers, aliases, policies,
and the names a form may offer (providers, models, aliases)."""
from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import selectinload

from gateway.extensions import db
from gateway.models import Alias, AliasVersion, Deployment, Policy, Provider
from gateway.services.routing.policies import BUILT_IN


def deployments() -> list[Deployment]:
    """Every deployment, enabled or not, by model, provider and id."""
    return list(db.session.scalars(select(Deployment).join(Provider).options(selectinload(Deployment.provider))
                                   .order_by(Deployment.model, Provider.name, Deployment.id)))


def provider_names() -> list[str]:
    return list(db.session.scalars(select(Provider.name).order_by(Provider.name)))


def model_names() -> list[str]:
    """Every model a deployment serves (enabled or not)."""
    return list(db.session.scalars(select(Deployment.model).distinct().order_by(Deployment.model)))


def aliases_by_target() -> dict[str, list[str]]:
    """Target -> the aliases pointing straight at it (what deleting its deployments would strand)."""
    out: dict[str, list[str]] = {}
    for a in aliases():
        out.setdefault(a.target, []).append(a.name)
    return out


def aliases() -> list[Alias]:
    return list(db.session.scalars(select(Alias).order_by(Alias.name)))


def alias_named(name: str) -> Alias | None:
    return db.session.scalar(select(Alias).where(Alias.name == name))


def changed_aliases() -> list[str]:
    """Names with a history but no alias now (deleted ones, which a rollback brings back)."""
    live = select(Alias.name)
    return list(db.session.scalars(select(AliasVersion.alias).where(AliasVersion.alias.not_in(live))
                                   .distinct().order_by(AliasVersion.alias)))


def policies() -> list[Policy]:
    return list(db.session.scalars(select(Policy).order_by(Policy.name)))


def built_in_policies() -> list[dict]:
    """The built-in policies as rows: name and strategy; every deployment (but the demo) is a candidate."""
    return [{"name": name, **spec} for name, spec in BUILT_IN.items()]


def policy_targets() -> list[str]:
    """`policy:NAME` of every policy an alias may point at: built-in and admin-defined."""
    return [f"policy:{name}" for name in [*BUILT_IN, *(p.name for p in policies())]]
