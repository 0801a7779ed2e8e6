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
