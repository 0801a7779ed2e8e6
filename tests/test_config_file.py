"""GATEWAY_CONFIG: a YAML file applied idempotently, keys from the environment, rows marked."""
from __future__ import annotations

import pytest
from sqlalchemy import func, select

from gateway.extensions import db
from gateway.models import Alias, AuditLog, Deployment, Policy, Provider
from gateway import secrets
from gateway.services.admin import declarative
from gateway.services.admin import catalog_admin
from gateway.services.routing import catalog
from tests.helpers import make_key

CONFIG = """
providers:
  openai-eu:
    kind: openai
    base_url: https://api.openai.com/v1
    api_key_env: TEST_OPENAI_EU_KEY
    region: eu-west-1
  local:
    kind: mock
    api_key: ${TEST_MOCK_KEY:-mock-key-123456}
models:
  gpt-4o-mini:
    deployments:
      - provider: openai-eu
        upstream: gpt-4o-mini
        input_per_1k: 0.00015
        output_per_1k: 0.0006
        context_window: 128000
        capabilities: [tools, vision, json]
        weight: 2
        rpm: 500
        tpm: 200000
      - provider: local
        upstream: echo
        region: eu-central-1
aliases:
  chat-default: policy:eu-cheap
policies:
  eu-cheap:
    strategy: cost
    candidates: [gpt-4o-mini]
    regions: [eu]
    capabilities: [tools]
    ab: {model: gpt-4o-mini, percent: 10}
"""


@pytest.fixture
def cfg(tmp_path, monkeypatch):
    monkeypatch.setenv("TEST_OPENAI_EU_KEY", "sk-from-env-abcdef123456")
    path = tmp_path / "gateway.yaml"
    path.write_text(CONFIG)
    return path


def counts():
    return tuple(db.session.scalar(select(func.count()).select_from(m))
                 for m in (Provider, Deployment, Alias, Policy))


def test_applies_and_marks_rows(app, cfg):
    with app.app_context():
        summary = declarative.apply_file(cfg, out=lambda s: None)
        assert summary["providers"] == 2 and summary["deployments"] == 2
        p = db.session.scalar(select(Provider).where(Provider.name == "openai-eu"))
        assert p.source == "config" and p.region == "eu-west-1"
        assert secrets.decrypt(p.api_key_enc) == "sk-from-env-abcdef123456"
        d = db.session.scalar(select(Deployment).where(Deployment.provider_id == p.id))
        assert (d.source, d.weight, d.rpm_limit, d.tpm_limit, d.context_window) == ("config", 2, 500, 200000, 128000)
        assert d.capabilities == ["json", "tools", "vision"] and d.input_per_1k == 0.00015
        assert db.session.scalar(select(Alias)).target == "policy:eu-cheap"
        pol = db.session.scalar(select(Policy))
        assert pol.strategy == "cost" and pol.regions == ["eu"] and pol.source == "config"
        snap = catalog.catalog().snapshot()
        assert snap.aliases["chat-default"] == "policy:eu-cheap"
        [local] = [r for r in snap.routes["gpt-4o-mini"] if r.provider == "local"]
        assert local.region == "eu-central-1"


def test_is_idempotent_and_prunes_what_the_file_dropped(app, cfg):
    with app.app_context():
        catalog_admin.save_provider("manual", "mock", models=["hand-made"], api_key="k-123456789")
        declarative.apply_file(cfg, out=lambda s: None)
        first = counts()
        declarative.apply_file(cfg, out=lambda s: None)
        assert counts() == first
        cfg.write_text(CONFIG.replace("""      - provider: local
        upstream: echo
        region: eu-central-1
""", "").replace("  local:\n    kind: mock\n    api_key: ${TEST_MOCK_KEY:-mock-key-123456}\n", ""))
        summary = declarative.apply_file(cfg, out=lambda s: None)
        assert summary["removed"] == 2
        names = set(db.session.scalars(select(Provider.name)))
        assert names == {"openai-eu", "manual"}     # rows not from the file are left alone


