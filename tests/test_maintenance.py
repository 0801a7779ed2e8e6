"""`gateway doctor`, `gateway backup` and `gateway restore`, run through the app's own CLI."""
from __future__ import annotations

import sqlite3

import requests
from cryptography.fernet import Fernet
from sqlalchemy import func, select

from gateway import create_app
from gateway.database import upgrade_schema, schema_revisions
from gateway.extensions import db
from gateway.models import ApiKey, Provider
from tests.helpers import TEST_CONFIG, add_provider, make_key, migrated_app

UPSTREAM_KEY = "sk-upstream-secret-123456"


def run(app, *args):
    return app.test_cli_runner().invoke(args=list(args))


def chat(app, key):
    return app.test_client().post("/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                                  json={"model": "echo", "messages": [{"role": "user", "content": "hi"}]})


def test_doctor_passes_a_healthy_install_and_probes_each_provider(tmp_path, mock):
    app = migrated_app(f"sqlite:///{tmp_path}/g.db", instance_path=str(tmp_path / "i"))
    add_provider(app, "up", "openai", mock + "/v1", ["echo"])
    add_provider(app, "off", "openai", mock + "/v1", ["echo2"])
    with app.app_context():
        db.session.scalar(select(Provider).where(Provider.name == "off")).enabled = False
        db.session.commit()
    r = run(app, "doctor")
    assert r.exit_code == 0, r.output
    assert "ok    database: sqlite" in r.output and "ok    migrations: at head" in r.output
    assert "ok    stored secrets: the encryption key decrypts all 2 stored secrets" in r.output
    assert "ok    provider 'up': echo answered in" in r.output
    assert "ok    provider 'off': disabled" in r.output
    assert "WARN  metrics" in r.output and "No problems found." in r.output
    assert UPSTREAM_KEY not in r.output
    assert requests.get(mock + "/_mock/stats", timeout=5).json()["total"] == 1    # the enabled one, once


def test_doctor_fails_on_pending_migrations_and_says_how_to_fix_them(sqlite_app):
    r = run(sqlite_app, "doctor", "--skip-providers")
    assert r.exit_code == 1
    assert "FAIL  migrations: database at none" in r.output and "fix: run `gateway bootstrap`" in r.output
    assert "1 problem found." in r.output
    assert "stored secrets" not in r.output         # not looked into: the tables may be old


def test_doctor_fails_when_the_encryption_key_cannot_read_the_stored_keys(tmp_path, mock):
    url = f"sqlite:///{tmp_path}/g.db"
    first = migrated_app(url, instance_path=str(tmp_path / "i"))
    add_provider(first, "up", "openai", mock + "/v1", ["echo"])
    other_key = Fernet.generate_key().decode()      # as after a restore without instance/encryption_key
    second = create_app(instance_path=str(tmp_path / "i2"),
                        overrides={**TEST_CONFIG, "SQLALCHEMY_DATABASE_URI": url, "ENCRYPTION_KEY": other_key})
    r = run(second, "doctor")
    assert r.exit_code == 1
    assert "FAIL  stored secrets: cannot decrypt the stored secret of provider 'up'" in r.output
    assert "GATEWAY_ENCRYPTION_KEY" in r.output
    assert "FAIL  provider 'up'" in r.output and "2 problems found." in r.output


def test_doctor_reports_unreachable_redis_and_failing_providers(tmp_path, mock):
    app = migrated_app(f"sqlite:///{tmp_path}/g.db", instance_path=str(tmp_path / "i"),
                       REDIS_URL="redis://127.0.0.1:1/0")
    add_provider(app, "refused", "openai", "http://127.0.0.1:1/v1", ["m"])
    add_provider(app, "badkey", "openai", mock + "/v1", ["bad=echo+fail=401"])
    r = run(app, "doctor", "--timeout", "3")
    assert r.exit_code == 1
    assert "FAIL  redis: REDIS_URL does not answer" in r.output
    assert "FAIL  provider 'refused': m: " in r.output
    assert "FAIL  provider 'badkey': echo+fail=401: The provider rejected the API key." in r.output
    assert "3 problems found." in r.output and UPSTREAM_KEY not in r.output
    assert "several instances need the same value: set GATEWAY_ENCRYPTION_KEY" in r.output      # REDIS_URL: many
    assert run(app, "doctor", "--skip-providers").output.count("FAIL") == 1


def test_backup_and_restore_round_trip(tmp_path):
    app = migrated_app(f"sqlite:///{tmp_path}/g.db", instance_path=str(tmp_path / "i"))
    add_provider(app, "demo", "mock", None, ["echo"])
    kept_key = make_key(app, "kept")
    assert chat(app, kept_key).status_code == 200
    backup = tmp_path / "backup.db"
    r = run(app, "backup", str(backup))
    assert r.exit_code == 0, r.output
    assert "keep the encryption key with the backup" in r.output
    assert not (tmp_path / "backup.db-wal").exists()        # one self-contained file
    with sqlite3.connect(backup) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("SELECT count(*) FROM api_keys").fetchone()[0] == 1
    later_key = make_key(app, "later")

    r = run(app, "restore", str(backup))
    assert r.exit_code == 1 and "holds data (" in r.output
    assert "2 api_keys" in r.output and "--force" in r.output
    r = run(app, "restore", str(backup), "--force")
    assert r.exit_code == 0, r.output
    with app.app_context():
        names = db.session.scalars(select(ApiKey.name)).all()
    assert names == ["kept"]
    assert chat(app, kept_key).status_code == 200 and chat(app, later_key).status_code == 401
    aside = [p for p in tmp_path.iterdir() if ".before-restore-" in p.name]
    assert len(aside) == 1 and str(aside[0]) in r.output
    with sqlite3.connect(aside[0]) as conn:        # what the restore replaced was kept
        assert conn.execute("SELECT count(*) FROM api_keys").fetchone()[0] == 2
    with app.app_context():
        db.engine.dispose()


def test_backup_never_overwrites_without_force(tmp_path):
    app = migrated_app(f"sqlite:///{tmp_path}/g.db", instance_path=str(tmp_path / "i"))
    target = tmp_path / "b.db"
    target.write_text("precious")
    r = run(app, "backup", str(target))
    assert r.exit_code == 1 and "exists already" in r.output and target.read_text() == "precious"
    assert run(app, "backup", str(target), "--force").exit_code == 0
    assert target.read_bytes().startswith(b"SQLite format 3")


def test_restore_refuses_what_is_not_a_gateway_backup(tmp_path):
    app = migrated_app(f"sqlite:///{tmp_path}/g.db", instance_path=str(tmp_path / "i"))
    (tmp_path / "junk.db").write_bytes(b"not a database at all" * 100)
    sqlite3.connect(tmp_path / "other.db").execute("CREATE TABLE t (x)").connection.close()
    for path, why in (("junk.db", "not an SQLite database"), ("other.db", "not a gateway's"),
                      ("missing.db", "No backup file")):
        r = run(app, "restore", str(tmp_path / path), "--force")
        assert r.exit_code == 1 and why in r.output, r.output


def test_a_restored_backup_of_an_older_release_is_migrated(tmp_path):
    old = create_app(instance_path=str(tmp_path / "i"),
                     overrides={**TEST_CONFIG, "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path}/old.db"})
    with old.app_context():
        upgrade_schema(revision="0001")     # the first release's schema
        db.engine.dispose()
    fresh = create_app(instance_path=str(tmp_path / "i"),
                       overrides={**TEST_CONFIG, "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path}/new.db"})
    r = run(fresh, "restore", str(tmp_path / "old.db"))     # an empty target needs no --force
    assert r.exit_code == 0, r.output
    with fresh.app_context():
        applied, heads = schema_revisions()
        assert applied == heads
        assert db.session.scalar(select(func.count()).select_from(ApiKey)) == 0
        db.engine.dispose()


def test_postgres_is_pointed_to_pg_dump_without_showing_its_password(tmp_path):
    app = create_app(instance_path=str(tmp_path / "i"), overrides={
        **TEST_CONFIG, "SQLALCHEMY_DATABASE_URI": "postgresql+psycopg://gw:hunter2@db.internal:5432/gateway"})
    for command in ("backup", "restore"):
        r = run(app, command, str(tmp_path / "x.dump"))
        assert r.exit_code == 1
        assert "pg_dump --format=custom" in r.output and "pg_restore --clean" in r.output
        assert "postgresql://gw@db.internal:5432/gateway" in r.output and "hunter2" not in r.output
