"""The policy simulator and the month-end forecast: seeded traffic whose cost is easy to work out
by hand, replayed under other policies, prices and aliases; and the console page around it."""
from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from console_client import Console, make_user

from gateway.extensions import db
from gateway.models import Alias, Policy, UsageRecord, utcnow
from gateway.services.accounting import keys as key_service
from gateway.services.accounting import teams
from gateway.services.admin import catalog_admin, settings
from gateway.services.reporting import forecast, simulator
from gateway.services.reporting.filters import parse_filter

EVIL = "<script>alert(1)</script>"
# model-a: $0.01 in / $0.02 out per 1K; model-b: $0.001 / $0.002; model-c: $0.004 / $0.004
A_COST = 1000 * 0.01 / 1000 + 500 * 0.02 / 1000      # one 1000/500-token request on model-a: $0.02
B_COST = 1000 * 0.001 / 1000 + 500 * 0.002 / 1000    # on model-b: $0.002
C_COST = 1000 * 0.004 / 1000 + 500 * 0.004 / 1000    # on model-c: $0.006


def seed_catalog(app) -> None:
    """Three models on the in-process mock provider, each with its own price."""
    with app.app_context():
        for name, inp, out in (("model-a", 0.01, 0.02), ("model-b", 0.001, 0.002), ("model-c", 0.004, 0.004)):
            catalog_admin.save_provider(f"p-{name}", "mock", models=[f"{name}=echo"])
            catalog_admin.save_deployment(name, f"p-{name}", "echo", input_per_1k=inp, output_per_1k=out)


def seed_traffic(app, n: int = 10, model: str = "model-a", key_id: int | None = None, tags: dict | None = None,
                 at: datetime | None = None, cost: float = A_COST, prompt: int = 1000, completion: int = 500,
                 status: int = 200, prefix: str = "") -> None:
    """`n` recorded requests of `prompt`/`completion` tokens on `model` an hour ago."""
    at = at or utcnow() - timedelta(hours=1)
    with app.app_context():
        for i in range(n):
            db.session.add(UsageRecord(
                request_id=f"req-{prefix}{model}-{key_id}-{at.timestamp()}-{i}", created_at=at, endpoint="chat",
                key_id=key_id, requested_model=model, provider=f"p-{model}", upstream_model="echo",
                prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion,
                cost_usd=cost, status=status, tags=tags or {}))
        db.session.commit()


def run(app, scenario: simulator.Scenario, tag_keys=(), **args) -> simulator.Result:
    with app.app_context():
        f, errors = parse_filter({"range": "24h", **args})
        assert not errors
        return simulator.replay(f, scenario, tuple(tag_keys))


@pytest.fixture
def seeded(app):
    seed_catalog(app)
    seed_traffic(app)
    return app


def test_today_s_configuration_replays_to_the_recorded_cost(seeded):
    result = run(seeded, simulator.Scenario())
    assert result.totals.actual_requests == 10
    assert result.totals.actual_cost == pytest.approx(10 * A_COST)
    assert result.totals.sim_cost == pytest.approx(10 * A_COST)
    assert result.baseline_cost == pytest.approx(10 * A_COST)
    assert result.deployments["p-model-a/echo"].sim_requests == 10


def test_moving_a_model_to_another_with_other_prices(seeded):
    with seeded.app_context():
        catalog_admin.save_policy("cheap", strategy="weighted", candidates=["model-b"])
    result = run(seeded, simulator.Scenario(routes={"model-a": "cheap"}))
    assert result.totals.sim_cost == pytest.approx(10 * B_COST)        # $0.02, down from $0.20
    assert result.totals.actual_cost == pytest.approx(10 * A_COST)
    assert result.models["model-a"].diff == pytest.approx(10 * (B_COST - A_COST))
    assert result.deployments["p-model-b/echo"].sim_requests == 10
    assert result.deployments["p-model-a/echo"].sim_requests == 0
    assert result.deployments["p-model-a/echo"].actual_requests == 10
    with seeded.app_context():      # nothing was written: the live policy and aliases are as they were
        assert db.session.query(Alias).count() == 0
        assert db.session.query(Policy).count() == 1


