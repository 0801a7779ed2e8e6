"""The limits that actually apply to a key, and where each comes from: its own settings, else
its plan's defaults and model allowlist, plus its team's budget. What keys.info() gives the
request path, told to people (key detail, keys list, `gateway keys show` and `list`)."""
from __future__ import annotations

from dataclasses import dataclass

from gateway.formatting import money
from gateway.models import ApiKey
from gateway.services.accounting import keys

_PER = {"total": "in total", "day": "a day", "week": "a week", "month": "a month"}


@dataclass(frozen=True, slots=True)
class Applied:
    """One limit that applies, in words, with its source ("key", "plan pro", "team red")."""
    name: str           # token_quota, budget_usd, rpm, tpm, max_parallel, team_budget, plan_budget
    label: str
    text: str
    short: str          # for the keys list: "1,000 tok/month"
    source: str
    value: int | float
    period: str | None = None   # of a quota or budget

    def cli(self) -> str:
        """The CLI list's form: quota=1000/day, budget=$5.00/month, rpm=60, with @plan:pro or
        @team:red when the key does not set it itself."""
        if self.period is not None:
            shown = f"{money(self.value)}" if self.name != "token_quota" else str(self.value)
            text = f"{'quota' if self.name == 'token_quota' else self.name.replace('_usd', '')}={shown}/{self.period}"
        else:
            text = f"{self.name}={self.value}"
        return text + ("" if self.source == "key" else "@" + self.source.replace(" ", ":", 1))


@dataclass(frozen=True, slots=True)
class EffectiveLimits:
    models: tuple[str, ...] | None      # None: every model
    models_source: str                  # "key", "plan pro", or "" when nothing restricts them
    applied: tuple[Applied, ...]

    @property
    def models_text(self) -> str:
        return ", ".join(self.models) if self.models is not None else "all"

    def compact(self) -> str:
        """One line: 'models: a, b (plan pro) · 1,000 tok/month · $5.00/month (team red)'."""
        models = f"models: {self.models_text}" + (f" ({self.models_source})" if self.models_source
                                                   and self.models_source != "key" else "")
        parts = [a.short + (f" ({a.source})" if a.source != "key" else "") for a in self.applied]
        return " · ".join([models, *parts]) if parts else f"{models} · unlimited"


def effective(key: ApiKey) -> EffectiveLimits:
    """What applies to `key` now: keys.info()'s values (the one truth the proxy enforces),
    each named with where it comes from."""
    i = keys.info(key)
    plan, team = key.plan, key.team
    plan_src = f"plan {plan.name}" if plan is not None else ""

    def source(name: str) -> str:
        return "key" if getattr(key, name) is not None else plan_src

    out: list[Applied] = []
    per = _PER.get(i.quota_period, i.quota_period)
    short_per = "" if i.quota_period == "total" else f"/{i.quota_period}"
    if i.token_quota is not None:
        out.append(Applied("token_quota", "Token quota", f"{i.token_quota:,} tokens {per}",
                           f"{i.token_quota:,} tok{short_per}", source("token_quota"), i.token_quota, i.quota_period))
    if i.budget_usd is not None:
        out.append(Applied("budget_usd", "Budget", f"{money(i.budget_usd)} {per}",
                           f"{money(i.budget_usd)}{short_per}", source("budget_usd"), i.budget_usd, i.quota_period))
    for name, label, unit, short in (("rpm", "Requests / minute", "requests a minute", "rpm"),
                                     ("tpm", "Tokens / minute", "tokens a minute", "tpm"),
                                     ("max_parallel", "Parallel requests", "in flight at once", "parallel")):
        value = getattr(i, name)
        if value is not None:
            out.append(Applied(name, label, f"{value:,} {unit}", f"{short} {value:,}", source(name), value))
    if i.team_budget_usd is not None and team is not None:
        tper = _PER.get(i.team_period, i.team_period)
        out.append(Applied("team_budget", "Team budget", f"{money(i.team_budget_usd)} {tper}, shared by the team",
                           f"team {money(i.team_budget_usd)}/{i.team_period}", f"team {team.name}",
                           i.team_budget_usd, i.team_period))
    if i.plan_budget_usd is not None and plan is not None:
        pper = _PER.get(i.plan_period, i.plan_period)
        out.append(Applied("plan_budget", "Plan budget", f"{money(i.plan_budget_usd)} {pper}, shared by the plan's keys",
                           f"plan {money(i.plan_budget_usd)}/{i.plan_period}", plan_src,
                           i.plan_budget_usd, i.plan_period))
    models_source = ("key" if key.models is not None else plan_src) if i.models is not None else ""
    return EffectiveLimits(tuple(sorted(i.models)) if i.models is not None else None, models_source, tuple(out))
