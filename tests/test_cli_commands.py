"""The CLI's user, key and provider verbs, and the audit trail every CLI change leaves."""
from __future__ import annotations

import getpass

import pytest
from sqlalchemy import select

from gateway.extensions import db
from gateway.models import ApiKey, AuditLog, Provider, User
from gateway.services.accounting import keys
from tests.console_client import PASSWORD, Console, csrf_from, make_user
from tests.helpers import add_provider, make_key

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def cli(app):
    """Run a CLI command in-process; returns click's Result."""
    runner = app.test_cli_runner()
    return lambda *args, input=None: runner.invoke(args=list(args), input=input)


def audit_rows(app) -> list[AuditLog]:
    with app.app_context():
        rows = db.session.scalars(select(AuditLog).order_by(AuditLog.id)).all()
        db.session.expunge_all()
        return rows


def prefix_of(secret: str) -> str:
    return secret[:keys.PREFIX_LEN]


def test_users_list_disable_enable(app, cli):
    make_user(app, "boss@example.com", "admin")
    make_user(app, "dev@example.com", "member")
    out = cli("users", "list")
    assert out.exit_code == 0, out.output
    assert [line.split("\t")[:3] for line in out.output.splitlines()] == [
        ["boss@example.com", "admin", "active"], ["dev@example.com", "member", "active"]]

    out = cli("users", "disable", "DEV@example.com")
    assert out.exit_code == 0 and "disabled" in out.output, out.output
    assert "dev@example.com\tmember\tdisabled" in cli("users", "list").output
    client = app.test_client()
    token = csrf_from(client.get("/login").text)
    r = client.post("/login", data={"email": "dev@example.com", "password": PASSWORD, "csrf_token": token})
    assert r.status_code != 302                      # a disabled user can't sign in

    assert cli("users", "enable", "dev@example.com").exit_code == 0
    Console(app, "dev@example.com")                  # signs in again (asserts the redirect)


def test_a_disabled_user_loses_an_open_session(sqlite_app):
    app = sqlite_app
    make_user(app, "boss@example.com", "admin")
    make_user(app, "dev@example.com", "member")
    c = Console(app, "dev@example.com")
    assert c.get("/keys").status_code == 200
    assert app.test_cli_runner().invoke(args=["users", "disable", "dev@example.com"]).exit_code == 0
    assert c.get("/keys").status_code in (302, 401)


def test_the_last_admin_cannot_be_disabled_or_deleted(app, cli):
    make_user(app, "boss@example.com", "admin")
    make_user(app, "viewer@example.com", "viewer")
    for args in (("users", "disable", "boss@example.com"), ("users", "delete", "boss@example.com", "--yes")):
        out = cli(*args)
        assert out.exit_code == 1 and "Error: the last admin" in out.output, out.output
    with app.app_context():
        assert db.session.scalar(select(User).where(User.email == "boss@example.com")).active
    assert cli("users", "disable", "nobody@example.com").output.strip() == "Error: No user nobody@example.com."
    make_user(app, "second@example.com", "admin")
    assert cli("users", "delete", "boss@example.com", "--yes").exit_code == 0
    assert "boss@example.com" not in cli("users", "list").output


def test_deleting_a_user_decides_about_their_keys(app, cli):
    make_user(app, "boss@example.com", "admin")
    make_user(app, "leaver@example.com", "member")
    make_user(app, "stayer@example.com", "member")
    add_provider(app, "up", "mock", None, ["m"])
    with app.app_context():
        leaver, stayer = (db.session.scalar(select(User.id).where(User.email == e))
                          for e in ("leaver@example.com", "stayer@example.com"))
    gone, kept = make_key(app, "gone", user_id=leaver), make_key(app, "kept", user_id=stayer)

    out = cli("users", "delete", "leaver@example.com", "--yes")
    assert out.exit_code == 1 and "owns 1 key(s) not revoked" in out.output, out.output
    out = cli("users", "delete", "leaver@example.com", "--keys", "revoke", input="n\n")
    assert out.exit_code == 1 and "Aborted" in out.output          # asked, and told no
    assert "leaver@example.com" in cli("users", "list").output

    out = cli("users", "delete", "leaver@example.com", "--keys", "revoke", "--yes")
    assert out.exit_code == 0 and "revoke: gone (" in out.output, out.output
    out = cli("users", "delete", "stayer@example.com", "--keys", "keep", "--yes")
    assert out.exit_code == 0, out.output
    client = app.test_client()
    assert client.post("/v1/chat/completions", json=CHAT,
                       headers={"Authorization": f"Bearer {gone}"}).status_code == 401
    assert client.post("/v1/chat/completions", json=CHAT,
                       headers={"Authorization": f"Bearer {kept}"}).status_code == 200
    with app.app_context():
        assert db.session.scalar(select(ApiKey).where(ApiKey.name == "kept")).user_id is None
    assert [r.details for r in audit_rows(app) if r.action == "user.delete"] == [
        {"role": "member", "their_keys": "revoke", "keys": [f"gone ({prefix_of(gone)}…)"]},
        {"role": "member", "their_keys": "keep", "keys": [f"kept ({prefix_of(kept)}…)"]}]