def test_weighted_split_is_seventy_thirty(seeded):
    spec = {"strategy": "weighted", "candidates": ["model-a", "model-b"], "weights": {"model-a": 7, "model-b": 3}}
    result = run(seeded, simulator.Scenario(routes={"model-a": spec}))
    assert result.deployments["p-model-a/echo"].sim_requests == pytest.approx(7)
    assert result.deployments["p-model-b/echo"].sim_requests == pytest.approx(3)
    assert result.deployments["p-model-b/echo"].sim_tokens == pytest.approx(3 * 1500)
    assert result.totals.sim_cost == pytest.approx(7 * A_COST + 3 * B_COST)


def test_ab_split_sends_its_percentage_to_arm_b(seeded):
    spec = {"strategy": "weighted", "candidates": ["model-a"], "ab": {"model": "model-c", "percent": 20}}
    result = run(seeded, simulator.Scenario(routes={"model-a": spec}))
    assert result.deployments["p-model-c/echo"].sim_requests == pytest.approx(2)
    assert result.totals.sim_cost == pytest.approx(8 * A_COST + 2 * C_COST)


def test_shadow_copies_add_their_cost(seeded):
    spec = {"strategy": "weighted", "candidates": ["model-a"], "shadow": {"model": "model-c", "percent": 50}}
    with seeded.app_context():
        catalog_admin.save_policy("mirrored", **spec)
    result = run(seeded, simulator.Scenario(routes={"model-a": "mirrored"}))
    assert result.totals.sim_cost == pytest.approx(10 * A_COST + 5 * C_COST)
    assert result.totals.sim_requests == pytest.approx(10)          # client requests; copies are extra
    assert result.deployments["p-model-c/echo"].sim_requests == pytest.approx(5)


def test_a_key_s_bound_policy_is_kept(seeded):
    """A key bound to a cost policy: the requested model's pool, ranked by the key's policy."""
    with seeded.app_context():
        catalog_admin.save_provider("p-a-cheap", "mock", models=["model-a=echo-cheap"])
        catalog_admin.save_deployment("model-a", "p-a-cheap", "echo-cheap", input_per_1k=0.0, output_per_1k=0.0)
        catalog_admin.save_policy("cheapest", strategy="cost")
        key_id = key_service.create_key("bound", policy="cheapest")[0].id
    seed_traffic(seeded, 4, key_id=key_id, prefix="bound-")
    result = run(seeded, simulator.Scenario())
    assert result.deployments["p-a-cheap/echo-cheap"].sim_requests == pytest.approx(4 + 10 * 0.5)
    assert result.deployments["p-model-a/echo"].sim_requests == pytest.approx(10 * 0.5)


def test_cost_strategy_picks_the_cheapest_candidate(seeded):
    spec = {"strategy": "cost", "candidates": ["model-a", "model-b", "model-c"]}
    result = run(seeded, simulator.Scenario(routes={"model-a": spec}))
    assert result.deployments["p-model-b/echo"].sim_requests == pytest.approx(10)
    assert result.totals.sim_cost == pytest.approx(10 * B_COST)


def test_alias_retarget(seeded):
    with seeded.app_context():
        catalog_admin.set_alias("smart", "model-a")
    seed_traffic(seeded, 4, model="smart", prefix="alias-")
    result = run(seeded, simulator.Scenario(aliases={"smart": "model-c"}))
    assert result.models["smart"].sim_cost == pytest.approx(4 * C_COST)
    assert result.models["model-a"].sim_cost == pytest.approx(10 * A_COST)     # asked by name: unchanged
    assert result.totals.sim_cost == pytest.approx(10 * A_COST + 4 * C_COST)
    with seeded.app_context():
        assert db.session.get(Alias, 1).target == "model-a"


def test_price_override(seeded):
    result = run(seeded, simulator.Scenario(prices={"model-a": (0.002, 0.004)}))
    assert result.totals.sim_cost == pytest.approx(10 * (1000 * 0.002 + 500 * 0.004) / 1000)     # $0.04


def test_breakdown_per_team_and_tag(seeded):
    with seeded.app_context():
        team = teams.save_team("search-team")
        key = key_service.create_key("k", team_id=team.id)[0]
        key_id = key.id
    seed_traffic(seeded, 5, key_id=key_id, tags={"feature": "search"}, prefix="t-")
    result = run(seeded, simulator.Scenario(prices={"echo": (0.0, 0.0)}), tag_keys=["feature"])
    assert result.teams["search-team"].actual_cost == pytest.approx(5 * A_COST)
    assert result.teams["search-team"].diff == pytest.approx(-5 * A_COST)
    assert result.tags["feature"]["search"].actual_requests == 5
    assert result.tags["feature"]["—"].actual_requests == 10
    assert result.totals.sim_cost == 0


