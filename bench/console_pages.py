"""How long every console page takes on a database with 100,000 usage records.

    python bench/console_pages.py [--records 100000] [--runs 5] [--postgres] [--profile ENDPOINT]
    make bench-console                      # BENCH_ARGS="--postgres" for Postgres

Builds the app on a fresh SQLite file (with --postgres, a new database on TEST_POSTGRES_URL's
server, dropped afterwards), migrated as in production. Seeds the console walk's objects
(tests/console_walk.py) plus many users, teams, keys, providers and models, then `--records`
usage records over 60 days (errors, 429s, streams, cache hits, A/B arms, tags), written the way
the usage writer writes them: raw rows and their rollup in one transaction per batch. Then
every GET console route the walk finds, plus the wider views in VARIANTS and the POST_VIEWS, is requested
in-process (Flask's test client, so no network), warm, `--runs` times as admin and as member:
the table shows the median ms, the part of it spent in the database, and the SQL statements
per page. `--profile PAGE` (an endpoint or URL) prints a cProfile and the slowest statements of
that page instead. `--dir D` keeps the database in D; `--dir D --reuse` times it again unseeded.
"""
from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import random
import statistics
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import create_engine, event, insert, text  # noqa: E402

from gateway import create_app  # noqa: E402
from gateway.database import upgrade_schema  # noqa: E402
from gateway.extensions import db  # noqa: E402
from gateway.models import ApiKey, AuditLog, User, utcnow  # noqa: E402
from gateway.services.accounting import keys, pricing, teams  # noqa: E402
from gateway.services.accounting.usage import UsageEntry, UsageRecorder, row  # noqa: E402
from gateway.services.admin import catalog_admin  # noqa: E402
from tests.console_client import Console  # noqa: E402
from tests.console_walk import console_rules, get_pages, seed, url_for_rule  # noqa: E402

PG_ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
# Pages worth timing beyond their default view (24 hours): the widest ranges and groupings.
VARIANTS = {
    "console.usage": ("range=7d", "range=30d", "range=30d&group=key", "range=30d&group=team",
                      "range=30d&group=tag&tag_key=feature", "range=30d&status=error"),
    "console.logs": ("range=30d", "range=30d&status=error", "range=30d&page=20"),
    "console.audit_index": ("page=5",),
    "console.usage_report": (f"month={utcnow():%Y-%m}",),      # the monthly workbook, where it exists
}
# Pages that are the answer to a POST which changes nothing (endpoint -> form), timed like the GETs.
POST_VIEWS = {
    "console.simulator_run": {"range": "30d", "route_model": "gpt-4o", "policy_source": "named", "policy": "cheap",
                              "tag_keys": "feature"},
}
DAYS = 60
MODELS = {      # public name -> (input, output) USD per 1K tokens
    "gpt-4o": (0.0025, 0.01), "gpt-4o-mini": (0.00015, 0.0006), "claude-sonnet": (0.003, 0.015),
    "claude-haiku": (0.0008, 0.004), "llama-70b": (0.0009, 0.0009), "mistral-large": (0.002, 0.006),
    "gemini-flash": (0.0001, 0.0004), "gemini-pro": (0.00125, 0.005), "qwen-72b": (0.0009, 0.0009),
    "deepseek-chat": (0.00027, 0.0011), "text-embedding-3-small": (0.00002, 0.0),
}
PROVIDERS = ("openai-main", "openai-eu", "anthropic", "together", "vertex")
ERRORS = ((502, "upstream_error", "Bad gateway from the provider"), (500, "server_error", "Internal error"),
          (400, "invalid_request_error", "max_tokens is too large for this model"),
          (429, "rate_limit_exceeded", "Rate limit reached for requests"),
          (429, "insufficient_quota", "The key's token quota is used up"),
          (504, "timeout", "The provider did not answer within 60 s"),
          (404, "model_not_found", "No model named gpt-5 here"))


