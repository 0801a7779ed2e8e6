"""The audit trail: readable details (values and key prefixes) with secrets scrubbed by field
name and by value shape, every source, the page's filters, and its CSV/xlsx export."""
from __future__ import annotations

import csv
import getpass
import io
from datetime import datetime

import openpyxl
import pytest
from console_client import Console, make_user
from sqlalchemy import select

from gateway.extensions import db
from gateway.models import AuditLog
from gateway.services.admin import audit
from gateway.services.admin.audit import scrub
from tests.helpers import make_key

EVIL = "<script>alert(1)</script>"
ADMIN = "boss@example.com"


def test_scrub_by_field_name_hides_secrets_and_keeps_limits_and_flags():
    assert scrub({"api_key": "anything", "password": "hunter2", "webhook_secret": "x", "client_secret": 12345,
                  "access_token": "t", "token": "t2", "session_key": "k", "Authorization": "Basic abc",
                  "password_changed": True, "key_changed": False, "webhook_signing": "changed",
                  "token_quota": 5000, "budget_usd": 2.5, "max_tokens": 100, "tokens": 7, "tpm": 10_000,
                  "key_id": 4, "prefixes": ["sk-gw-AbCdEfGh"], "keys": ["svc (sk-gw-AbCdEfGh…)"],
                  "old_prefix": "sk-gw-ZyXwVuTs", "models": ["gpt-4o-mini"], "api_key_env": None}) == {
        "api_key": "[redacted]", "password": "[redacted]", "webhook_secret": "[redacted]",
        "client_secret": "[redacted]", "access_token": "[redacted]", "token": "[redacted]",
        "session_key": "[redacted]", "Authorization": "[redacted]",
        "password_changed": True, "key_changed": False, "webhook_signing": "changed",
        "token_quota": 5000, "budget_usd": 2.5, "max_tokens": 100, "tokens": 7, "tpm": 10_000,
        "key_id": 4, "prefixes": ["sk-gw-AbCdEfGh"], "keys": ["svc (sk-gw-AbCdEfGh…)"],
        "old_prefix": "sk-gw-ZyXwVuTs", "models": ["gpt-4o-mini"], "api_key_env": None}


@pytest.mark.parametrize("secret", [
    "sk-proj-abcdefgh12345678", "sk-ant-api03-AbCdEf123456", "sk-gw-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789abc",
    "AIzaSyD-gemini-key-5678abcd", "AKIAIOSFODNN7EXAMPLE", "ghp_abcdefghijklmnopqrstuvwx12",
    "xoxb-123456-abcdef-XYZ", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjMifQ.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
    "q7Vb2XkP9mZr4TnW8sYc3LdF6hJa",         # a random token of no known shape
])
def test_scrub_by_value_hides_secret_looking_text_wherever_it_is(secret):
    for where in ({"note": f"rotated {secret} today"}, {"items": [f"x {secret}"]}, {"nested": {"n": secret}}):
        assert secret not in str(scrub(where))
        assert "[redacted]" in str(scrub(where))


def test_scrub_keeps_what_is_harmless():
    harmless = ["svc (sk-gw-AbCdEfGh…)", "sk-gw-AbCdEfGh", "anthropic.claude-3-5-sonnet-20240620-v1:0",
                "gpt-4o-mini-2024-07-18", "2030-01-31T00:00:00", "ops@example.com", "https://api.openai.com/v1",
                "team red", "10.0.0.0/8", "cheapest", "policy:latency-optimized"]
    assert scrub({"values": harmless}) == {"values": harmless}
    assert scrub({"url": "https://bob:pw@h.example/v1?api_key=AIza1&region=eu", "auth": "Bearer abc.def-ghi"}) == {
        "url": "https://[redacted]@h.example/v1?api_key=[redacted]&region=eu", "auth": "Bearer [redacted]"}


