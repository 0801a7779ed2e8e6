"""The console's alerts: the banner, the Alerts page (RBAC, CSRF, escaping), acknowledgement,
the alert settings (write-only webhook secret), the signed webhook and e-mail."""
from __future__ import annotations

import base64
import json
import socketserver
import threading
from datetime import datetime
from email import message_from_bytes

import pytest
from console_client import Console, make_user
from sqlalchemy import select

from gateway.extensions import db
from gateway.models import Alert, AuditLog, Setting, Team
from gateway.services.accounting import alerts, keys
from gateway.services.admin import settings
from tests.browser import EVIL
from tests.test_alerts import SECRET, receiver  # noqa: F401 - the webhook receiver fixture

PERIOD = datetime(2026, 12, 1)


@pytest.fixture
def seeded(app):
    """Users of each role, the member in team red; an alert on the member's key, one on the
    admin's key (named EVIL), one on team red and one on a deployment."""
    with app.app_context():
        red, blue = Team(name="red"), Team(name="blue")
        db.session.add_all([red, blue])
        db.session.commit()
        red_id, blue_id = red.id, blue.id
    ids = {r: make_user(app, f"{r}@example.com", r, red_id if r == "member" else None)
           for r in ("admin", "member", "viewer")}
    with app.app_context():
        mine, _ = keys.create_key("member key", user_id=ids["member"], token_quota=100)
        evil, _ = keys.create_key(EVIL, user_id=ids["admin"], token_quota=100, team_id=blue_id)
        made = {}
        made["mine"] = alerts.crossed(app, f"key:{mine.id}", PERIOD, 85, 85, kind="tokens", cap=100)[0].id
        made["evil"] = alerts.crossed(app, f"key:{evil.id}", PERIOD, 81, 81, kind="tokens", cap=100)[0].id
        db.session.get(Team, red_id).budget_usd = 10.0
        db.session.commit()
        made["team"] = alerts.crossed(app, f"team:{red_id}", PERIOD, 5.5, 55, cap=10.0)[0].id
        made["dep"] = alerts.record(app, "provider_down", "deployment:9", alerts.Target("deployment x on y", ()),
                                    PERIOD, 0, "deployment x on y: circuit open", None, None).id
    return {"users": ids, "alerts": made, "red": red_id}


def test_the_page_and_banner_show_each_role_what_it_may_see(app, seeded):
    a = seeded["alerts"]
    admin, member, viewer = (Console(app, f"{r}@example.com") for r in ("admin", "member", "viewer"))
    for c in (admin, viewer):
        page = c.get("/alerts").text
        assert all(f'id="alert-{i}"' in page for i in a.values())
        assert 'id="alert-banner"' in c.get("/").text
    assert "Acknowledge" in admin.get("/alerts").text and "Acknowledge" not in viewer.get("/alerts").text
    page = member.get("/alerts").text
    assert f'id="alert-{a["mine"]}"' in page and f'id="alert-{a["team"]}"' in page
    assert f'id="alert-{a["evil"]}"' not in page and f'id="alert-{a["dep"]}"' not in page
    banner = member.get("/keys").text.split('id="alert-banner"')[1].split("</aside>")[0]
    assert "member key" in banner and "team red" in banner and "circuit" not in banner
    assert "Acknowledge" not in page


def test_filters_narrow_the_history(app, seeded):
    a = seeded["alerts"]
    c = Console(app, "admin@example.com")
    page = c.get("/alerts?kind=provider_down").text
    assert f'id="alert-{a["dep"]}"' in page and f'id="alert-{a["mine"]}"' not in page
    page = c.get("/alerts?scope=team").text
    assert f'id="alert-{a["team"]}"' in page and f'id="alert-{a["mine"]}"' not in page
    partial = c.get("/alerts?scope=deployment:9", headers={"HX-Request": "true"}).text
    assert "<html" not in partial and 'id="alert-rows"' in partial and f'id="alert-{a["dep"]}"' in partial
    with app.app_context():
        alerts.acknowledge(a["dep"], by="admin@example.com")
    assert f'id="alert-{a["dep"]}"' not in c.get("/alerts?state=open").text
    page = c.get("/alerts?state=acknowledged").text
    assert f'id="alert-{a["dep"]}"' in page and "by admin@example.com" in page


def test_anonymous_users_are_sent_to_login(app, seeded):
    client = app.test_client()
    r = client.get("/alerts")
    assert r.status_code == 302 and "/login" in r.headers["Location"]
    assert client.post(f"/alerts/{seeded['alerts']['mine']}/acknowledge").status_code in (302, 403)
    with app.app_context():
        assert not db.session.get(Alert, seeded["alerts"]["mine"]).acknowledged


