"""Running the gateway: bootstrap, serve, the mock upstream, config apply, the usage rollup."""
from __future__ import annotations

import os
import sys

import click
from flask.cli import with_appcontext

from gateway import bootstrap
from gateway.cli import audited, command
from gateway.services.accounting import rollup

config_cli = click.Group("config", help="Declarative configuration (GATEWAY_CONFIG=gateway.yaml).")
usage_cli = click.Group("usage", help="Usage records and their rollup.")


@click.command("bootstrap")
@click.option("--base-url", default="http://127.0.0.1:8080", help="shown in the demo curl line")
@with_appcontext        # not @command: bootstrap migrates and seeds by itself
def bootstrap_cmd(base_url):
    """Migrate, seed prices, create a first admin and the demo (on an empty database)."""
    bootstrap.bootstrap(click.echo, base_url)


@click.command("serve")
@click.option("--host", default=lambda: os.environ.get("HOST", "0.0.0.0"))
@click.option("--port", default=lambda: int(os.environ.get("PORT", 8080)), type=int)
@click.option("--workers", default=lambda: int(os.environ.get("WEB_CONCURRENCY", 2)), type=int)
def serve_cmd(host, port, workers):
    """Serve with gunicorn and gevent workers (bootstraps the database first)."""
    os.environ.setdefault("GATEWAY_PUBLIC_URL", f"http://{'127.0.0.1' if host == '0.0.0.0' else host}:{port}")
    argv = [sys.executable, "-m", "gunicorn", "-c", "python:gateway.gunicorn_conf",
            "-b", f"{host}:{port}", "-w", str(workers), "app:app"]
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


COMMANDS = (bootstrap_cmd, serve_cmd, mock_upstream_cmd, config_cli, usage_cli)
