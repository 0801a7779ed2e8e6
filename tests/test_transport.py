"""The connect-time check on a policy tightened later, pooled connections, in-process apps
(the SSRF policy itself: test_ssrf.py; SSE framing: test_sse.py)."""
from __future__ import annotations

import orjson

from gateway.providers import transport
from tests.helpers import add_provider, make_app, make_key


def test_connect_time_check_blocks_private_upstream(tmp_path, mock):
    # Saved while private addresses were allowed, then the policy tightened: the connect refuses.
    app = make_app(f"sqlite:///{tmp_path}/t.db", instance_path=str(tmp_path))
    add_provider(app, "local", "openai", mock + "/v1", ["m=echo"])
    key = make_key(app)
    app.extensions["transport"] = transport.Transport(transport.Timeouts(1, 1, 1), 4, allow_private=False)
    r = app.test_client().post("/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                               json={"model": "m", "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 502 and r.json["error"]["code"] == "upstream_blocked"
    assert "127.0.0.1" in r.json["error"]["message"] or "private" in r.json["error"]["message"]


def test_connections_are_reused(tmp_path, mock):
    app = make_app(f"sqlite:///{tmp_path}/t.db", instance_path=str(tmp_path))
    add_provider(app, "local", "openai", mock + "/v1", ["m=echo"])
    key = make_key(app)
    client = app.test_client()
    for _ in range(5):
        r = client.post("/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                        json={"model": "m", "messages": [{"role": "user", "content": "x"}]})
        assert r.status_code == 200
    pools = app.extensions["transport"].pools.pools
    [pool] = [pools[k] for k in pools.keys()]
    assert pool.num_connections == 1 and pool.num_requests == 5


def test_a_pooled_connection_closed_by_the_server_is_not_reused():
    import socket as _socket
    import time
    srv = _socket.create_server(("127.0.0.1", 0))
    t = transport.Transport(transport.Timeouts(1, 1, 1), 4, allow_private=True)
    pool = t.pools.connection_from_url(f"http://127.0.0.1:{srv.getsockname()[1]}/")
    conn = pool.ConnectionCls(host="127.0.0.1", port=srv.getsockname()[1])
    conn.connect()
    peer, _ = srv.accept()
    assert conn.is_connected
    peer.close()
    time.sleep(0.05)
    assert not conn.is_connected
    conn.close()
    srv.close()



def test_in_process_apps_answer_their_own_scheme():
    # The transport knows no mock: any WSGI app can take a URL scheme.
    from gateway.mock_upstream import MockUpstream
    from gateway.providers.base import UpstreamRequest
    fake = MockUpstream()
    t = transport.Transport(transport.Timeouts(1, 1, 1), 4, allow_private=False, in_process={"fake": fake})
    body = b'{"model": "echo", "messages": [{"role": "user", "content": "hi"}]}'
    r = t.send(UpstreamRequest("fake://local/v1/chat/completions", {"Authorization": "Bearer k"}, body))
    assert r.status == 200 and r.read().count(b"Echo: hi") == 1
    r.close()
    assert orjson.loads(fake.stats({}).body)["total"] == 1


def test_the_factory_injects_the_mock_upstream(tmp_path):
    from gateway import mock_upstream
    app = make_app(f"sqlite:///{tmp_path}/t.db", instance_path=str(tmp_path))
    assert app.extensions["transport"].in_process == {"mock": mock_upstream.app}