def build_app(db_url: str, instance: str):
    """The app as production configures it (caches on), migrated by the migrations."""
    app = create_app(instance_path=instance, overrides={
        "SECRET_KEY": "bench", "SQLALCHEMY_DATABASE_URI": db_url, "DEMO": False, "RETENTION_INTERVAL_SECONDS": 0})
    with app.app_context():
        upgrade_schema()
        pricing.seed_prices()
    return app


def seed_world(app, records: int, rng: random.Random) -> dict:
    """The walk's objects, then a realistic gateway's worth of configuration and traffic."""
    world = seed(app)
    with app.app_context():
        for p in PROVIDERS:
            catalog_admin.save_provider(p, "mock", models=list(MODELS), api_key="sk-bench-upstream-key-1")
        for m, (i, o) in MODELS.items():
            catalog_admin.save_price(m, i, o)
        plans = [teams.save_plan(n, token_quota=q).id for n, q in (("free", 10**5), ("pro", 10**7), ("max", None))]
        team_ids = [teams.save_team(f"team-{i:02d}", budget_usd=500.0 * (i + 1), plan_id=rng.choice(plans)).id
                    for i in range(12)]
        for t in ("search", "chat", "summarise", "agent"):
            teams.save_tag_budget("feature", t, 200.0)
        db.session.execute(insert(User), [
            dict(email=f"user{i:03d}@example.com", password_hash="x", role="member", active=True,
                 team_id=rng.choice(team_ids), session_version=0) for i in range(60)])
        db.session.commit()
        user_rows = db.session.execute(text("SELECT id, team_id FROM users WHERE email LIKE 'user%'")).all()
        made = []
        for i in range(400):
            uid, team_id = rng.choice(user_rows)
            key, _ = keys.create_key(f"key-{i:03d}", user_id=uid, team_id=team_id,
                                     token_quota=rng.choice([None, 10**6, 10**8]))
            made.append((key.id, key.prefix, uid))
        # the walk's member has keys and traffic of their own, like any member
        member_keys = [(k.id, k.prefix, world["member"]) for k in
                       db.session.query(ApiKey).filter(ApiKey.user_id == world["member"]).all()]
        db.session.execute(insert(AuditLog), [
            dict(at=utcnow() - timedelta(minutes=rng.randint(0, DAYS * 1440)), actor="admin@example.com",
                 action=rng.choice(("key.create", "key.update", "provider.update", "price.update")),
                 target=f"key-{rng.randint(0, 399):03d}", details={"rpm": rng.randint(1, 100)}, ip="10.0.0.1",
                 source="console") for _ in range(3000)])
        db.session.commit()
    write_usage(app, records, made, member_keys, rng)
    with app.app_context():
        if db.engine.dialect.name == "postgresql":
            # what autovacuum does soon after a bulk load: planner statistics and the visibility
            # map (index-only scans need it)
            with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(text("VACUUM ANALYZE"))
    return world