def test_only_admins_acknowledge_and_it_is_audited(app, seeded):
    a = seeded["alerts"]
    for role in ("member", "viewer"):
        c = Console(app, f"{role}@example.com")
        assert c.post(f"/alerts/{a['mine']}/acknowledge").status_code == 403
        assert c.post("/alerts/acknowledge").status_code == 403
    admin = Console(app, "admin@example.com")
    r = admin.post(f"/alerts/{a['mine']}/acknowledge", {"state": "open"})
    assert r.status_code == 303 and r.headers["Location"].endswith("/alerts?state=open")
    assert admin.post("/alerts/999999/acknowledge").status_code == 404
    with app.app_context():
        row = db.session.get(Alert, a["mine"])
        assert row.acknowledged and row.acknowledged_by == "admin@example.com" and row.acknowledged_at
        assert [x.id for x in alerts.open_alerts()] == sorted([a["evil"], a["team"], a["dep"]], reverse=True)
    assert admin.post("/alerts/acknowledge", htmx=True).headers["HX-Redirect"].endswith("/alerts")
    assert 'id="alert-banner"' not in admin.get("/").text
    with app.app_context():
        audit = db.session.scalars(select(AuditLog).where(AuditLog.action.startswith("alert."))
                                   .order_by(AuditLog.id)).all()
        assert [x.action for x in audit] == ["alert.acknowledge", "alert.acknowledge_all"]
        assert audit[0].details["alert_id"] == a["mine"] and audit[1].details["count"] == 3


def test_posts_without_a_csrf_token_are_refused(app, seeded):
    c = Console(app, "admin@example.com")
    assert c.post(f"/alerts/{seeded['alerts']['mine']}/acknowledge", csrf=False).status_code == 403
    assert c.client.post("/alerts/acknowledge", data={"csrf_token": "forged"}).status_code == 403
    assert c.client.post("/alerts/acknowledge", headers={"HX-Request": "true", "X-CSRFToken": "forged"}).status_code == 403
    with app.app_context():
        assert len(alerts.open_alerts()) == 4


def test_labels_and_messages_are_escaped(app, seeded):
    c = Console(app, "admin@example.com")
    for url in ("/alerts", "/"):
        text = c.get(url).text
        assert EVIL not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text


def test_alert_settings_are_checked_and_the_secret_is_write_only(app, receiver):  # noqa: F811
    url, got = receiver
    make_user(app, "admin@example.com", "admin")
    c = Console(app, "admin@example.com")
    form = {"alerts_form": "1", "key_alert_thresholds": "50, 101", "alert_error_rate_percent": "20",
            "alert_latency_p95_ms": "0", "alert_provider_down": "on", "alert_webhook_url": "ftp://x",
            "alert_emails": "not-an-address", "public_base_url": "", "monthly_budget_usd": ""}
    r = c.post("/settings", form)
    assert r.status_code == 422
    for name in ("key_alert_thresholds", "alert_webhook_url", "alert_emails"):
        assert f'id="{name}-error"' in r.text
    form.update(key_alert_thresholds="95 50,80", alert_webhook_url=url, alert_emails="ops@example.com",
                alert_webhook_secret=SECRET)
    r = c.post("/settings", form)
    assert r.status_code == 200 and "Settings saved" in r.text
    with app.app_context():
        assert settings.get("key_alert_thresholds") == [50, 80, 95]
        stored = db.session.get(Setting, "alert_webhook_secret").value
        assert stored and SECRET not in stored
        details = db.session.scalars(select(AuditLog.details).where(AuditLog.action == "settings.update")).one()
        assert details["alert_webhook_secret"] in ("changed", "[redacted]") and stored not in json.dumps(details)
    page = c.get("/settings").text
    assert SECRET not in page and stored not in page and "set: leave empty to keep it" in page
    form.pop("alert_webhook_secret")
    c.post("/settings", form)                   # an empty secret field keeps the secret
    with app.app_context():
        assert db.session.get(Setting, "alert_webhook_secret").value == stored
    # a key alert goes to the settings' webhook, signed with that secret, and carries no secret
    app.config["ALERTS_SYNC"] = True
    with app.app_context():
        key, plain = keys.create_key("ops-key", token_quota=10)
        alerts.crossed(app, f"key:{key.id}", PERIOD, 6, 60, kind="tokens", cap=10)
    headers, body = got[0]
    assert alerts.verify(SECRET, headers["x-gateway-timestamp"], body, headers["x-gateway-signature"])
    assert not alerts.verify("other", headers["x-gateway-timestamp"], body, headers["x-gateway-signature"])
    assert plain.encode() not in body and SECRET.encode() not in body
    assert json.loads(body)["threshold_percent"] == 50 and json.loads(body)["kind"] == "tokens"
    form["alert_webhook_secret_clear"] = "on"
    c.post("/settings", form)
    with app.app_context():
        assert settings.get("alert_webhook_secret") == ""