def test_keys_delete(app, cli):
    add_provider(app, "up", "mock", None, ["m"])
    secret = make_key(app, "doomed")
    client = app.test_client()
    auth = {"Authorization": f"Bearer {secret}"}
    assert client.post("/v1/chat/completions", json=CHAT, headers=auth).status_code == 200
    out = cli("keys", "delete", prefix_of(secret), input="n\n")
    assert out.exit_code == 1 and "Delete the key doomed" in out.output
    assert client.post("/v1/chat/completions", json=CHAT, headers=auth).status_code == 200
    out = cli("keys", "delete", prefix_of(secret), input="y\n")
    assert out.exit_code == 0 and "deleted doomed" in out.output, out.output
    r = client.post("/v1/chat/completions", json=CHAT, headers=auth)
    assert r.status_code == 401 and r.json["error"]["code"] == "invalid_api_key"
    assert cli("keys", "list").output == ""
    out = cli("keys", "delete", prefix_of(secret), "--yes")
    assert out.exit_code == 1 and "0 keys have the prefix" in out.output


def test_providers_delete(app, cli):
    add_provider(app, "up", "mock", None, ["m"])
    secret = make_key(app)
    out = cli("providers", "delete", "up", input="\n")                   # the default is no
    assert out.exit_code == 1 and "and its 1 deployment(s)?" in out.output
    out = cli("providers", "delete", "up", "-y")
    assert out.exit_code == 0 and out.output.strip() == "deleted provider up", out.output
    r = app.test_client().post("/v1/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {secret}"})
    assert r.status_code == 404 and r.json["error"]["code"] == "model_not_found"
    with app.app_context():
        assert db.session.scalar(select(Provider)) is None
    out = cli("providers", "delete", "up", "-y")
    assert out.exit_code == 1 and "Error: no provider named 'up'" in out.output


def test_a_provider_from_gateway_yaml_is_said_to_come_back(sqlite_app, tmp_path):
    cfg = tmp_path / "gateway.yaml"
    cfg.write_text("providers:\n  local: {kind: mock, api_key: mock-key-123456}\n")
    run = sqlite_app.test_cli_runner().invoke
    assert run(args=["config", "apply", str(cfg)]).exit_code == 0
    out = run(args=["providers", "delete", "local", "--yes"])
    assert out.exit_code == 0 and "the next apply brings it back" in out.output


