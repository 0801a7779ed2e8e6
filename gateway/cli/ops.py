"""Running the gateway: bootstrap, serve, the mock upstream, config apply, the usage rollup."""
from __future__ import annotations

import os
import sys

import click
from flask.cli import with_appcontext

from gateway import bootstrap
from gateway.cli import audited, command
from gateway.extensions import db
from gateway.services.accounting import retention, rollup

config_cli = click.Group("config", help="Declarative configuration (GATEWAY_CONFIG=gateway.yaml).")
usage_cli = click.Group("usage", help="Usage records, their rollup and retention.")


@click.command("bootstrap")
@click.option("--base-url", default="http://127.0.0.1:8080", help="shown in the demo curl line")
@with_appcontext        # not @command: bootstrap migrates and seeds by itself
def bootstrap_cmd(base_url):
    """Migrate, seed prices, create a first admin and the demo (on an empty database)."""
    bootstrap.bootstrap(click.echo, base_url)


WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}    # every interface: loopback reaches it


def address(host: str, port: int) -> str:
    """host:port, an IPv6 host in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def local_url(host: str, port: int) -> str:
    """The URL a client on this machine uses for a server bound to host:port."""
    return "http://" + address(WILDCARDS.get(host, host), port)


@click.command("serve")
@click.option("--host", default=lambda: os.environ.get("HOST") or "127.0.0.1", show_default="$HOST or 127.0.0.1",
              help="address to listen on; 0.0.0.0 opens the gateway to the network")
@click.option("--port", default=lambda: os.environ.get("PORT") or 8080, type=click.IntRange(1, 65535),
              show_default="$PORT or 8080")
@click.option("--workers", default=lambda: os.environ.get("WEB_CONCURRENCY") or 2, type=click.IntRange(1),
              show_default="$WEB_CONCURRENCY or 2", help="gunicorn worker processes (gevent)")
@with_appcontext
def serve_cmd(host, port, workers):
    """Migrate and seed in this process, then serve with gunicorn and gevent workers."""
    bootstrap.bootstrap(click.echo, os.environ.get("GATEWAY_PUBLIC_URL") or local_url(host, port))
    if host in WILDCARDS:
        click.echo(f"Listening on every interface, port {port}: reachable from the network.")
    db.engine.dispose()                         # no connection of ours outlives the exec
    os.environ["GATEWAY_SKIP_BOOTSTRAP"] = "1"  # done above: gunicorn's on_starting need not repeat it
    argv = [sys.executable, "-m", "gunicorn", "-c", "python:gateway.gunicorn_conf",
            "-b", address(host, port), "-w", str(workers), "gateway.wsgi:app"]
    sys.stdout.flush()
    # exec: a fresh process where gevent patches before anything imports ssl
    os.execv(sys.executable, argv)


@click.command("mock-upstream")
@click.option("--host", default="127.0.0.1")
@click.option("--port", default=9000, type=int)
def mock_upstream_cmd(host, port):
    """Run the fake OpenAI/Anthropic/Gemini upstream for tests, demos and benchmarks."""
    sys.stdout.flush()
    os.execv(sys.executable, [sys.executable, "-m", "gateway.mock_upstream",
                              "--host", host, "--port", str(port)])


@command(config_cli, "apply")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
def config_apply(path):
    """Apply a gateway.yaml now (the same as at start; idempotent)."""
    from gateway.services.admin import declarative     # lazy: PyYAML would add ~20 ms to every create_app()
    summary = declarative.apply_file(path, click.echo)
    audited("config.apply", os.path.abspath(path), **summary)


@command(usage_cli, "rebuild-rollup")
@click.option("--days-per-batch", default=1, show_default=True, help="days of records per transaction")
def usage_rebuild_rollup(days_per_batch):
    """Recompute the usage rollup (charts) from the raw records, e.g. after an upgrade."""
    n = rollup.rebuild(days_per_batch, echo=click.echo)
    audited("usage.rebuild_rollup", "usage_rollup", records=n)
    click.echo(f"rollup rebuilt from {n} usage records")


def _days(value: str) -> int:
    """`90d` or `90` as 90 days."""
    raw = value.strip().lower().removesuffix("d")
    if not raw.isdigit() or int(raw) < 1:
        raise click.BadParameter("use a number of days, e.g. 90d", param_hint="--older-than")
    return int(raw)


@command(usage_cli, "purge")
@click.option("--older-than", "older_than", required=True, help="age in days, e.g. 90d")
@click.option("--prompts-only", is_flag=True, help="erase stored prompts and answers, keep the records")
def usage_purge(older_than, prompts_only):
    """Delete usage records (and erase stored prompts) older than a number of days, in batches.
    Records go up to that day's midnight (UTC); the usage charts keep their totals."""
    days = _days(older_than)
    try:
        done = retention.purge(None if prompts_only else days, days, echo=click.echo)
    except retention.Busy as e:
        raise click.ClickException(str(e)) from None
    audited("usage.purge", "usage_records", older_than_days=days, prompts_only=prompts_only,
            prompts_erased=done.prompts, records_deleted=0 if prompts_only else done.usage)
    click.echo(f"erased the stored prompts of {done.prompts} records before {done.prompts_before:%Y-%m-%d %H:%M} UTC")
    if not prompts_only:
        click.echo(f"deleted {done.usage} usage records and {done.reservations} settled reservations "
                   f"before {done.usage_before:%Y-%m-%d} 00:00 UTC")


COMMANDS = (bootstrap_cmd, serve_cmd, mock_upstream_cmd, config_cli, usage_cli)