class SmtpHandler(socketserver.StreamRequestHandler):
    """Just enough SMTP for smtplib: EHLO, AUTH PLAIN, MAIL, RCPT, DATA, QUIT."""

    def reply(self, line: str) -> None:
        self.wfile.write(line.encode() + b"\r\n")

    def handle(self):
        got = {"rcpt": [], "auth": None, "data": b""}
        self.reply("220 test ESMTP")
        while True:
            line = self.rfile.readline()
            if not line:
                return
            cmd = line.decode().strip()
            verb = cmd.split(" ")[0].upper()
            if verb == "EHLO":
                self.reply("250-test")
                self.reply("250 AUTH PLAIN")
            elif verb == "AUTH":
                got["auth"] = base64.b64decode(cmd.split(" ")[2]).split(b"\0")
                self.reply("235 ok")
            elif verb == "MAIL":
                self.reply("250 ok")
            elif verb == "RCPT":
                got["rcpt"].append(cmd.split(":", 1)[1].strip("<> "))
                self.reply("250 ok")
            elif verb == "DATA":
                self.reply("354 go on")
                lines = []
                while (data := self.rfile.readline()) not in (b".\r\n", b""):
                    lines.append(data)
                got["data"] = b"".join(lines)
                self.server.mails.append(got)
                self.reply("250 queued")
            elif verb == "QUIT":
                self.reply("221 bye")
                return
            else:
                self.reply("250 ok")


@pytest.fixture
def smtp_server():
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), SmtpHandler)
    server.daemon_threads = True
    server.mails = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def test_alerts_are_mailed_to_the_admins_when_smtp_is_set(app, smtp_server):
    app.config.update(ALERTS_SYNC=True, SMTP_HOST="127.0.0.1", SMTP_PORT=smtp_server.server_address[1],
                      SMTP_USER="mailer", SMTP_PASSWORD="smtp-pass-XYZ", SMTP_FROM="gateway@example.com",
                      SMTP_STARTTLS=False)
    make_user(app, "admin@example.com", "admin")
    make_user(app, "viewer@example.com", "viewer")
    with app.app_context():
        key, plain = keys.create_key(EVIL, token_quota=10)
        key_id = key.id
        alert = alerts.crossed(app, f"key:{key_id}", PERIOD, 9, 90, kind="tokens", cap=10)[0]
        assert db.session.scalar(select(Alert.email_status).where(Alert.id == alert.id)) == "sent"
    mail = smtp_server.mails[0]
    assert mail["rcpt"] == ["admin@example.com"] and mail["auth"][1:] == [b"mailer", b"smtp-pass-XYZ"]
    msg = message_from_bytes(mail["data"])
    assert msg["From"] == "gateway@example.com" and "tokens alert" in msg["Subject"]
    text = msg.get_payload(decode=True).decode()
    assert "crossed 80% of its token quota: 9 of 10 tokens used (90%)" in text
    assert b"smtp-pass-XYZ" not in mail["data"] and plain.encode() not in mail["data"]
    # the setting's recipients instead of the admins; a dead server marks the alert failed
    with app.app_context():
        settings.put("alert_emails", "ops@example.com, oncall@example.com")
        alerts.crossed(app, f"key:{key_id}", PERIOD, 10, 100, kind="tokens", cap=10)
    assert smtp_server.mails[1]["rcpt"] == ["ops@example.com", "oncall@example.com"]
    smtp_server.shutdown()
    smtp_server.server_close()
    app.config["SMTP_PORT"] = smtp_server.server_address[1]
    with app.app_context():
        other, _ = keys.create_key("other", token_quota=10)
        failed = alerts.crossed(app, f"key:{other.id}", PERIOD, 9, 90, kind="tokens", cap=10)[0]
        assert db.session.scalar(select(Alert.email_status).where(Alert.id == failed.id)).startswith("failed: ")
