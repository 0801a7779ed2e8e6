"""CPU per /v1 request in one process, without the network: what the gateway's own code costs,
per kind of key. Less noisy than wrk on a shared machine (it counts this process's CPU only).

    python bench/path_cost.py [-n 3000]

The app runs on a temporary SQLite file against the in-process mock upstream (mock://); usage
records and the rollup are written by the writer thread as in production. Three keys: no
limits; a token quota + budget on exact database counters (a reservation and a settle
transaction per request); the same with quota leases on (leases.py).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway import create_app  # noqa: E402
from gateway.extensions import db  # noqa: E402
from gateway.services.accounting import pricing  # noqa: E402
from gateway.services.accounting.usage import recorder  # noqa: E402
from gateway.services.admin import catalog_admin  # noqa: E402
from gateway.services.accounting import keys  # noqa: E402

BODY = {"model": "echo", "max_tokens": 64, "messages": [{"role": "user", "content": "Say hello to the benchmark"}]}


def app_for(tmp: Path, leases: str):
    app = create_app(instance_path=str(tmp / f"instance-{leases}"), overrides={
        "SECRET_KEY": "bench", "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp}/{leases}.db", "DEMO": False,
        "QUOTA_LEASES": leases, "KEY_CACHE_SECONDS": 60})
    with app.app_context():
        db.create_all()
        pricing.seed_prices()
        catalog_admin.save_provider("up", "mock", base_url=None, api_key="sk-bench-upstream", models=["echo"])
        free = keys.create_key("free")[1]
        limited = keys.create_key("limited", token_quota=10**10, budget_usd=10**6)[1]
    return app, free, limited


def cost(app, key: str, n: int) -> float:
    """µs of this process's CPU per request, usage writer included."""
    client = app.test_client()
    headers = {"Authorization": f"Bearer {key}"}
    for _ in range(50):             # warm caches: key, catalog, prices, pools
        client.post("/v1/chat/completions", json=BODY, headers=headers)
    with app.app_context():
        recorder(app).drain()
    t0 = time.process_time()
    for _ in range(n):
        r = client.post("/v1/chat/completions", json=BODY, headers=headers)
        assert r.status_code == 200, r.get_data(as_text=True)
    with app.app_context():
        recorder(app).drain()
    return (time.process_time() - t0) / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=3000)
    n = ap.parse_args().n
    tmp = Path(tempfile.mkdtemp(prefix="gw-cost-"))
    exact, free, limited = app_for(tmp, "off")
    leased, _, limited_leased = app_for(tmp, "on")
    rows = [("no limits", cost(exact, free, n)), ("quota+budget, exact counters", cost(exact, limited, n)),
            ("quota+budget, leases", cost(leased, limited_leased, n))]
    print(f"| key | CPU µs per request ({n} requests, one process, mock:// upstream) |\n|---|---:|")
    for name, us in rows:
        print(f"| {name} | {us:.0f} |")


if __name__ == "__main__":
    main()
