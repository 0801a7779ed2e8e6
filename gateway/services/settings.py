"""Console-editable settings, stored in the database so every worker sees the same value."""
from __future__ import annotations

from gateway.extensions import db
from gateway.models import Setting

DEFAULTS = {
    "log_prompts": False,          # keep prompts and completions with request logs
    "monthly_budget_usd": None,    # drawn as a threshold line on the cost chart
    "public_base_url": "",         # this gateway's URL in snippets; empty: the request's host
}


def get(name: str):
    row = db.session.get(Setting, name)
    return row.value if row is not None else DEFAULTS.get(name)


def all_settings() -> dict:
    values = dict(DEFAULTS)
    for row in db.session.query(Setting).all():
        values[row.name] = row.value
    return values


def put(name: str, value) -> None:
    if name not in DEFAULTS:
        raise KeyError(name)
    row = db.session.get(Setting, name)
    if row is None:
        db.session.add(Setting(name=name, value=value))
    else:
        row.value = value
    db.session.commit()
