"""Budget alerts: once per threshold per period, a signed webhook and a banner record."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from sqlalchemy import select

from gateway.extensions import db
from gateway.models import Alert, Team
from gateway.services.accounting import alerts, teams
from tests.helpers import add_provider, make_key

CHAT = {"model": "demo-chat", "max_tokens": 4, "messages": [{"role": "user", "content": "hello there friend"}]}
SECRET = "whsec-test-123"


@pytest.fixture
def receiver():
    got: list[tuple[dict, bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            got.append(({k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *a):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/hook", got
    server.shutdown()
    server.server_close()


def test_thresholds_fire_once_each_with_a_valid_signature(app, receiver):
    url, got = receiver
    app.config["ALERTS_SYNC"] = True
    add_provider(app, "demo", "mock", None, ["demo-chat"])
    # demo-chat: 6 prompt tokens at $0.0005/1K + 4 completion at $0.0015/1K = $0.000009 a request,
    # reserved as $0.000012: four fit in $0.000045 (80%), a fifth with its answer capped at what
    # is left (93%), then the hard cap refuses, and that fires the 100% alert (settled spend
    # never reaches it)
    with app.app_context():
        team = teams.save_team("search", budget_usd=0.000045, alert_thresholds="25,50,75,100",
                               webhook_url=url, webhook_secret=SECRET)
        tid = team.id
        assert db.session.get(Team, tid).webhook_secret_enc not in ("", SECRET)
    client = app.test_client()
    key = make_key(app, team_id=tid)
    statuses = [client.post("/v1/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {key}"}).status_code
                for _ in range(8)]
    assert statuses == [200] * 5 + [429] * 3
    with app.app_context():
        rows = db.session.scalars(select(Alert).order_by(Alert.threshold)).all()
        assert [a.threshold for a in rows] == [25, 50, 75, 100]
        assert all(a.webhook_status == "sent" and a.kind == "spend" for a in rows)
        assert "refused" in rows[-1].message and "refused" not in rows[0].message
        assert [a.id for a in alerts.open_alerts()] == [a.id for a in reversed(rows)]
        assert alerts.acknowledge() == 4 and alerts.open_alerts() == []
    assert len(got) == 4
    for headers, body in got:
        assert alerts.verify(SECRET, headers["x-gateway-timestamp"], body, headers["x-gateway-signature"])
        assert not alerts.verify("wrong", headers["x-gateway-timestamp"], body, headers["x-gateway-signature"])
        assert not alerts.verify(SECRET, headers["x-gateway-timestamp"], body + b" ", headers["x-gateway-signature"])
    payloads = [json.loads(b) for _, b in got]
    assert sorted(p["threshold_percent"] for p in payloads) == [25, 50, 75, 100]
    assert all(p["scope"] == f"team:{tid}" and p["budget_usd"] == 0.000045 for p in payloads)


def test_a_threshold_is_recorded_once_across_processes(sqlite_app):
    from datetime import datetime
    with sqlite_app.app_context():
        teams.save_tag_budget("tenant", "acme", 1.0, alert_thresholds=[50])
        first = alerts.crossed(sqlite_app, "tag:tenant=acme", datetime(2025, 1, 1), 0.6, 60)
        sqlite_app.extensions["alerts_fired"] = alerts.Fired()     # as if another process, with no memory
        again = alerts.crossed(sqlite_app, "tag:tenant=acme", datetime(2025, 1, 1), 0.7, 70)
        next_month = alerts.crossed(sqlite_app, "tag:tenant=acme", datetime(2025, 2, 1), 0.6, 60)
        assert len(first) == 1 and again == [] and len(next_month) == 1
        assert first[0].webhook_status == "none"


def test_stale_signatures_are_refused():
    body = b'{"a":1}'
    sig = alerts.sign(SECRET, "1000", body)
    assert alerts.verify(SECRET, "1000", body, sig, now=1100)
    assert not alerts.verify(SECRET, "1000", body, sig, now=5000)


def _global_webhook(app, url: str) -> None:
    from gateway import secrets
    from gateway.services.admin import settings
    with app.app_context():
        settings.put("alert_webhook_url", url)
        settings.put("alert_webhook_secret", secrets.encrypt(SECRET))


def test_a_key_token_quota_alerts_at_the_key_thresholds_and_at_the_refusal(app, receiver):
    url, got = receiver
    app.config["ALERTS_SYNC"] = True
    _global_webhook(app, url)
    add_provider(app, "demo", "mock", None, ["demo-chat"])
    # about 10 tokens a request: four use some 40 of 45 (the 80% alert); the fifth does not fit
    # even with a one-token answer, so it is refused, and that fires 95% and 100%
    key = make_key(app, name="search-bot", token_quota=45)
    client = app.test_client()
    statuses = [client.post("/v1/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {key}"}).status_code
                for _ in range(6)]
    assert statuses == [200] * 4 + [429] * 2
    with app.app_context():
        rows = db.session.scalars(select(Alert).order_by(Alert.threshold)).all()
        assert [(a.kind, a.threshold) for a in rows] == [("tokens", 80), ("tokens", 95), ("tokens", 100)]
        assert 36 <= rows[0].value < 45 and rows[0].limit_value == 45 and rows[0].key_id is not None
        assert rows[0].scope == f"key:{rows[0].key_id}" and "search-bot" in rows[0].label
        assert f"crossed 80% of its token quota: {rows[0].value:.0f} of 45 tokens used ({rows[0].value / 45:.0%})" \
            in rows[0].message and "refused" in rows[2].message
        assert all(a.webhook_status == "sent" for a in rows)
    assert len(got) == 3
    for headers, body in got:
        assert alerts.verify(SECRET, headers["x-gateway-timestamp"], body, headers["x-gateway-signature"])
        assert key.encode() not in body and SECRET.encode() not in body
    assert {json.loads(b)["type"] for _, b in got} == {"quota.threshold_crossed"}


def test_plan_scopes_alert_by_their_prefix(sqlite_app):
    from datetime import datetime

    from gateway.models import Plan
    with sqlite_app.app_context():
        plan = Plan(name="starter", budget_usd=10.0)
        db.session.add(plan)
        db.session.commit()
        made = alerts.crossed(sqlite_app, f"plan:{plan.id}", datetime(2026, 12, 1), 9.6, 96, kind="spend", cap=10.0)
        assert [(a.threshold, a.label) for a in made] == [(80, "plan starter"), (95, "plan starter")]
        assert alerts.crossed(sqlite_app, "unknown:1", datetime(2026, 12, 1), 1, 100) == []


def _route(dep_id: int):
    from types import SimpleNamespace
    return SimpleNamespace(deployment_id=dep_id)


def test_health_alerts_fire_once_an_hour_and_resolve(app, receiver):
    from datetime import datetime

    from gateway.models import Deployment
    from gateway.services.admin import settings
    from gateway.services.routing.health import health
    from gateway.services.routing.health_alerts import AlertChecker
    url, got = receiver
    app.config["ALERTS_SYNC"] = True
    _global_webhook(app, url)
    add_provider(app, "demo", "mock", None, ["demo-chat"])
    checker = AlertChecker(app)
    with app.app_context():
        dep_id = db.session.scalar(select(Deployment.id))
        settings.put("alert_latency_p95_ms", 500)
    h = health(app)
    for _ in range(12):
        h.failure(_route(dep_id), 20.0)
    at = datetime(2026, 12, 1, 10, 5)
    made, resolved = checker.run_once(at)
    assert sorted(a.kind for a in made) == ["error_rate", "provider_down"] and resolved == 0
    assert checker.run_once(at.replace(minute=40)) == ([], 0)    # still unresolved: nothing new
    app.extensions["alerts_fired"] = alerts.Fired()             # another process, same hour
    assert checker.run_once(at.replace(minute=50)) == ([], 0)
    h.forget()
    for _ in range(12):
        h.success(_route(dep_id), 900.0)                        # up again, but slow
    made, resolved = checker.run_once(at.replace(hour=11))
    assert [a.kind for a in made] == ["latency_p95"] and resolved == 2
    with app.app_context():
        rows = {a.kind: a for a in db.session.scalars(select(Alert))}
        assert rows["error_rate"].resolved_at is not None and rows["provider_down"].resolved_at is not None
        assert rows["latency_p95"].value == 900.0 and rows["latency_p95"].threshold == 500
        assert rows["latency_p95"].scope == f"deployment:{dep_id}" and "demo-chat" in rows["latency_p95"].label
        assert [a.kind for a in alerts.open_alerts()] == ["latency_p95"]
    assert sorted(json.loads(b)["type"] for _, b in got) == ["health.error_rate", "health.latency_p95",
                                                             "health.provider_down"]
    assert all(alerts.verify(SECRET, hd["x-gateway-timestamp"], b, hd["x-gateway-signature"]) for hd, b in got)


def test_the_health_check_thread_is_off_in_testing_unless_asked(sqlite_app):
    from gateway.models import Deployment
    from gateway.services.routing.health import health
    from gateway.services.routing.health_alerts import AlertChecker
    off = AlertChecker(sqlite_app)
    off.ensure()
    assert off.thread.thread is None
    add_provider(sqlite_app, "demo", "mock", None, ["demo-chat"])
    with sqlite_app.app_context():
        dep_id = db.session.scalar(select(Deployment.id))
    for _ in range(6):
        health(sqlite_app).failure(_route(dep_id), 20.0)        # the circuit opens
    sqlite_app.config.update(ALERT_CHECK_IN_TESTING=True, ALERT_CHECK_SECONDS=0.05)
    on = AlertChecker(sqlite_app)
    on.ensure()
    try:
        assert on.thread.thread is not None
        for _ in range(400):        # wait for the thread's first looks, however slow this machine is
            with sqlite_app.app_context():
                kinds = set(db.session.scalars(select(Alert.kind)))
                db.session.remove()
            if "provider_down" in kinds:
                break
            on.stopped.wait(0.05)
        assert "provider_down" in kinds
    finally:
        on.stop()


def test_the_cli_lists_and_acknowledges(sqlite_app):
    from datetime import datetime

    from gateway.models import AuditLog
    with sqlite_app.app_context():
        teams.save_tag_budget("tenant", "acme", 1.0, alert_thresholds=[50, 80])
        first = alerts.crossed(sqlite_app, "tag:tenant=acme", datetime(2025, 1, 1), 0.9, 90)[0].id
    run = sqlite_app.test_cli_runner().invoke
    out = run(args=["alerts", "list", "--state", "open"])
    assert out.exit_code == 0 and out.output.count("\topen\t") == 2 and "tag:tenant=acme" in out.output
    assert run(args=["alerts", "ack"]).exit_code == 1
    assert run(args=["alerts", "ack", str(first)]).output.strip() == "1 alert acknowledged"
    assert run(args=["alerts", "ack", "--all"]).output.strip() == "1 alert acknowledged"
    assert run(args=["alerts", "list", "--state", "open"]).output == ""
    with sqlite_app.app_context():
        actions = db.session.scalars(select(AuditLog.action).order_by(AuditLog.id)).all()
        assert actions[-2:] == ["alert.acknowledge", "alert.acknowledge_all"]
