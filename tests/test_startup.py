"""First start: migrations, first admin, the demo provider and key, and the CLI."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine

from gateway import create_app
from gateway.bootstrap import bootstrap
from gateway.extensions import db
from tests.helpers import ROOT


def test_migrations_match_the_models(tmp_path):
    url = f"sqlite:///{tmp_path}/m.db"
    app = create_app({"SQLALCHEMY_DATABASE_URI": url, "DEMO": False}, instance_path=str(tmp_path))
    with app.app_context():
        bootstrap(out=lambda *_: None)
        with db.engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), db.metadata)
    assert diff == [], "models changed without a migration: run `flask db migrate`"


def test_first_start_prints_a_working_demo(tmp_path):
    app = create_app({"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path}/d.db"}, instance_path=str(tmp_path))
    lines: list[str] = []
    with app.app_context():
        bootstrap(out=lines.append)
        bootstrap(out=lines.append)         # a second start seeds nothing more
    text = "\n".join(lines)
    assert text.count("Created the first admin") == 1 and text.count("Demo key") == 1
    key = text.split("Demo key (shown once): ")[1].split()[0]
    r = app.test_client().post("/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                               json={"model": "demo-chat", "messages": [{"role": "user", "content": "Hello!"}]})
    assert r.status_code == 200 and r.json["choices"][0]["message"]["content"] == "Echo: Hello!"
    r = app.test_client().post("/v1/embeddings", headers={"Authorization": f"Bearer {key}"},
                               json={"model": "demo-embed", "input": "Hello!"})
    assert r.status_code == 200 and r.json["data"][0]["embedding"]


def test_demo_can_be_turned_off(tmp_path):
    app = create_app({"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path}/d.db", "DEMO": False},
                     instance_path=str(tmp_path))
    lines: list[str] = []
    with app.app_context():
        bootstrap(out=lines.append)
    assert not any("Demo key" in line for line in lines)


def run_cli(tmp_path, *args, env=None):
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path}/cli.db", "GATEWAY_DEMO": "0",
           "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", "flask", "--app", "app", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


def test_cli_is_idempotent_and_prints_the_secret_last(tmp_path):
    r = run_cli(tmp_path, "users", "create", "--email", "a@b.co", "--password", "secret-pass", "--role", "admin")
    assert r.returncode == 0, r.stderr
    r = run_cli(tmp_path, "users", "create", "--email", "a@b.co", "--password", "other-pass", "--role", "viewer")
    assert r.returncode == 0 and "viewer" in r.stdout
    args = ["providers", "add", "--name", "oa", "--kind", "openai", "--base-url", "https://api.openai.com/v1",
            "--api-key", "sk-live-abcdefgh1234", "--models", "gpt-4o-mini,gpt-4o"]
    assert run_cli(tmp_path, *args).returncode == 0
    r = run_cli(tmp_path, *args)
    assert r.returncode == 0 and "gpt-4o, gpt-4o-mini" in r.stdout
    r = run_cli(tmp_path, "providers", "list")
    assert "sk-live-abcdefgh1234" not in r.stdout and "1234" in r.stdout
    r = run_cli(tmp_path, "keys", "create", "--name", "ci", "--models", "gpt-4o-mini", "--expires", "2030-01-01")
    assert r.returncode == 0, r.stderr
    secret = r.stdout.strip().splitlines()[-1]
    assert secret.startswith("sk-gw-") and len(secret) > 40
    engine = create_engine(f"sqlite:///{tmp_path}/cli.db")
    with engine.connect() as conn:
        dump = "\n".join(str(row) for t in ("api_keys", "providers")
                         for row in conn.exec_driver_sql(f"select * from {t}"))
    assert secret not in dump and "sk-live-abcdefgh1234" not in dump


@pytest.mark.parametrize("url", ["http://169.254.169.254/v1", "file:///etc/passwd", "http://127.0.0.1:1/v1"])
def test_cli_refuses_unsafe_base_urls(tmp_path, url):
    r = run_cli(tmp_path, "providers", "add", "--name", "x", "--kind", "openai", "--base-url", url,
                "--api-key", "k", "--models", "m")
    assert r.returncode != 0 and "base URL refused" in r.stderr