def test_failed_requests_keep_their_cost_and_unroutable_ones_are_counted(seeded):
    seed_traffic(seeded, 3, status=500, cost=0.0, prompt=0, completion=0, prefix="err-")
    with seeded.app_context():
        catalog_admin.save_policy("nowhere", strategy="weighted", candidates=["model-a"], regions=["mars"])
    result = run(seeded, simulator.Scenario(routes={"model-a": "nowhere"}))
    assert result.replayed == 10
    assert result.unserved == 10
    assert result.totals.actual_requests == 13


def test_a_scenario_the_catalogue_cannot_run_is_refused(seeded):
    from gateway.errors import InvalidRequest
    with pytest.raises(InvalidRequest) as e:
        run(seeded, simulator.Scenario(routes={"model-a": "no-such-policy"}))
    assert e.value.param == "policy"
    with pytest.raises(InvalidRequest) as e:
        run(seeded, simulator.Scenario(aliases={"smart": "no-such-model"}))
    assert e.value.param == "aliases"


def test_the_replay_reads_grouped_rows_not_records(seeded):
    """A few statements whatever the number of records: the grouping happens in SQL."""
    from sqlalchemy import event
    seed_traffic(seeded, 200, model="model-b", cost=B_COST, prefix="many-")
    with seeded.app_context():
        f, _ = parse_filter({"range": "24h"})
        statements = []
        listener = lambda *args: statements.append(args[2])     # noqa: E731
        event.listen(db.engine, "before_cursor_execute", listener)
        try:
            result = simulator.replay(f, simulator.Scenario(prices={"model-b": (0.0, 0.0)}), ("feature",))
        finally:
            event.remove(db.engine, "before_cursor_execute", listener)
    assert result.totals.actual_requests == 210
    grouped = [s for s in statements if "usage_records" in s]
    assert len(grouped) == 1 and "GROUP BY" in grouped[0]       # one grouped read of the records


def test_parsers():
    assert simulator.parse_prices("a=0.1,0.2\nb = 1, 2") == {"a": (0.1, 0.2), "b": (1.0, 2.0)}
    assert simulator.parse_pairs("x=y; z = w", "aliases") == {"x": "y", "z": "w"}
    assert simulator.parse_weights("a=7, b=3") == {"a": 7, "b": 3}
    from gateway.errors import InvalidRequest
    for bad in ("a=1", "a=x,y", "=1,2", "a=-1,2"):
        with pytest.raises(InvalidRequest):
            simulator.parse_prices(bad)
    with pytest.raises(InvalidRequest):
        simulator.parse_weights("a=seven")


# -- the forecast ------------------------------------------------------------------------------

def test_projection_by_hand():
    now, end = datetime(2026, 6, 11), datetime(2026, 7, 1)      # 20 days left
    projected, crossing = forecast.project(50.0, 5.0, 100.0, now, end)
    assert projected == pytest.approx(150.0)                    # 50 + 5 * 20
    assert crossing == datetime(2026, 6, 21)                    # 50 more dollars at $5 a day
    assert forecast.project(50.0, 1.0, 100.0, now, end) == (pytest.approx(70.0), None)
    assert forecast.project(120.0, 1.0, 100.0, now, end)[1] == now     # over already
    assert forecast.project(10.0, 0.0, None, now, end) == (10.0, None)
    assert forecast.run_rate(30.0, 14.0, now, datetime(2026, 6, 1), "7d") == pytest.approx(2.0)
    assert forecast.run_rate(30.0, 14.0, now, datetime(2026, 6, 1), "mtd") == pytest.approx(3.0)


