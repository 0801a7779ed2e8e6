"""How an alert leaves the gateway: a signed webhook and, when SMTP is configured, an e-mail.
Both run in a background thread, off the request path (ALERTS_SYNC: in the caller's thread).

The webhook body is JSON, signed with HMAC-SHA256 over "<timestamp>.<body>" in
X-Gateway-Signature: sha256=<hex>. Neither the webhook nor the e-mail ever carries a secret.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import smtplib
import ssl
import threading
import time
from email.message import EmailMessage

import orjson
from flask import Flask
from sqlalchemy import select, update

from gateway.extensions import db
from gateway.models import Alert, User

log = logging.getLogger("gateway.alerts")

SIGNATURE_HEADER = "X-Gateway-Signature"
TIMESTAMP_HEADER = "X-Gateway-Timestamp"


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The signature header value for a webhook body."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(secret: str, timestamp: str, body: bytes, signature: str, tolerance: float = 300,
           now: float | None = None) -> bool:
    """What a receiver does: constant-time compare, and refuse stale timestamps (replays)."""
    try:
        if abs((now or time.time()) - float(timestamp)) > tolerance:
            return False
    except ValueError:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


def smtp_configured(app: Flask) -> bool:
    return bool(app.config.get("SMTP_HOST") and app.config.get("SMTP_FROM"))


def deliver(app: Flask, alert_id: int, body: dict, url: str, secret_enc: str, email: bool = True) -> None:
    """Send the webhook (when there is a URL) and the e-mail (when SMTP is set), in a thread."""
    email = email and smtp_configured(app)
    if not url and not email:
        return
    if app.config.get("ALERTS_SYNC"):
        _deliver(app, alert_id, body, url, secret_enc, email)
        return
    threading.Thread(target=_deliver, args=(app, alert_id, body, url, secret_enc, email),
                     name="alert-delivery", daemon=True).start()


def _deliver(app: Flask, alert_id: int, body: dict, url: str, secret_enc: str, email: bool) -> None:
    with app.app_context():
        try:
            if url:
                send_webhook(app, alert_id, url, secret_enc, body)
            if email:
                send_email(app, alert_id, body)
        finally:
            db.session.remove()


def _status(alert_id: int, **values) -> None:
    try:
        db.session.execute(update(Alert).where(Alert.id == alert_id).values(**values))
        db.session.commit()
    except Exception:       # the status is a nicety; the alert is recorded
        db.session.rollback()
        log.warning("could not store alert %s delivery status", alert_id, exc_info=True)


def send_webhook(app: Flask, alert_id: int, url: str, secret_enc: str, body: dict) -> str:
    """POST the signed webhook; returns and stores the outcome (sent, failed: ...)."""
    from gateway import secrets
    from gateway.providers.base import UpstreamRequest
    status = "sent"
    try:
        data = orjson.dumps(body)
        ts = str(int(time.time()))
        secret = secrets.decrypt(secret_enc) if secret_enc else ""
        headers = {"Content-Type": "application/json", "User-Agent": "gateway-alerts/1", TIMESTAMP_HEADER: ts}
        if secret:
            headers[SIGNATURE_HEADER] = sign(secret, ts, data)
        resp = app.extensions["transport"].send(UpstreamRequest(url, headers, data))
        resp.read()
        resp.close()
        if resp.status >= 300:
            status = f"failed: HTTP {resp.status}"
    except Exception as e:      # noqa: BLE001 - a dead receiver must not break anything
        status = f"failed: {type(e).__name__}"[:64]
        log.warning("alert webhook failed: %s", status)
    _status(alert_id, webhook_status=status[:64])
    return status


def recipients() -> list[str]:
    """The alert_emails setting, else every active admin's e-mail."""
    from gateway.services.admin import settings
    given = [a.strip() for a in (settings.get("alert_emails") or "").split(",") if a.strip()]
    if given:
        return given
    return list(db.session.scalars(select(User.email).where(User.role == "admin", User.active.is_(True))))


def compose(app: Flask, body: dict, to: list[str]) -> EmailMessage:
    msg = EmailMessage()
    msg["Subject"] = f"[gateway] {body['name']}: {body['kind'].replace('_', ' ')} alert"[:200]
    msg["From"] = app.config["SMTP_FROM"]
    msg["To"] = ", ".join(to)
    msg.set_content(f"{body['message']}\n\nScope: {body['scope']}\nPeriod from: {body['period_start']}\n"
                    f"Alert {body['alert_id']}, at {body['created_at']}. "
                    "Acknowledge it on the console's Alerts page.\n")
    return msg


def send_email(app: Flask, alert_id: int, body: dict) -> str:
    """Mail the alert through GATEWAY_SMTP_*; returns and stores the outcome."""
    c = app.config
    status = "sent"
    try:
        to = recipients()
        if not to:
            status = "none: no recipients"
        else:
            port = int(c.get("SMTP_PORT") or 587)
            with smtplib.SMTP(c["SMTP_HOST"], port, timeout=float(c.get("SMTP_TIMEOUT") or 10)) as smtp:
                if c.get("SMTP_STARTTLS"):
                    smtp.starttls(context=ssl.create_default_context())
                if c.get("SMTP_USER"):
                    smtp.login(c["SMTP_USER"], c.get("SMTP_PASSWORD") or "")
                smtp.send_message(compose(app, body, to))
    except Exception as e:      # noqa: BLE001 - a dead mail server must not break anything
        status = f"failed: {type(e).__name__}"[:64]
        log.warning("alert e-mail failed: %s", status)
    _status(alert_id, email_status=status[:64])
    return status