def test_every_cli_change_is_audited_as_cli(app, cli, tmp_path):
    actor = f"cli:{getpass.getuser()}"
    steps = [
        (("users", "create", "--email", "ops@example.com", "--password", "pass-word-1", "--role", "admin"),
         "user.create"),
        (("users", "create", "--email", "ops@example.com", "--password", "pass-word-2", "--role", "admin"),
         "user.update"),
        (("users", "create", "--email", "dev@example.com", "--password", "pass-word-1"), "user.create"),
        (("users", "disable", "dev@example.com"), "user.deactivate"),
        (("users", "enable", "dev@example.com"), "user.activate"),
        (("providers", "add", "--name", "oa", "--kind", "openai", "--base-url", "https://api.openai.com/v1",
          "--api-key", "sk-live-abcdefgh1234", "--models", "gpt-4o-mini"), "provider.create"),
        (("providers", "add", "--name", "oa", "--kind", "openai", "--base-url", "https://eu.api.openai.com/v1",
          "--api-key", "sk-eu-key-abcdef123456"),
         "provider.update"),
        (("deployments", "add", "gpt-4o", "oa", "--weight", "2"), "deployment.save"),
        (("aliases", "set", "chat", "gpt-4o"), "alias.set"),
        (("aliases", "delete", "chat"), "alias.delete"),
        (("policies", "set", "eu", "--strategy", "cost", "--regions", "eu"), "policy.save"),
        (("teams", "create", "--name", "search", "--budget", "25"), "team.save"),
        (("teams", "plan", "--name", "pro", "--rpm", "60"), "plan.save"),
        (("teams", "tag-budget", "tenant=acme", "--budget", "5"), "tag_budget.save"),
        (("keys", "create", "--name", "svc", "--user", "dev@example.com", "--token-quota", "1000",
          "--expires", "2030-01-31"), "key.create"),
        (("keys", "reconcile",), "quota.reconcile"),
        (("usage", "rebuild-rollup",), "usage.rebuild_rollup"),
        (("providers", "delete", "oa", "--yes"), "provider.delete"),
        (("users", "delete", "dev@example.com", "--keys", "keep", "--yes"), "user.delete"),
    ]
    for args, action in steps:
        out = cli(*args)
        assert out.exit_code == 0, (args, out.output)
        row = audit_rows(app)[-1]
        assert (row.action, row.actor, row.source) == (action, actor, "cli"), args
    with app.app_context():
        prefix = db.session.scalar(select(ApiKey.prefix))
    for args, action in [(("keys", "update", prefix, "--rpm", "10"), "key.update"),
                         (("policies", "bind", prefix, "eu"), "key.update"),
                         (("keys", "rotate", prefix, "--grace", "0"), "key.rotate")]:
        assert cli(*args).exit_code == 0
        assert audit_rows(app)[-1].action == action
    with app.app_context():
        prefix = db.session.scalar(select(ApiKey.prefix))
    for args, action in [(("keys", "revoke", prefix), "key.revoke"), (("keys", "delete", prefix, "-y"), "key.delete")]:
        assert cli(*args).exit_code == 0
        assert audit_rows(app)[-1].action == action
    cfg = tmp_path / "gateway.yaml"
    cfg.write_text("aliases:\n  fast: policy:cost-optimized\n")     # gpt-4o went with oa
    assert cli("config", "apply", str(cfg)).exit_code == 0
    by_file, by_command = audit_rows(app)[-2:]
    assert (by_file.action, by_file.actor, by_file.source) == ("alias.create", "config", "config")
    assert (by_command.action, by_command.actor, by_command.source) == ("config.apply", actor, "cli")
    assert by_command.target == str(cfg) and by_command.details["aliases"] == 1

    rows = {r.action: r for r in audit_rows(app)}
    assert rows["provider.create"].details["base_url"] == "https://api.openai.com/v1"
    assert rows["provider.update"].details["base_url"] == "https://eu.api.openai.com/v1"
    assert rows["provider.delete"].details == {"kind": "openai", "base_url": "https://eu.api.openai.com/v1",
                                               "models": ["gpt-4o", "gpt-4o-mini"]}
    assert rows["key.create"].details["token_quota"] == 1000
    assert rows["key.create"].details["expires_at"] == "2030-01-31T00:00:00"
    # nothing the CLI only reads is audited
    n = len(audit_rows(app))
    for args in (("users", "list"), ("keys", "list"), ("providers", "list"), ("teams", "list")):
        assert cli(*args).exit_code == 0
    assert len(audit_rows(app)) == n