@pytest.fixture
def trail(sqlite_app):
    """An admin, a member, a viewer, and audit rows from every source."""
    app = sqlite_app
    make_user(app, ADMIN, "admin")
    make_user(app, "member@example.com", "member")
    make_user(app, "viewer@example.com", "viewer")
    with app.app_context():
        audit.record("cli:ops", "alias.set", "chat", {"target": "gpt-4o"}, source="cli")
        audit.record("config", "provider.create", "openai", {"base_url": "https://api.openai.com/v1"}, source="config")
        audit.record("api:svc", "key.update", "svc (sk-gw-AbCdEfGh…)", {"token_quota": 10}, source="api")
        audit.record(None, "key.batch_quota", "2 keys", {"prefixes": ["sk-gw-AbCdEfGh", "sk-gw-ZyXwVuTs"],
                                                          "token_quota": 5000, "skipped": {}})
        audit.record(None, "team.save", f"=HYPERLINK(\"http://evil\") {EVIL}", {"note": "-2+3"})
        old = audit.record(None, "user.create", "old@example.com", {"role": "member"})
        old.at = datetime(2025, 1, 15, 12, 0)
        db.session.commit()
    return app


def rows_of(html: str) -> int:
    return html.split('<tbody>')[1].count("<tr>")


def test_the_page_shows_values_and_prefixes_and_escapes(trail):
    c = Console(trail, ADMIN)
    page = c.get("/audit").text
    assert "prefixes: sk-gw-AbCdEfGh, sk-gw-ZyXwVuTs" in page and "token_quota: 5000" in page
    assert "[redacted]" not in page
    assert EVIL not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    for source in ("console", "cli", "config", "api"):
        assert f"<td>{source}</td>" in page


@pytest.mark.parametrize("query, expected", [
    ("action=key", 2), ("actor=cli:ops", 1), ("source=config", 1), ("source=api", 1), ("source=bogus", 7),
    ("target=sk-gw-AbCd", 1), ("start=2025-01-01&end=2025-01-31", 1), ("end=2025-01-15", 1),
    ("end=2025-01-14", 0), ("start=2026-01-01", 6), ("start=garbage", 7), ("action=key&source=api", 1),
])
def test_the_page_filters(trail, query, expected):
    """Six rows seeded, plus the admin's own sign-in (auth.login, console)."""
    c = Console(trail, ADMIN)
    html = c.get(f"/audit?{query}", headers={"HX-Request": "true"}).text
    assert "<html" not in html and 'id="audit-rows"' in html
    assert (rows_of(html) if "No entries match" not in html and "Nothing recorded" not in html else 0) == expected


def test_export_csv_and_xlsx_of_the_filtered_trail_are_formula_safe(trail):
    c = Console(trail, ADMIN)
    page = c.get("/audit?action=team").text
    assert 'href="/audit/export.csv?action=team"' in page and 'hx-boost="false"' in page
    r = c.get("/audit/export.csv?action=team")
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/csv")
    assert r.headers["Content-Disposition"].startswith('attachment; filename="audit-')
    rows = list(csv.reader(io.StringIO(r.data.decode("utf-8-sig"))))
    assert rows[0] == ["Time (UTC)", "Actor", "Source", "Action", "Target", "Details", "IP"]
    assert len(rows) == 2 and rows[1][3] == "team.save"
    assert rows[1][4].startswith("'=HYPERLINK")            # neutralised, not a formula
    assert rows[1][5] == "note: -2+3"
    everything = list(csv.reader(io.StringIO(c.get("/audit/export.csv").data.decode("utf-8-sig"))))
    assert len(everything) == 1 + 7         # the header, six seeded rows and the sign-in
    assert "prefixes: sk-gw-AbCdEfGh, sk-gw-ZyXwVuTs; token_quota: 5000; skipped: none" in {r[5] for r in everything}
    x = c.get("/audit/export.xlsx?source=config")
    assert x.status_code == 200 and "spreadsheetml" in x.headers["Content-Type"]
    ws = openpyxl.load_workbook(io.BytesIO(x.data)).active
    values = [[cell.value for cell in row] for row in ws.iter_rows()]
    assert values[0][:5] == ["Time (UTC)", "Actor", "Source", "Action", "Target"] and len(values) == 2
    assert values[1][1:5] == ["config", "config", "provider.create", "openai"]
    assert isinstance(values[1][0], datetime)
    team = openpyxl.load_workbook(io.BytesIO(c.get("/audit/export.xlsx?action=team").data)).active
    assert team.cell(2, 5).data_type == "s" and team.cell(2, 5).value.startswith("'=HYPERLINK")
    assert c.get("/audit/export.pdf").status_code == 404