def write_usage(app, n: int, made: list, member_keys: list, rng: random.Random) -> None:
    """`n` records over DAYS days, inserted with their rollup in batches (as UsageRecorder does)."""
    now = utcnow()
    models = list(MODELS)
    weights = [30, 40, 15, 10, 5, 5, 12, 4, 3, 6, 8]
    batch = []
    for i in range(n):
        key_id, prefix, uid = rng.choice(member_keys) if rng.random() < 0.03 else rng.choice(made)
        model = rng.choices(models, weights)[0]
        age = timedelta(seconds=rng.random() ** 1.3 * DAYS * 86400)   # more traffic lately
        stream = rng.random() < 0.35
        prompt = int(rng.lognormvariate(6, 1.1))
        completion = 0 if model.startswith("text-embedding") else int(rng.lognormvariate(5, 1))
        status, etype, message = 200, None, None
        if rng.random() < 0.07:
            status, etype, message = rng.choice(ERRORS)
            completion = 0
        price_in, price_out = MODELS[model]
        cost = (prompt * price_in + completion * price_out) / 1000 if status == 200 else 0.0
        latency = rng.lognormvariate(6.5, 0.8)
        cached = status == 200 and rng.random() < 0.04
        batch.append(row(UsageEntry(
            request_id=f"bench-{i}-{uuid.uuid4().hex[:8]}", endpoint="embeddings" if completion == 0 and status == 200
            else "chat", status=status, created_at=now - age, key_id=key_id, key_prefix=prefix, user_id=uid,
            requested_model=model, provider_id=None, provider=rng.choice(PROVIDERS), upstream_model=model,
            stream=stream, prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion,
            cost_usd=0.0 if cached else cost, saved_usd=cost if cached else 0.0, cached=cached,
            latency_ms=latency, ttft_ms=latency * 0.3 if stream else None, overhead_ms=rng.uniform(0.5, 3),
            error_type=etype, error_message=message,
            tags={"feature": rng.choice(("search", "chat", "summarise", "agent")),
                  "project": f"p{rng.randint(1, 25)}", **({"tenant": f"t{rng.randint(1, 200)}"}
                                                        if rng.random() < 0.5 else {})},
            attempts=[{"provider": rng.choice(PROVIDERS), "status": status, "ms": round(latency)}],
            variant=rng.choice(("a", "b")) if rng.random() < 0.1 else None)))
        if len(batch) == 2000:
            _insert(app, batch)
            batch = []
    if batch:
        _insert(app, batch)


def _insert(app, rows: list[dict]) -> None:
    with app.app_context():
        UsageRecorder._insert(rows)


@contextmanager
def counting(app):
    """Counts the SQL statements run meanwhile and the ms spent in them: yields [count, ms]."""
    seen, started = [0, 0.0], []
    with app.app_context():
        engine = db.engine

    def before(*_):
        started.append(time.perf_counter())

    def after(*_):
        seen[0] += 1
        seen[1] += (time.perf_counter() - started.pop()) * 1000
    event.listen(engine, "before_cursor_execute", before)
    event.listen(engine, "after_cursor_execute", after)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", before)
        event.remove(engine, "after_cursor_execute", after)


def fetch(console: Console, view: tuple):
    """Request one view: (endpoint, URL, form), a GET when form is None."""
    _, url, form = view
    r = console.get(url) if form is None else console.post(url, form)
    r.get_data()
    return r


def statement_times(app, console: Console, view: tuple) -> list[tuple[float, str]]:
    """(ms, SQL) of each statement one request runs."""
    out, started = [], []
    with app.app_context():
        engine = db.engine

    def before(conn, cursor, statement, *_):
        started.append(time.perf_counter())

    def after(conn, cursor, statement, *_):
        out.append(((time.perf_counter() - started.pop()) * 1000, statement))
    event.listen(engine, "before_cursor_execute", before)
    event.listen(engine, "after_cursor_execute", after)
    try:
        fetch(console, view)
    finally:
        event.remove(engine, "before_cursor_execute", before)
        event.remove(engine, "after_cursor_execute", after)
    return out


def time_page(app, console: Console, view: tuple, runs: int) -> tuple[float, float, float, int, int]:
    """(median ms, median CPU ms of this process, ms in the database per request, statements
    per request, status) of a warm request."""
    r = fetch(console, view)           # warm: caches, templates, the database's pages
    times, cpu = [], []
    with counting(app) as seen:
        for _ in range(runs):
            t0, c0 = time.perf_counter(), time.process_time()
            r = fetch(console, view)
            times.append((time.perf_counter() - t0) * 1000)
            cpu.append((time.process_time() - c0) * 1000)
    return statistics.median(times), statistics.median(cpu), seen[1] / runs, seen[0] // runs, r.status_code


def pages(app, world: dict) -> list[tuple[str, str, dict | None]]:
    """(endpoint, URL, form or None) of every view to time: the walk's GET pages, their VARIANTS,
    and the POST_VIEWS that exist."""
    out = []
    for endpoint, url in get_pages(app, world):
        out.append((endpoint, url, None))
        out += [(endpoint, f"{url}?{q}", None) for q in VARIANTS.get(endpoint, ())]
    for rule in console_rules(app):
        if rule.endpoint in POST_VIEWS and "POST" in rule.methods:
            out.append((rule.endpoint, url_for_rule(app, rule, world), POST_VIEWS[rule.endpoint]))
    return out


