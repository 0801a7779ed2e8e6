"""`gateway alerts ...`: the alert history the console's Alerts page shows, and acknowledging."""
from __future__ import annotations

import click

from gateway.cli import audited, command, echo_row
from gateway.errors import InvalidRequest
from gateway.services.accounting import alerts

alerts_cli = click.Group("alerts", help="Spend, token and health alerts.")
COMMANDS = (alerts_cli,)


@command(alerts_cli, "list")
@click.option("--state", type=click.Choice(("open", "acknowledged", "resolved")), help="only alerts in this state")
@click.option("--kind", type=click.Choice(alerts.KINDS))
@click.option("--scope", default="", help="key, team, plan, tag, deployment, or one scope such as team:2")
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
def alerts_list(state, kind, scope, limit):
    """Alerts, newest first: id, when, kind, scope, state, message."""
    rows, total = alerts.history(None, kind=kind or "", scope=scope, state=state or "", per_page=limit)
    for a in rows:
        status = "acknowledged" if a.acknowledged else "resolved" if a.resolved_at else "open"
        echo_row((a.id, f"{a.created_at:%Y-%m-%d %H:%M}", a.kind, a.scope, status, a.message or a.label))
    if total > len(rows):
        click.echo(f"... {total - len(rows)} more (--limit)")


@command(alerts_cli, "ack")
@click.argument("alert_id", type=int, required=False)
@click.option("--all", "all_", is_flag=True, help="every open alert")
def alerts_ack(alert_id, all_):
    """Acknowledge one alert (by id) or --all: they leave the console banner."""
    if (alert_id is None) == (not all_):
        raise InvalidRequest("Give an alert id or --all.")
    n = alerts.acknowledge(None if all_ else alert_id, by="cli")
    if all_:
        audited("alert.acknowledge_all", "alerts", count=n)
    elif n:
        audited("alert.acknowledge", f"alert {alert_id}", alert_id=alert_id)
    click.echo(f"{n} alert{'' if n == 1 else 's'} acknowledged")
