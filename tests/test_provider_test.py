"""Test connection is no port scanner: a few uniform outcomes, no remote text, the same answer
and wait for every way of not reaching a host, a rate limit per user and per address, and an
audit row with the URL for every attempt. Only 127.0.0.1 ports are used."""
from __future__ import annotations

import time

import pytest
from sqlalchemy import select

from console_client import Console, make_user
from gateway.extensions import db
from gateway.models import AuditLog
from tests.helpers import Listener, free_port

TIMEOUT = 0.5


@pytest.fixture
def admin(sqlite_app):
    sqlite_app.config["PROBE_TIMEOUT_SECONDS"] = TIMEOUT
    make_user(sqlite_app, "admin@example.com", "admin")
    return Console(sqlite_app, "admin@example.com")


def probe(c: Console, base_url: str, model: str = "echo", kind: str = "openai") -> str:
    r = c.post("/providers/test", {"name": "t", "kind": kind, "base_url": base_url,
                                   "api_key": "sk-test-abcdef123456", "test_model": model}, htmx=True)
    assert r.status_code == 200
    return r.text


def audited(app) -> list[dict]:
    with app.app_context():
        return [a.details | {"ip": a.ip} for a in
                db.session.scalars(select(AuditLog).where(AuditLog.action == "provider.test").order_by(AuditLog.id))]


def test_every_way_of_not_reaching_a_host_reads_and_waits_the_same(sqlite_app, admin):
    banner, silent = Listener(banner=b"SSH-2.0-OpenSSH_9.6\r\n"), Listener()
    try:
        answers = {}
        for name, url in (("closed", f"http://127.0.0.1:{free_port()}"), ("banner", banner.url),
                          ("silent", silent.url)):
            t0 = time.perf_counter()
            answers[name] = probe(admin, url + "/v1")
            assert time.perf_counter() - t0 >= TIMEOUT, name      # answered at the deadline, not before
        assert banner.accepted == 1 and silent.accepted == 1
    finally:
        banner.close()
        silent.close()
    assert len(set(answers.values())) == 1, answers
    assert "Could not reach the provider." in answers["closed"]
    assert "SSH" not in answers["banner"] and " ms" not in answers["closed"]


def test_http_answers_are_classified_without_echoing_the_body(sqlite_app, admin, mock):
    ok = probe(admin, mock + "/v1")
    assert "Connected" in ok and " ms" in ok and "Echo" not in ok
    rejected = probe(admin, mock + "/v1", model="echo+fail=401")
    assert "The provider rejected the API key." in rejected and "mock failure" not in rejected
    failed = probe(admin, mock + "/v1", model="echo+fail=500")
    assert "The provider answered with an error" in failed and "mock failure" not in failed
    not_found = probe(admin, mock + "/elsewhere")
    assert "The provider answered with an error" in not_found and "no route" not in not_found
    outcomes = [a["outcome"] for a in audited(sqlite_app)]
    assert outcomes == ["connected", "key_rejected", "provider_error", "provider_error"]


def test_refused_urls_say_why_and_are_audited(sqlite_app, admin):
    text = probe(admin, "http://169.254.169.254/latest/meta-data")
    assert "refused by the gateway&#39;s network policy" in text and "never allowed" in text
    [row] = audited(sqlite_app)
    assert row["base_url"] == "http://169.254.169.254/latest/meta-data" and row["outcome"] == "refused"


def test_rate_limited_per_user_and_per_address(sqlite_app, admin):
    sqlite_app.config.update(PROBE_LIMIT_PER_USER=3, PROBE_LIMIT_PER_IP=4)
    make_user(sqlite_app, "other@example.com", "admin")
    other = Console(sqlite_app, "other@example.com")
    texts = [probe(admin, "", model="demo", kind="mock") for _ in range(4)]
    assert ["Connected" in t for t in texts] == [True, True, True, False]
    assert "Too many connection tests" in texts[3]
    # The other admin has tests left, but not this address: 4 attempts came from it already.
    assert "Too many connection tests" in probe(other, "", model="demo", kind="mock")
    rows = audited(sqlite_app)
    assert [r["outcome"] for r in rows] == ["connected"] * 3 + ["rate_limited"] * 2
    assert all(r["base_url"] == "mock://local/v1" and r["ip"] == "127.0.0.1" for r in rows)
    far = Console(sqlite_app, "other@example.com")
    far.client.environ_base["REMOTE_ADDR"] = "10.9.8.7"
    assert "Connected" in probe(far, "", model="demo", kind="mock")