def test_no_secret_reaches_the_audit_trail(app, cli):
    secrets = ["sk-live-abcdefgh1234", "AIzaSyD-gemini-key-5678", "pass-word-secret", "whsec-topsecret-9",
               "T000/B000/slackpathsecret", "k-123456789", "tok-secret-42"]
    steps = [
        ("users", "create", "--email", "ops@example.com", "--password", "pass-word-secret", "--role", "admin"),
        ("providers", "add", "--name", "oa", "--kind", "openai", "--base-url", "https://api.openai.com/v1",
         "--api-key", "sk-live-abcdefgh1234", "--models", "m"),
        ("providers", "add", "--name", "g", "--kind", "gemini", "--api-key", "AIzaSyD-gemini-key-5678",
         "--models", "gemini-2.0-flash"),
        ("providers", "add", "--name", "proxy", "--kind", "openai", "--api-key", "k-123456789",
         "--base-url", "http://127.0.0.1:9/v1?api_key=sk-live-abcdefgh1234&x-goog-token=tok-secret-42"),
        ("teams", "create", "--name", "search", "--webhook-url",
         "https://hooks.slack.com/services/T000/B000/slackpathsecret", "--webhook-secret", "whsec-topsecret-9"),
        ("teams", "tag-budget", "tenant=acme", "--budget", "5", "--webhook-secret", "whsec-topsecret-9"),
        ("keys", "create", "--name", "svc"),
    ]
    for args in steps:
        out = cli(*args)
        assert out.exit_code == 0, (args, out.output)
    secrets.append(out.output.strip().splitlines()[-1])         # the new virtual key
    rows = audit_rows(app)
    assert len(rows) == len(steps)
    dump = "\n".join(f"{r.actor} {r.action} {r.target} {r.details}" for r in rows)
    for secret in secrets:
        assert secret not in dump
    proxy = next(r for r in rows if r.target == "proxy")
    assert proxy.details["base_url"] == "http://127.0.0.1:9/v1?api_key=[redacted]&x-goog-token=[redacted]"
    team = next(r for r in rows if r.action == "team.save")
    assert team.details["webhook_host"] == "hooks.slack.com" and team.details["webhook_signing"] == "changed"


def test_the_audit_page_shows_and_filters_the_source(sqlite_app):
    app = sqlite_app
    make_user(app, "boss@example.com", "admin")
    assert app.test_cli_runner().invoke(args=["aliases", "set", "chat", "policy:cost-optimized"]).exit_code == 0
    c = Console(app, "boss@example.com")
    assert c.post("/settings", {"monthly_budget_usd": "50"}).status_code == 200
    page = c.get("/audit").text
    assert f"cli:{getpass.getuser()}" in page and "<td>cli</td>" in page and "<td>console</td>" in page
    only_cli = c.get("/audit?source=cli", headers={"HX-Request": "true"}).text
    assert "alias.set" in only_cli and "settings.update" not in only_cli
    assert "settings.update" in c.get("/audit?source=console").text
    assert "alias.set" in c.get("/audit?source=bogus").text          # an unknown source: no filter


def test_scrub_hides_credentials_in_urls_and_keeps_what_is_harmless():
    from gateway.services.admin.audit import scrub
    assert scrub({"base_url": "https://bob:hunter2@llm.example.com/v1?key=AIza123&region=eu",
                  "api_key": "anything", "webhook_secret": "x", "token_quota": 5, "key_changed": True,
                  "keys": ["svc (sk-gw-AbCdEfGh…)"], "note": "sk-gw-AbCdEfGhIjKlMnOp and sk-proj-abcdefgh"}) == {
        "base_url": "https://[redacted]@llm.example.com/v1?key=[redacted]&region=eu",
        "api_key": "[redacted]", "webhook_secret": "[redacted]", "token_quota": 5, "key_changed": True,
        "keys": ["svc (sk-gw-AbCdEfGh…)"], "note": "[redacted] and [redacted]"}


def test_console_and_cli_audit_a_provider_delete_alike(sqlite_app):
    app = sqlite_app
    make_user(app, "boss@example.com", "admin")
    add_provider(app, "one", "mock", None, ["m"])
    add_provider(app, "two", "mock", None, ["m"])
    with app.app_context():
        one = db.session.scalar(select(Provider.id).where(Provider.name == "one"))
    c = Console(app, "boss@example.com")
    assert c.post(f"/providers/{one}/toggle").status_code == 303
    assert c.post(f"/providers/{one}/delete").status_code == 303
    assert app.test_cli_runner().invoke(args=["providers", "delete", "two", "--yes"]).exit_code == 0
    rows = [r for r in audit_rows(app) if r.action.startswith("provider.")]
    assert [(r.action, r.source) for r in rows] == [
        ("provider.disable", "console"), ("provider.delete", "console"), ("provider.delete", "cli")]
    assert rows[0].details == {"base_url": "mock://local/v1"}
    assert rows[1].details == {"kind": "mock", "base_url": "mock://local/v1", "models": ["m"]}
    assert rows[2].details == rows[1].details