def test_forecast_per_team_and_tag_budget(app):
    now = datetime(2026, 6, 11, 0, 0)
    with app.app_context():
        team = teams.save_team("alpha", budget_usd=10.0, budget_period="month")
        key_id = key_service.create_key("k", team_id=team.id)[0].id
        teams.save_tag_budget("feature", "search", 3.0)
    # $1/day on each of the 7 days before now, and $2 on June 1st (month to date $9)
    for d in range(1, 8):
        seed_traffic(app, 1, key_id=key_id, tags={"feature": "search"}, at=now - timedelta(days=d) + timedelta(hours=1),
                     cost=1.0, prefix=f"d{d}-")
    seed_traffic(app, 1, key_id=key_id, at=datetime(2026, 6, 1, 12), cost=2.0, prefix="first-")
    seed_traffic(app, 1, key_id=key_id, at=datetime(2026, 5, 30, 12), cost=50.0, prefix="may-")    # last month
    with app.app_context():
        rows = {f.name: f for f in forecast.forecasts("7d", now=now)}
    alpha = rows["alpha"]
    assert alpha.spent == pytest.approx(9.0)
    assert alpha.rate_per_day == pytest.approx(1.0)
    assert alpha.projected == pytest.approx(9.0 + 20 * 1.0)
    assert alpha.overrun_at == now + timedelta(days=1)
    tag = rows["feature=search"]
    assert tag.spent == pytest.approx(7.0) and tag.budget == 3.0
    assert tag.overrun_at == now and tag.over


def test_a_budget_that_is_not_monthly_is_not_compared(app):
    now = datetime(2026, 6, 11)
    with app.app_context():
        teams.save_team("daily", budget_usd=5.0, budget_period="day")
        row = forecast.forecasts("mtd", now=now)[0]
    assert row.budget is None and row.overrun_at is None and "per day" in row.budget_note
    assert row.spent == 0 and row.projected == 0


# -- the console page --------------------------------------------------------------------------

@pytest.fixture
def people(seeded):
    for email, role in (("admin@example.com", "admin"), ("viewer@example.com", "viewer"),
                        ("member@example.com", "member")):
        make_user(seeded, email, role)
    return seeded


def test_admin_and_viewer_run_it_members_may_not(people):
    with people.app_context():
        catalog_admin.save_policy("cheap", strategy="weighted", candidates=["model-b"])
    for email in ("admin@example.com", "viewer@example.com"):
        c = Console(people, email)
        page = c.get("/simulator")
        assert page.status_code == 200 and "Policy simulator" in page.text
        r = c.post("/simulator", {"range": "24h", "route_model": "model-a", "policy": "cheap"}, htmx=True)
        assert r.status_code == 200, r.text[:500]
        assert "<html" not in r.text
        assert 'id="sim-total-actual">$0.20<' in r.text
        assert 'id="sim-total-simulated">$0.02<' in r.text
    full = Console(people, "admin@example.com").post("/simulator", {"range": "24h"})     # no htmx: the page
    assert full.status_code == 200 and "<html" in full.text and 'id="forecast"' in full.text
    member = Console(people, "member@example.com")
    assert member.get("/simulator").status_code == 403
    assert member.post("/simulator", {"range": "24h"}).status_code == 403
    assert "/simulator" not in member.get("/").text
    anon = people.test_client()
    assert anon.get("/simulator").status_code in (302, 401)


def test_simulator_post_needs_csrf(people):
    c = Console(people, "admin@example.com")
    assert c.post("/simulator", {"range": "24h"}, csrf=False).status_code in (400, 403)


def test_field_errors_show_next_to_the_field(people):
    c = Console(people, "admin@example.com")
    r = c.post("/simulator", {"range": "24h", "route_model": "model-a", "policy_source": "ad_hoc",
                              "strategy": "weighted", "candidates": "nothing-here", "prices": "model-a=cheap",
                              "aliases": "x"}, htmx=True)
    assert r.status_code == 422
    assert 'id="candidates-error"' in r.text and 'id="prices-error"' in r.text and 'id="aliases-error"' in r.text
    assert 'value="nothing-here"' in r.text         # the form keeps what was typed
    r = c.post("/simulator", {"range": "custom", "start": "2026-05-02", "end": "2026-05-01", "route_model": "model-a",
                              "policy": "no-such-policy", "weights": "a=seven"}, htmx=True)
    assert r.status_code == 422
    assert 'id="end-error"' in r.text and 'id="policy-error"' in r.text
    r = c.post("/simulator", {"range": "24h", "route_model": "model-a", "policy": ""}, htmx=True)
    assert r.status_code == 422 and 'id="policy-error"' in r.text
    r = c.post("/simulator", {"range": "24h", "policy_source": "ad_hoc", "strategy": "cost", "candidates": "model-b",
                              "weights": "model-b=x", "ab_model": "model-c", "ab_percent": "150"}, htmx=True)
    assert r.status_code == 422
    assert 'id="route_model-error"' in r.text and 'id="weights-error"' in r.text and 'id="ab_percent-error"' in r.text


