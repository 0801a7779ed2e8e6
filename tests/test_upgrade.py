"""Upgrades keep data: a database at the first release's schema (revision 0001) with a user, a
team, a provider, a key and usage records in it, upgraded to whatever head is now, still holds
all of it, and the gateway serves with it: the old key calls the old provider, the old admin
logs in and sees the old records."""
from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import MetaData, Table, select
from werkzeug.security import generate_password_hash

from gateway import create_app, secrets
from gateway.database import schema_revisions, upgrade_schema
from gateway.extensions import db
from gateway.models import ApiKey, Deployment, Provider, Team, UsageRecord, User
from tests.console_client import Console
from tests.helpers import TEST_CONFIG, usage_records

SECRET = "sk-gw-" + "legacy0123456789" * 3             # a key as the first release issued them
PROVIDER_KEY = "legacy-upstream-key-9876"
PASSWORD = "first-release-pass"
WHEN = datetime(2026, 11, 1, 12, 0, 0)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def empty_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/upgrade.db"
    return request.getfixturevalue("empty_postgres")


def insert_first_release_data(conn, fernet: Fernet) -> list[dict]:
    """Rows in the columns revision 0001 has, written as plain rows (today's models may differ);
    ids come from the database, as they did. Returns the usage records written."""
    meta = MetaData()

    def add(table: str, **row) -> int:
        result = conn.execute(Table(table, meta, autoload_with=conn).insert(), row)
        return result.inserted_primary_key[0]

    at = {"created_at": WHEN}
    team = add("teams", name="search", budget_usd=50.0, budget_period="month", timezone="UTC",
               alert_thresholds=[50, 100], webhook_url="", webhook_secret_enc="", **at)
    user = add("users", email="old-admin@example.com", password_hash=generate_password_hash(PASSWORD),
               role="admin", active=True, team_id=team, **at)
    provider = add("providers", name="legacy", kind="mock", base_url="mock://local/v1",
                   api_key_enc=fernet.encrypt(PROVIDER_KEY.encode()).decode(), key_last4="9876",
                   region="eu-west-1", options={}, enabled=True, source="cli", updated_at=WHEN, **at)
    add("deployments", model="legacy-chat", provider_id=provider, upstream_model="legacy-chat", mode="chat",
        weight=1, enabled=True, source="cli", **at)
    key = add("api_keys", name="legacy", prefix=SECRET[:14], key_hash=hashlib.sha256(SECRET.encode()).hexdigest(),
              user_id=user, team_id=team, enabled=True, token_quota=100_000, quota_period="total",
              quota_tz="UTC", models=["legacy-chat"], **at)
    records = [{"request_id": f"req_old_{i}", "created_at": WHEN + timedelta(minutes=i), "endpoint": "chat",
                "key_id": key, "key_prefix": SECRET[:14], "user_id": user, "requested_model": "legacy-chat",
                "provider_id": provider, "provider": "legacy", "upstream_model": "legacy-chat",
                "stream": i == 2, "prompt_tokens": 10 * i, "completion_tokens": i, "total_tokens": 11 * i,
                "cached_tokens": 0, "estimated": False, "cost_usd": 0.001 * i, "latency_ms": 100.0 + i,
                "ttft_ms": 50.0 if i == 2 else None, "status": 200, "tags": {"feature": "search"},
                "attempts": [{"deployment_id": 1, "provider": "legacy", "status": 200}],
                "request_body": f"old prompt {i}", "response_text": f"old answer {i}"} for i in (1, 2, 3)]
    for r in records:
        add("usage_records", **r)
    return records


def test_an_upgrade_from_the_first_release_keeps_the_data_and_serves_it(empty_url, tmp_path):
    app = create_app(instance_path=str(tmp_path / "instance"),
                     overrides={**TEST_CONFIG, "SQLALCHEMY_DATABASE_URI": empty_url})
    with app.app_context():
        upgrade_schema(revision="0001")
        assert schema_revisions()[0] == ("0001",)
        with db.engine.begin() as conn:
            expected = insert_first_release_data(conn, app.extensions["fernet"])
        upgrade_schema()
        applied, heads = schema_revisions()
        assert applied == heads

        team = db.session.scalar(select(Team))
        assert (team.name, team.budget_usd, team.alert_thresholds) == ("search", 50.0, [50, 100])
        user = db.session.scalar(select(User))
        assert (user.email, user.role, user.team_id) == ("old-admin@example.com", "admin", team.id)
        provider = db.session.scalar(select(Provider))
        assert (provider.name, provider.kind, provider.region, provider.key_last4) == \
            ("legacy", "mock", "eu-west-1", "9876")
        assert secrets.decrypt(provider.api_key_enc) == PROVIDER_KEY
        deployment = db.session.scalar(select(Deployment))
        assert (deployment.model, deployment.provider_id, deployment.mode) == ("legacy-chat", provider.id, "chat")
        key = db.session.scalar(select(ApiKey))
        assert (key.prefix, key.token_quota, key.models, key.team_id) == (SECRET[:14], 100_000, ["legacy-chat"], team.id)
        key_id = key.id
        old = db.session.scalars(select(UsageRecord).order_by(UsageRecord.id)).all()
        assert [(r.request_id, r.total_tokens, r.cost_usd, r.stream, r.ttft_ms, r.tags, r.attempts,
                 r.request_body, r.response_text) for r in old] == \
            [(e["request_id"], e["total_tokens"], e["cost_usd"], e["stream"], e["ttft_ms"], e["tags"],
              e["attempts"], e["request_body"], e["response_text"]) for e in expected]
        db.session.remove()

    client = app.test_client()
    assert client.get("/readyz").status_code == 200
    r = client.post("/v1/chat/completions", headers={"Authorization": f"Bearer {SECRET}"},
                    json={"model": "legacy-chat", "messages": [{"role": "user", "content": "still there?"}]})
    assert r.status_code == 200, r.json
    assert r.json["choices"][0]["message"]["content"] == "Echo: still there?"
    records = usage_records(app)
    assert len(records) == 4 and records[-1].key_id == key_id and records[-1].status == 200
    console = Console(app, "old-admin@example.com", PASSWORD)
    page = console.get("/logs")
    assert page.status_code == 200 and "legacy-chat" in page.text
    detail = console.get(f"/logs/{records[0].id}")        # a record the first release wrote
    assert detail.status_code == 200 and "req_old_1" in detail.text
    with app.app_context():
        db.engine.dispose()
