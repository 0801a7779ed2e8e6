"""A stored provider key only goes to the base URL it was saved with: sending it elsewhere takes
the key again, in the console (save and Test connection), the CLI and gateway.yaml."""
from __future__ import annotations

import pytest
from sqlalchemy import select

from console_client import Console, make_user
from gateway import secrets
from gateway.extensions import db
from gateway.models import AuditLog, Provider
from gateway.services.admin import declarative
from tests.helpers import Listener, add_provider

KEY = "sk-stored-provider-key-9z8y"


@pytest.fixture
def stored(sqlite_app, mock):
    """An admin's console and a saved provider with a key, on the mock upstream."""
    make_user(sqlite_app, "admin@example.com", "admin")
    sqlite_app.config["PROBE_TIMEOUT_SECONDS"] = 0.5
    add_provider(sqlite_app, "byok", "openai", mock + "/v1", ["echo"], api_key=KEY)
    with sqlite_app.app_context():
        pid = db.session.scalar(select(Provider.id).where(Provider.name == "byok"))
    return Console(sqlite_app, "admin@example.com"), pid


@pytest.fixture
def elsewhere():
    listener = Listener()
    yield listener
    listener.close()


def test_test_connection_does_not_send_the_stored_key_to_a_new_url(sqlite_app, stored, elsewhere):
    c, pid = stored
    r = c.post("/providers/test", {"provider_id": str(pid), "kind": "openai", "base_url": elsewhere.url + "/v1",
                                   "api_key": "", "models": "echo"}, htmx=True)
    assert r.status_code == 200 and "enter the provider&#39;s API key again" in r.text
    assert '<span id="api-key-test-error" hx-swap-oob="true" class="field-error"' in r.text   # next to the field
    assert elsewhere.accepted == 0
    with sqlite_app.app_context():
        [row] = db.session.scalars(select(AuditLog).where(AuditLog.action == "provider.test")).all()
        assert row.details["base_url"] == elsewhere.url + "/v1" and row.details["outcome"] == "invalid"
        assert KEY not in str(row.details)


def test_test_connection_with_the_stored_url_uses_the_stored_key(sqlite_app, stored, mock):
    c, pid = stored
    r = c.post("/providers/test", {"provider_id": str(pid), "kind": "openai", "base_url": mock + "/v1/",
                                   "api_key": "", "models": "echo"}, htmx=True)
    assert "Connected" in r.text
    with sqlite_app.app_context():
        [row] = db.session.scalars(select(AuditLog).where(AuditLog.action == "provider.test")).all()
        assert row.details["base_url"] == mock + "/v1/" and row.details["outcome"] == "connected"


def test_test_connection_with_a_new_url_and_a_new_key_goes_there(sqlite_app, stored, elsewhere):
    c, pid = stored
    r = c.post("/providers/test", {"provider_id": str(pid), "kind": "openai", "base_url": elsewhere.url + "/v1",
                                   "api_key": "sk-typed-again-123456", "models": "echo"}, htmx=True)
    assert "Could not reach the provider" in r.text
    assert elsewhere.accepted == 1


def test_saving_a_new_url_without_the_key_is_refused_next_to_the_field(sqlite_app, stored, elsewhere):
    c, pid = stored
    form = {"kind": "openai", "base_url": elsewhere.url + "/v1", "api_key": ""}
    r = c.post(f"/providers/{pid}", form)
    assert r.status_code == 422 and 'class="field-error"' in r.text and "API key again" in r.text
    with sqlite_app.app_context():
        p = db.session.get(Provider, pid)
        assert p.base_url.endswith("/v1") and elsewhere.url not in p.base_url
    assert c.post(f"/providers/{pid}", dict(form, api_key="sk-new-key-abcdef123")).status_code == 303
    with sqlite_app.app_context():
        p = db.session.get(Provider, pid)
        assert p.base_url == elsewhere.url + "/v1" and secrets.decrypt(p.api_key_enc) == "sk-new-key-abcdef123"
        audit = db.session.scalars(select(AuditLog).where(AuditLog.action == "provider.update")).one()
        assert audit.details["base_url"] == elsewhere.url + "/v1" and audit.details["previous_base_url"]


def test_cli_refuses_a_new_base_url_without_a_key(sqlite_app, mock, monkeypatch):
    monkeypatch.delenv("PROVIDER_API_KEY", raising=False)
    run = sqlite_app.test_cli_runner().invoke
    add = ["providers", "add", "--name", "up", "--kind", "openai", "--models", "echo"]
    assert run(args=add + ["--base-url", mock + "/v1", "--api-key", KEY]).exit_code == 0
    assert run(args=add + ["--base-url", mock + "/v1"]).exit_code == 0          # same URL: key kept
    out = run(args=add + ["--base-url", "http://127.0.0.1:9/v1"])
    assert out.exit_code == 1 and "API key again" in out.output
    out = run(args=add)         # no --base-url: the vendor's default, another host
    assert out.exit_code == 1 and "api.openai.com" in out.output
    with sqlite_app.app_context():
        assert db.session.scalar(select(Provider.base_url)) == mock + "/v1"
    assert run(args=add + ["--base-url", "http://127.0.0.1:9/v1", "--api-key", "sk-other-123456"]).exit_code == 0


def test_gateway_yaml_needs_the_key_with_a_new_base_url(sqlite_app, mock, tmp_path, monkeypatch):
    monkeypatch.setenv("TEST_BYOK_KEY", KEY)
    path = tmp_path / "gateway.yaml"
    path.write_text(f"providers:\n  up: {{kind: openai, base_url: '{mock}/v1', api_key_env: TEST_BYOK_KEY}}\n")
    with sqlite_app.app_context():
        declarative.apply_file(path, out=lambda s: None)
        path.write_text("providers:\n  up: {kind: openai, base_url: 'http://127.0.0.1:9/v1'}\n")
        with pytest.raises(declarative.ConfigError, match=r"providers\.up: .*API key again"):
            declarative.apply_file(path, out=lambda s: None)
        db.session.rollback()
        assert db.session.scalar(select(Provider.base_url)) == mock + "/v1"
        path.write_text("providers:\n  up: {kind: openai, base_url: 'http://127.0.0.1:9/v1', "
                        "api_key_env: TEST_BYOK_KEY}\n")
        declarative.apply_file(path, out=lambda s: None)
        assert db.session.scalar(select(Provider.base_url)) == "http://127.0.0.1:9/v1"
