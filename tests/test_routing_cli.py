"""The routing CLI groups: aliases, policies, deployments, config."""
from __future__ import annotations

from sqlalchemy import select

from gateway.extensions import db
from gateway.models import Alias, ApiKey, AuditLog, Deployment, Policy
from tests.helpers import add_provider, make_key


def test_routing_commands(sqlite_app, tmp_path):
    app = sqlite_app
    add_provider(app, "up", "mock", None, ["m"])
    secret = make_key(app)
    run = app.test_cli_runner().invoke

    out = run(args=["deployments", "add", "m", "up", "--upstream", "echo", "--region", "eu-west-1",
                    "--input-price", "0.001", "--output-price", "0.002", "--capabilities", "tools,json",
                    "--rpm", "60", "--context-window", "8000"])
    assert out.exit_code == 0, out.output
    dep_id = int(out.output.split()[1].rstrip(":"))
    out = run(args=["deployments", "update", str(dep_id), "--weight", "3", "--disabled"])
    assert out.exit_code == 0, out.output
    assert "eu-west-1" in run(args=["deployments", "list"]).output
    out = run(args=["aliases", "set", "chat-default", "policy:eu"])
    assert out.exit_code == 1 and "no routing policy 'eu'" in out.output     # not yet
    out = run(args=["policies", "set", "eu", "--strategy", "cost", "--candidates", "m", "--regions", "eu",
                    "--ab", "m:10", "--shadow", "m:5"])
    assert out.exit_code == 0, out.output
    assert run(args=["aliases", "set", "chat-default", "policy:eu"]).exit_code == 0
    assert run(args=["policies", "set", "bad", "--ab", "m:x"]).exit_code != 0
    assert run(args=["policies", "bind", secret[:14], "eu"]).exit_code == 0
    assert "chat-default" in run(args=["aliases", "list"]).output
    assert "eu" in run(args=["policies", "list"]).output
    cfg = tmp_path / "g.yaml"
    cfg.write_text("aliases:\n  fast: m\n")
    out = run(args=["config", "apply", str(cfg)])
    assert out.exit_code == 0 and "1 aliases" in out.output, out.output
    assert run(args=["aliases", "delete", "nope"]).exit_code != 0
    with app.app_context():
        d = db.session.get(Deployment, dep_id)
        assert (d.upstream_model, d.region, d.weight, d.enabled, d.rpm_limit, d.capabilities) == \
            ("echo", "eu-west-1", 3, False, 60, ["json", "tools"])
        p = db.session.scalar(select(Policy).where(Policy.name == "eu"))
        assert p.ab == {"model": "m", "percent": 10.0} and p.regions == ["eu"]
        assert db.session.scalar(select(ApiKey)).policy == "eu"
        assert {a.name for a in db.session.scalars(select(Alias))} == {"chat-default", "fast"}


def test_alias_history_and_rollback_commands(sqlite_app):
    app = sqlite_app
    add_provider(app, "up", "mock", None, ["m1", "m2"])
    run = app.test_cli_runner().invoke
    assert run(args=["aliases", "set", "stable", "m1"]).exit_code == 0
    assert run(args=["aliases", "set", "stable", "m2"]).exit_code == 0
    assert run(args=["aliases", "set", "stable", "nope"]).exit_code == 1
    out = run(args=["aliases", "rollback", "stable"])
    assert out.exit_code == 0 and "stable -> m1 (was m2)" in out.output, out.output
    lines = run(args=["aliases", "history", "stable"]).output.splitlines()
    assert [line.split("\t")[1:4] for line in lines] == [
        ["rollback", "m1", "was m2"], ["set", "m2", "was m1"], ["set", "m1", "was -"]]
    assert all(line.split("\t")[4].startswith("cli:") and line.endswith("\tcli") for line in lines)
    with app.app_context():
        rows = db.session.scalars(select(AuditLog).where(AuditLog.action == "alias.rollback")).all()
        assert [(r.target, r.details["target"], r.details["previous_target"]) for r in rows] == \
            [("stable", "m1", "m2")]


def test_deployment_commands_share_the_console_checks(sqlite_app):
    app = sqlite_app
    add_provider(app, "up", "mock", None, [])
    run = app.test_cli_runner().invoke
    out = run(args=["deployments", "add", "m", "up", "--upstream", "echo", "--weight", "-1"])
    assert out.exit_code == 1 and "0 or more" in out.output
    assert run(args=["deployments", "add", "m", "up", "--rpm", "0"]).exit_code == 1
    out = run(args=["deployments", "add", "m", "up", "--upstream", "echo"])
    dep_id = int(out.output.split()[1].rstrip(":"))
    out = run(args=["deployments", "update", str(dep_id), "--upstream", "echo+latency=1", "--weight", "4"])
    assert out.exit_code == 0 and f"deployment {dep_id}: m -> up/echo+latency=1" in out.output, out.output
    assert run(args=["deployments", "delete", str(dep_id), "--yes"]).exit_code == 0
    with app.app_context():
        assert db.session.get(Deployment, dep_id) is None
        assert [r.action for r in db.session.scalars(select(AuditLog).order_by(AuditLog.id))][-3:] == [
            "deployment.save", "deployment.update", "deployment.delete"]