def label(view: tuple) -> str:
    return view[1] if view[2] is None else f"POST {view[1]}"


def run(db_url: str, instance: str, args) -> None:
    rng = random.Random(12)
    t0 = time.perf_counter()
    app = build_app(db_url, instance)
    saved = Path(instance) / "bench-world.json"
    if args.reuse and saved.exists():
        world = json.loads(saved.read_text())
        print(f"reusing the database seeded before ({saved})", flush=True)
    else:
        world = seed_world(app, args.records, rng)
        saved.write_text(json.dumps(world))
        print(f"seeded {args.records} usage records on {db_url.split(':')[0]} in {time.perf_counter() - t0:.0f} s",
          flush=True)
    consoles = {role: Console(app, f"{role}@example.com") for role in ("admin", "member")}
    if args.profile:
        view = next(v for v in pages(app, world) if args.profile in (v[0], v[1], label(v)))
        fetch(consoles["admin"], view)
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(args.runs):
            fetch(consoles["admin"], view)
        prof.disable()
        pstats.Stats(prof).sort_stats("cumulative").print_stats(30)
        print("SQL statements of one request, slowest first:")
        for ms, sql in sorted(statement_times(app, consoles["admin"], view), reverse=True)[:15]:
            print(f"{ms:8.1f} ms  {' '.join(sql.split())[:300]}")
        return
    rows = []
    for view in pages(app, world):
        cells = [time_page(app, consoles[role], view, args.runs) for role in ("admin", "member")]
        rows.append((view[0], label(view), cells))
        print(f"  {label(view):<48} " + "  ".join(f"{ms:7.1f} ms ({c:6.1f} CPU, {sql:6.1f} SQL, {q:3d} q) {s}"
                                          for ms, c, sql, q, s in cells), flush=True)
    print(f"\n{args.records} usage records, {db_url.split(':')[0]}; median of {args.runs} warm requests. "
          "ms: the request, in-process; CPU: this process's CPU time for it (steadier than ms on a busy "
          "machine; with Postgres the server's work is not in it); SQL: time in database calls; q: statements\n")
    print("| page | URL | admin ms | CPU | SQL | q | member ms | CPU | SQL | q |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for endpoint, url, cells in rows:
        (ams, acpu, asql, aq, _), (mms, mcpu, msql, mq, mst) = cells
        member = f"{mms:.0f} | {mcpu:.0f} | {msql:.0f} | {mq}" if mst != 403 else "403 | | | "
        print(f"| {endpoint} | `{url}` | {ams:.0f} | {acpu:.0f} | {asql:.0f} | {aq} | {member} |")
    worst = max(rows, key=lambda r: r[2][0][0])
    over = [r for r in rows if max(c[0] for c in r[2]) >= 200]
    print(f"\nslowest: {worst[1]} {worst[2][0][0]:.0f} ms as admin; {len(over)} of {len(rows)} views at 200 ms or more")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=5, help="timed requests per page and role (median)")
    ap.add_argument("--postgres", action="store_true", help=f"a new database on {PG_ADMIN_URL}'s server")
    ap.add_argument("--profile", metavar="PAGE", help="cProfile one page (endpoint, URL or 'POST URL') instead")
    ap.add_argument("--dir", help="where the SQLite file and instance folder go (default: a temp dir)")
    ap.add_argument("--reuse", action="store_true", help="with --dir: time the database seeded there before")
    args = ap.parse_args()
    tmp = args.dir or tempfile.mkdtemp(prefix="bench-console-")
    if not args.postgres:
        if not args.reuse:
            Path(tmp, "console.db").unlink(missing_ok=True)
        run(f"sqlite:///{tmp}/console.db", f"{tmp}/instance", args)
        return
    name = f"bench_console_{uuid.uuid4().hex[:6]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        run(PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name, f"{tmp}/instance", args)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


if __name__ == "__main__":
    main()