def config_audit() -> list[tuple[str, str, dict]]:
    rows = db.session.scalars(select(AuditLog).order_by(AuditLog.id)).all()
    assert all((r.actor, r.source) == ("config", "config") for r in rows)
    return [(r.action, r.target, r.details) for r in rows]


def test_changes_are_audited_and_a_no_op_apply_is_not(app, cfg, monkeypatch):
    with app.app_context():
        declarative.apply_file(cfg, out=lambda s: None)
        first = config_audit()
        assert [(a, t) for a, t, _ in first] == [
            ("provider.create", "openai-eu"), ("provider.create", "local"),
            ("deployment.create", "openai-eu/gpt-4o-mini"), ("deployment.create", "local/gpt-4o-mini"),
            ("policy.create", "eu-cheap"), ("alias.create", "chat-default")]     # the alias names the policy
        created = first[0][2]
        assert created["base_url"] == "https://api.openai.com/v1" and created["key_changed"] is True
        assert created["region"] == "eu-west-1" and created["source"] == "config"
        assert first[2][2]["weight"] == 2 and first[2][2]["capabilities"] == ["json", "tools", "vision"]

        declarative.apply_file(cfg, out=lambda s: None)
        assert config_audit() == first                   # nothing changed, nothing said

        monkeypatch.setenv("TEST_OPENAI_EU_KEY", "sk-rotated-key-654321")
        cfg.write_text(CONFIG.replace("weight: 2", "weight: 5").replace(
            "aliases:\n  chat-default: policy:eu-cheap\n", ""))
        declarative.apply_file(cfg, out=lambda s: None)
        later = config_audit()[len(first):]
        assert later == [
            ("provider.update", "openai-eu", {"key_changed": True, "base_url": "https://api.openai.com/v1"}),
            ("deployment.update", "openai-eu/gpt-4o-mini", {"weight": [2, 5], "deployment_id": later[1][2]["deployment_id"]}),
            ("alias.delete", "chat-default", {})]
        dump = repr(config_audit())
        assert "sk-from-env-abcdef123456" not in dump and "sk-rotated-key-654321" not in dump
        assert "mock-key-123456" not in dump


def test_missing_env_key_fails_loudly(app, cfg, monkeypatch):
    monkeypatch.delenv("TEST_OPENAI_EU_KEY")
    with app.app_context(), pytest.raises(declarative.ConfigError, match="TEST_OPENAI_EU_KEY"):
        declarative.apply_file(cfg, out=lambda s: None)


@pytest.mark.parametrize("text,match", [
    ("- a\n- b\n", "top level"),
    ("nonsense: 1\n", "unknown section"),
    ("providers:\n  x: {kind: mock, colour: red}\n", "unknown key"),
    ("models:\n  m: {deployments: []}\n", "deployments"),
    ("models:\n  m: {deployments: [{provider: ghost}]}\n", "no provider named"),
    ("policies:\n  p: {strategy: fastest}\n", "strategy"),
    ("providers: [1, 2]\n", "needs a name"),
    ("a: [\n", "not valid YAML"),
])
def test_invalid_files_say_where(app, tmp_path, text, match):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with app.app_context(), pytest.raises(declarative.ConfigError, match=match):
        declarative.apply_file(path, out=lambda s: None)


def test_applied_at_start_and_served(sqlite_app, tmp_path, monkeypatch):
    path = tmp_path / "gateway.yaml"
    path.write_text("""
providers:
  local: {kind: mock, api_key: mock-key-123456}
models:
  chat-a: {deployments: [{provider: local, upstream: echo}]}
aliases:
  chat-default: chat-a
""")
    monkeypatch.setenv("GATEWAY_CONFIG", str(path))
    with sqlite_app.app_context():
        declarative.apply_from_env(out=lambda s: None)
    key = make_key(sqlite_app)
    r = sqlite_app.test_client().post("/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                                      json={"model": "chat-default", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200 and r.headers["x-gateway-deployment"] == "local/echo"
