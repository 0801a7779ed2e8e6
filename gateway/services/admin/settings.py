"""Console-editable settings, stored in the database so every worker sees the same value."""
from __future__ import annotations

import logging
import time

from flask import Flask, current_app

from gateway.database import bounded_session
from gateway.extensions import db
from gateway.models import Setting
from gateway import pubsub, secrets
from gateway.providers.ssrf import check_url
from gateway.services.accounting import redaction

log = logging.getLogger("gateway.settings")
INVALIDATE_CHANNEL = "gw:settings:invalidate"

DEFAULTS = {
    "log_prompts": False,          # keep prompts and completions with request logs
    "monthly_budget_usd": None,    # drawn as a threshold line on the cost chart
    "public_base_url": "",         # this gateway's URL in snippets; empty: the request's host
    "redact_default": "off",       # redaction mode of keys and policies that set none
    "redact_patterns": [],         # admin patterns: [{"name": "EMPLOYEE_ID", "pattern": "EMP-\\d{6}"}]
    "usage_retention_days": 365,   # usage records older than this are deleted (0: kept for ever)
    "prompt_retention_days": 30,   # stored prompts and answers older than this are erased (0: kept)
    "key_alert_thresholds": [80, 95, 100],  # percent of a key's (or plan's) token quota and budget
    "alert_error_rate_percent": 20,   # a deployment's error rate above this alerts (0: never)
    "alert_latency_p95_ms": 0,     # a deployment's p95 latency above this alerts (0: never)
    "alert_provider_down": True,   # an open circuit alerts
    "alert_webhook_url": "",       # key, plan and health alerts (and teams and tags without their own)
    "alert_webhook_secret": "",    # encrypted (secrets.encrypt); never shown
    "alert_emails": "",            # comma-separated; empty: every active admin
}
SECRET_SETTINGS = ("alert_webhook_secret",)
RETENTION_MAX_DAYS = 36500


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
    app = current_app._get_current_object()
    _cache(app).pop(name, None)
    pubsub.bus(app).publish(INVALIDATE_CHANNEL, name)


def check(values: dict) -> tuple[dict, dict[str, str]]:
    """The values as put() stores them, and name -> message for each invalid one. The budget may
    come as text from a form; empty means no budget."""
    clean, errors = dict(values), {}
    budget = clean.get("monthly_budget_usd")
    try:
        if isinstance(budget, str):
            budget = clean["monthly_budget_usd"] = float(budget) if budget.strip() else None
        if budget is not None and budget < 0:
            raise ValueError
    except ValueError:
        errors["monthly_budget_usd"] = "Enter an amount of 0 or more, or leave empty."
    url = clean.get("public_base_url")
    if url and not url.startswith(("http://", "https://")):
        errors["public_base_url"] = "Start the URL with http:// or https://."
    if "redact_default" in clean and (clean["redact_default"] is None or redaction.check_mode(clean["redact_default"])):
        errors["redact_default"] = f"Choose one of {', '.join(redaction.MODES)}."
    if isinstance(clean.get("redact_patterns"), str):     # the form's NAME = regex lines
        clean["redact_patterns"], problem = redaction.parse_patterns(clean["redact_patterns"])
    else:
        problem = redaction.check_patterns(clean["redact_patterns"]) if "redact_patterns" in clean else None
    if problem:
        errors["redact_patterns"] = problem
    for name in ("usage_retention_days", "prompt_retention_days"):
        if name in clean:
            value = clean[name]
            try:
                value = clean[name] = int(value.strip() or 0) if isinstance(value, str) else value
                if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= RETENTION_MAX_DAYS:
                    raise ValueError
            except ValueError:
                errors[name] = f"Enter a whole number of days from 0 (keep for ever) to {RETENTION_MAX_DAYS}."
    _check_alerts(clean, errors)
    return clean, errors


def _number(clean: dict, errors: dict, name: str, most: int, message: str) -> None:
    value = clean[name]
    try:
        value = clean[name] = int(value.strip() or 0) if isinstance(value, str) else value
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= most:
            raise ValueError
    except ValueError:
        errors[name] = message


def _check_alerts(clean: dict, errors: dict) -> None:
    """The alert settings: thresholds as "80, 95, 100" from a form, the webhook URL (SSRF policy)
    and its secret, given in plain text and stored encrypted."""
    if "key_alert_thresholds" in clean:
        given = clean["key_alert_thresholds"]
        try:
            parts = given.replace(",", " ").split() if isinstance(given, str) else list(given)
            values = sorted({int(p) for p in parts})
            if any(not 1 <= v <= 100 for v in values) or len(values) > 10:
                raise ValueError
            clean["key_alert_thresholds"] = values
        except (TypeError, ValueError):
            errors["key_alert_thresholds"] = "Enter up to 10 whole percentages from 1 to 100, e.g. 80, 95, 100."
    if "alert_error_rate_percent" in clean:
        _number(clean, errors, "alert_error_rate_percent", 100, "Enter a whole percentage from 0 (off) to 100.")
    if "alert_latency_p95_ms" in clean:
        _number(clean, errors, "alert_latency_p95_ms", 3_600_000, "Enter whole milliseconds, 0 for off.")
    if "alert_emails" in clean:
        emails = [e.strip() for e in str(clean["alert_emails"] or "").split(",") if e.strip()]
        if any("@" not in e or " " in e or len(e) > 255 for e in emails):
            errors["alert_emails"] = "Enter e-mail addresses separated by commas."
        clean["alert_emails"] = ", ".join(emails)
    if "alert_webhook_url" in clean:
        url = clean["alert_webhook_url"] = (clean["alert_webhook_url"] or "").strip()[:500]
        try:
            if url:
                check_url(url, current_app.config["ALLOW_PRIVATE_UPSTREAMS"])
        except ValueError as e:     # the SSRF policy's reason
            errors["alert_webhook_url"] = f"Webhook URL: {e}"
    if "alert_webhook_secret" in clean:
        clean["alert_webhook_secret"] = secrets.encrypt(clean["alert_webhook_secret"] or "")


def update(values: dict) -> dict:
    """Store the (checked) values that differ from the current ones; returns those."""
    current = all_settings()
    changed = {k: v for k, v in values.items() if current.get(k) != v}
    for k, v in changed.items():
        put(k, v)
    return changed


def cached(app: Flask, name: str):
    """get() for the hot path: read from the database at most every SETTINGS_CACHE_SECONDS
    per process, sooner when another process changes it (Redis). Needs no app context."""
    values = _cache(app)
    hit = values.get(name)
    now = time.monotonic()
    if hit is not None and now - hit[1] < app.config["SETTINGS_CACHE_SECONDS"]:
        return hit[0]
    try:
        with app.app_context(), bounded_session():
            value = get(name)
    except Exception:
        log.warning("reading setting %s failed; using the last value", name, exc_info=True)
        value = hit[0] if hit is not None else DEFAULTS.get(name)
    values[name] = (value, now)
    return value


def _cache(app: Flask) -> dict:
    pubsub.bus(app).ensure()        # the listener that keeps it fresh, in this process
    return app.extensions["settings_cache"]
