"""The `gateway` command itself: version, quiet output, which commands it offers, start-up."""
from __future__ import annotations

import os
import subprocess
import sys
from importlib import metadata

from sqlalchemy import text

from gateway.database import schema_is_current, upgrade_schema
from gateway.extensions import db
from tests.helpers import ROOT, run_gateway


def test_version_comes_from_the_package_metadata(tmp_path):
    r = run_gateway(f"sqlite:///{tmp_path}/v.db", "--version")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"gateway {metadata.version('gateway')}"
    assert not (tmp_path / "v.db").exists()         # no app, no database for --version


def test_commands_are_quiet_unless_verbose(tmp_path):
    url = f"sqlite:///{tmp_path}/q.db"
    r = run_gateway(url, "keys", "list")            # a fresh database: the migrations run
    assert r.returncode == 0, r.stderr
    assert r.stderr == "" and r.stdout == ""
    r = run_gateway(url, "users", "list")
    assert r.returncode == 0 and r.stderr == ""
    fresh = run_gateway(f"sqlite:///{tmp_path}/v.db", "-v", "keys", "list")
    assert fresh.returncode == 0 and "Running upgrade  -> 0001" in fresh.stderr
    current = run_gateway(url, "--verbose", "keys", "list")
    assert current.returncode == 0 and "no migration to apply" in current.stderr


def test_flask_development_commands_are_not_offered(tmp_path):
    url = f"sqlite:///{tmp_path}/h.db"
    r = run_gateway(url, "--help")
    assert r.returncode == 0, r.stderr
    listed = r.stdout.split("Commands:")[1].split()
    for name in ("keys", "providers", "users", "serve", "bootstrap"):
        assert name in listed
    for name in ("run", "shell", "routes", "db"):
        assert name not in listed
        r = run_gateway(url, name)
        assert r.returncode == 2 and f"No such command '{name}'" in r.stderr
    assert "--app" not in r.stdout and "--env-file" not in r.stdout


def test_a_command_on_a_current_schema_does_not_load_alembic(tmp_path):
    url = f"sqlite:///{tmp_path}/a.db"
    report = "print('alembic loaded' if 'alembic' in sys.modules else 'no alembic')"
    r = run_gateway(url, "keys", "list", after=report)
    assert r.returncode == 0 and "alembic loaded" in r.stdout, r.stderr     # it migrated
    r = run_gateway(url, "keys", "list", after=report)
    assert r.returncode == 0 and "no alembic" in r.stdout, r.stderr
    r = run_gateway(url, "--help", after=report)
    assert r.returncode == 0 and "no alembic" in r.stdout


def test_flask_db_commands_still_work_for_developers(tmp_path):
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path}/f.db", "GATEWAY_DEMO": "0",
           "PYTHONPATH": str(ROOT)}

    def flask_db(*args):
        return subprocess.run([sys.executable, "-m", "flask", "--app", "app", "db", *args], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=120)
    r = flask_db("upgrade")
    assert r.returncode == 0 and "Running upgrade  -> 0001" in r.stderr, r.stderr
    r = flask_db("current")
    assert r.returncode == 0 and "(head)" in r.stdout, r.stderr + r.stdout


def test_schema_is_current_only_at_every_head(app):
    with app.app_context():
        db.drop_all()
        try:
            assert not schema_is_current()                  # no version table
            upgrade_schema()
            assert schema_is_current()
            db.session.execute(text("UPDATE alembic_version SET version_num = 'older'"))
            db.session.commit()
            assert not schema_is_current()
        finally:
            db.session.execute(text("DROP TABLE IF EXISTS alembic_version"))
            db.session.commit()
