"""`gateway models ...`: the model catalogue (mode, context window, capabilities of public models)."""
from __future__ import annotations

from pathlib import Path

import click
import orjson
from flask import current_app

from gateway.cli import audited, command
from gateway.errors import InvalidRequest
from gateway.providers import model_catalogue, ssrf
from gateway.providers.base import UpstreamRequest

models_cli = click.Group("models", help="The model catalogue: modes, context windows, capabilities.")
COMMANDS = (models_cli,)


def _read(source: str) -> tuple[bytes, str]:
    """The LiteLLM JSON at a path or an http(s) URL; a URL goes through the SSRF policy."""
    if "://" not in source:
        return Path(source).expanduser().read_bytes(), str(Path(source).expanduser().resolve())
    try:
        ssrf.check_url(source, current_app.config["ALLOW_PRIVATE_UPSTREAMS"])
    except ValueError as e:
        raise InvalidRequest(f"URL refused: {e}") from None
    resp = current_app.extensions["transport"].send(UpstreamRequest(source, {"accept": "application/json"},
                                                                    b"", method="GET"))
    data = resp.read()
    if resp.status != 200:
        raise InvalidRequest(f"{ssrf.display_url(source)} answered HTTP {resp.status}")
    return data, ssrf.display_url(source)


@command(models_cli, "refresh")
@click.option("--from", "source", default=model_catalogue.SOURCE_URL, show_default=True,
              help="LiteLLM's model_prices_and_context_window.json: a file or an http(s) URL")
def models_refresh(source):
    """Rebuild the catalogue into the instance folder, where it takes precedence over the shipped one."""
    data, where = _read(source)
    try:
        litellm = orjson.loads(data)
    except orjson.JSONDecodeError as e:
        raise click.ClickException(f"{where} is not JSON: {e}") from None
    if not isinstance(litellm, dict):
        raise click.ClickException(f"{where} is not LiteLLM's model map")
    built = model_catalogue.build(litellm, f"LiteLLM model_prices_and_context_window.json from {where}")
    if not built["models"]:
        raise click.ClickException(f"{where} lists no model the catalogue can use; nothing written")
    path = model_catalogue.write(built, current_app.instance_path)
    audited("models.refresh", str(path), source=where, models=len(built["models"]))
    click.echo(f"catalogue: {len(built['models'])} models from {where} -> {path}")


@command(models_cli, "show")
@click.argument("name")
def models_show(name):
    """What the catalogue says about the model NAME."""
    info = model_catalogue.lookup(name, current_app.instance_path)
    if info is None:
        raise click.ClickException(f"the catalogue does not know {name}")
    click.echo(f"{name}\tmode={info.mode}\tcontext={info.context_window or '-'}\t"
               f"max_output={info.max_output or '-'}\tcaps={','.join(info.capabilities) or '-'}")


@command(models_cli, "about")
def models_about():
    """Which catalogue file is in use, its source and date."""
    a = model_catalogue.about(current_app.instance_path)
    click.echo(f"{a['path']}\t{a['count']} models\tgenerated {a.get('generated', '?')}\t{a.get('source', '')}")
