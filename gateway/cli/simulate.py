"""`gateway simulate`: the console's policy simulator from the shell, printing the same tables
(and, with --forecast, the month-end forecast). It changes nothing."""
from __future__ import annotations

import click

from gateway.cli import command
from gateway.errors import InvalidRequest
from gateway.formatting import change, money
from gateway.services.reporting import filters, forecast, simulator

_group = click.Group("_simulate")     # `command` adds to a group; the command itself is top-level


def _row(name: str, c: simulator.Cell) -> str:
    pct = f" ({change(c.diff_pct)})" if c.diff_pct is not None else ""
    sign = "+" if c.diff > 0 else ""
    return (f"{name}\t{c.actual_requests:g}\t{round(c.sim_requests, 2):g}\t{money(c.actual_cost)}\t"
            f"{money(c.sim_cost)}\t{sign}{money(c.diff)}{pct}")


def _table(title: str, cells: dict[str, simulator.Cell]) -> None:
    click.echo(f"\n{title}\nname\trequests\tsimulated\tcost\tsimulated cost\tdifference")
    for name, c in sorted(cells.items(), key=lambda kv: -max(kv[1].actual_cost, kv[1].sim_cost)):
        click.echo(_row(name, c))


@command(_group, "simulate")
@click.option("--from", "start", help="first day, YYYY-MM-DD (with --to); else --range")
@click.option("--to", "end", help="last day, YYYY-MM-DD, inclusive")
@click.option("--range", "range_", type=click.Choice(list(filters.RANGES)), default="7d", show_default=True)
@click.option("--model", default="", help="only the records of this requested model")
@click.option("--policy", "routes", multiple=True, metavar="MODEL=POLICY",
              help="route a requested model (or * for every one) via a policy; repeatable")
@click.option("--price", "prices", multiple=True, metavar="MODEL=IN,OUT", help="USD per 1K tokens; repeatable")
@click.option("--alias", "aliases", multiple=True, metavar="ALIAS=TARGET", help="repeatable")
@click.option("--tags", default="", help="tag names to break down by, e.g. feature,project")
@click.option("--forecast", "with_forecast", is_flag=True, help="also print the month-end forecast")
def simulate_cmd(start, end, range_, model, routes, prices, aliases, tags, with_forecast):
    """Replay recorded traffic under another policy, price table or alias target (offline)."""
    if bool(start) != bool(end):
        raise InvalidRequest("Give both --from and --to, or neither.")
    args = {"range": "custom", "start": start, "end": end} if start else {"range": range_}
    f, errors = filters.parse_filter({**args, "model": model})
    if errors:
        raise InvalidRequest(" ".join(errors.values()))
    scenario = simulator.Scenario(simulator.parse_pairs("\n".join(routes), "policy"),
                                  simulator.parse_prices("\n".join(prices)),
                                  simulator.parse_pairs("\n".join(aliases), "aliases"))
    tag_keys = tuple(t.strip() for t in tags.split(",") if t.strip())
    result = simulator.replay(f, scenario, tag_keys)
    t = result.totals
    click.echo(f"{f.start:%Y-%m-%d %H:%M} to {f.end:%Y-%m-%d %H:%M} UTC: {t.actual_requests:g} requests, "
               f"{result.replayed} replayed; actual {money(t.actual_cost)}, simulated {money(t.sim_cost)}, "
               f"today's configuration {money(result.baseline_cost)}")
    if result.unserved:
        click.echo(f"unroutable under the scenario: {result.unserved:g} requests")
    click.echo(f"splits: {result.method}")
    _table("by model", result.models)
    _table("by deployment", result.deployments)
    _table("by team", result.teams)
    for key, cells in result.tags.items():
        _table(f"by tag {key}", cells)
    if with_forecast:
        click.echo("\nmonth-end forecast (run rate: last 7 days)")
        click.echo("budget of\tspent\tper day\tprojected\tbudget\truns out")
        for row in forecast.forecasts():
            runs_out = row.overrun_at.strftime("%Y-%m-%d") if row.overrun_at else "-"
            click.echo(f"{row.kind}: {row.name}\t{money(row.spent)}\t{money(row.rate_per_day)}\t"
                       f"{money(row.projected)}\t{money(row.budget)}\t{runs_out}")


COMMANDS = (_group.commands["simulate"],)