def test_user_strings_are_escaped(people):
    with people.app_context():
        catalog_admin.set_alias(EVIL, "model-a")
        teams.save_team(EVIL, budget_usd=1.0)
        teams.save_tag_budget("feature", EVIL, 1.0)
    seed_traffic(people, 2, model=EVIL, tags={"feature": EVIL}, prefix="evil-")
    c = Console(people, "admin@example.com")
    page = c.get("/simulator")
    assert EVIL not in page.text and "&lt;script&gt;" in page.text       # forecast rows
    r = c.post("/simulator", {"range": "24h", "route_model": EVIL, "policy_source": "ad_hoc", "strategy": "cost",
                              "candidates": "model-b", "tag_keys": "feature"}, htmx=True)
    assert r.status_code == 200, r.text[:800]
    assert EVIL not in r.text and "&lt;script&gt;alert(1)&lt;/script&gt;" in r.text


def test_the_page_changes_nothing(people):
    with people.app_context():
        before = (db.session.query(Policy).count(), db.session.query(Alias).count(), settings.get("log_prompts"))
    c = Console(people, "admin@example.com")
    r = c.post("/simulator", {"range": "24h", "aliases": "model-x=model-a", "prices": "echo=1,1"}, htmx=True)
    assert r.status_code == 200, r.text[:800]
    with people.app_context():
        assert (db.session.query(Policy).count(), db.session.query(Alias).count(),
                settings.get("log_prompts")) == before


def test_cli_prints_the_same_numbers(seeded):
    with seeded.app_context():
        catalog_admin.save_policy("cheap", strategy="weighted", candidates=["model-b"])
    runner = seeded.test_cli_runner()
    r = runner.invoke(args=["simulate", "--range", "24h", "--policy", "model-a=cheap", "--forecast"])
    assert r.exit_code == 0, r.output
    assert "actual $0.20, simulated $0.02" in r.output
    assert "p-model-b/echo\t0\t10\t$0.00\t$0.02\t+$0.02" in r.output
    r = runner.invoke(args=["simulate", "--range", "24h", "--price", "model-a=0.002,0.004"])
    assert "simulated $0.04" in r.output
    day = f"{utcnow() - timedelta(hours=1):%Y-%m-%d}"
    r = runner.invoke(args=["simulate", "--from", day, "--to", day, "--alias", "model-a=model-c"])
    assert r.exit_code == 0, r.output
    assert "actual $0.20, simulated $0.06" in r.output           # an alias named like a model wins, as in routing
    r = runner.invoke(args=["simulate", "--from", day])
    assert r.exit_code == 1 and "--from and --to" in r.output
    r = runner.invoke(args=["simulate", "--policy", "model-a=nope"])
    assert r.exit_code == 1 and "no policy named 'nope'" in r.output


def test_the_forecast_chart_compares_budgets_of_any_size_in_percent():
    from gateway.services.reporting import simulator_charts
    start = datetime(2026, 12, 1)
    rows = [forecast.Forecast("team", "tiny", 0.02, 0.001, 0.04, 0.05, None, start, start + timedelta(days=31)),
            forecast.Forecast("tag", "feature=search", 5.0, 0.5, 20.0, 12.5, start, start, start + timedelta(days=31)),
            forecast.Forecast("team", "daily", 1.0, 1.0, 31.0, None, None, start, start + timedelta(days=31))]
    fig = simulator_charts.forecast_figure(rows)
    spent, rest, budget = fig["data"]
    assert spent["x"] == ["team: tiny", "tag: feature=search"]         # no monthly budget: table only
    assert spent["y"] == [40.0, 40.0] and rest["y"] == [40.0, 120.0] and budget["y"] == [100, 100]
    assert spent["customdata"][0] == "$0.02 (40% of $0.05)"


def test_simulator_money_axes_never_use_si_suffixes():
    from gateway.services.reporting import simulator_charts
    cell = simulator.Cell()
    cell.actual_cost, cell.sim_cost = 0.0004, 0.0001
    fig = simulator_charts._bars("Cost per model (USD)", [("m", cell)], lambda c: c.actual_cost,
                                 lambda c: c.sim_cost, "USD")
    assert fig["layout"]["yaxis"]["tickformat"].endswith("f")       # fixed decimals: $0.0004, not $400µ
    assert fig["data"][0]["customdata"] == ["$0.0004"]