def test_only_admins_see_or_export_the_audit(trail):
    for email in ("member@example.com", "viewer@example.com"):
        c = Console(trail, email)
        for url in ("/audit", "/audit/export.csv", "/audit/export.xlsx"):
            assert c.get(url).status_code == 403, (email, url)
    anon = trail.test_client()
    for url in ("/audit", "/audit/export.csv"):
        r = anon.get(url)
        assert r.status_code == 302 and "/login" in r.headers["Location"]


def test_cli_changes_outside_the_catalogue_are_audited_too(sqlite_app):
    runner = sqlite_app.test_cli_runner()
    assert runner.invoke(args=["usage", "purge", "--older-than", "90d"]).exit_code == 0
    with sqlite_app.app_context():
        row = db.session.scalars(select(AuditLog).order_by(AuditLog.id.desc())).first()
        assert (row.action, row.source, row.actor) == ("usage.purge", "cli", f"cli:{getpass.getuser()}")
        assert row.details["older_than_days"] == 90 and row.details["prompts_only"] is False


def test_a_console_batch_is_audited_readably_end_to_end(sqlite_app):
    from gateway.models import ApiKey
    make_user(sqlite_app, ADMIN, "admin")
    make_key(sqlite_app, "a")
    make_key(sqlite_app, "b")
    with sqlite_app.app_context():
        ids = {k.prefix: str(k.id) for k in db.session.scalars(select(ApiKey))}
    c = Console(sqlite_app, ADMIN)
    assert c.post("/keys/batch", {"ids": list(ids.values()), "action": "quota", "token_quota": "750"}).status_code == 303
    html = c.get("/audit?action=key.batch", headers={"HX-Request": "true"}).text
    assert "token_quota: 750" in html and all(p in html for p in ids) and "[redacted]" not in html


def test_first_start_seeding_is_audited_as_configuration(sqlite_app, monkeypatch):
    from gateway import bootstrap
    monkeypatch.setenv("GATEWAY_ADMIN_EMAIL", "first@example.com")
    monkeypatch.setenv("GATEWAY_ADMIN_PASSWORD", "a-long-password-9")
    sqlite_app.config["DEMO"] = True
    with sqlite_app.app_context():
        bootstrap.ensure_admin(out=lambda s: None)
        printed = []
        bootstrap.seed_demo(out=printed.append)
        rows = db.session.scalars(select(AuditLog).order_by(AuditLog.id)).all()
        assert [(r.actor, r.source, r.action, r.target) for r in rows] == [
            ("bootstrap", "config", "user.create", "first@example.com"), ("bootstrap", "config", "demo.seed", "demo (mock)")]
        assert rows[0].details == {"role": "admin", "password_generated": False}
        secret = next(line for line in printed if line.startswith("Demo key")).split()[-1]
        assert rows[1].details["key_prefix"] == secret[:14] and secret not in str(rows[1].details)
        assert "a-long-password-9" not in str([r.details for r in rows])


def test_a_restore_is_audited_in_the_restored_database(tmp_path):
    from tests.helpers import migrated_app
    app = migrated_app(f"sqlite:///{tmp_path}/g.db", instance_path=str(tmp_path / "i"))
    make_key(app, "kept")
    runner = app.test_cli_runner()
    assert runner.invoke(args=["backup", str(tmp_path / "b.db")]).exit_code == 0
    out = runner.invoke(args=["restore", str(tmp_path / "b.db"), "--force"])
    assert out.exit_code == 0, out.output
    with app.app_context():
        row = db.session.scalars(select(AuditLog).order_by(AuditLog.id.desc())).first()
        assert (row.action, row.source, row.target) == ("database.restore", "cli", str(tmp_path / "b.db"))
        assert ".before-restore-" in row.details["replaced_copy"]
        db.engine.dispose()
