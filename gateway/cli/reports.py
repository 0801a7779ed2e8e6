"""`gateway usage report`: the monthly cost-allocation workbook (services/reporting/monthly.py),
the same file the console's usage page downloads, for everything (no member scope)."""
from __future__ import annotations

import os

import click

from gateway.cli import audited, command
from gateway.cli.ops import usage_cli
from gateway.formatting import money
from gateway.services.reporting import monthly


@command(usage_cli, "report")
@click.option("--month", required=True, help="calendar month, YYYY-MM (UTC)")
@click.option("--by", default=monthly.DEFAULT_BY, show_default=True,
              help="sheets per: team, key, plan, model, provider or tag:NAME, comma-separated")
@click.option("--out", "out", type=click.Path(dir_okay=False, writable=True),
              help="file to write [default: cost-allocation-YYYY-MM.xlsx]")
def usage_report(month, by, out):
    """Write the monthly cost-allocation workbook: a summary sheet, then one sheet per team,
    tag value and key (as --by says), each with a table, totals and a chart."""
    report = monthly.build(month, monthly.parse_by(by))
    path = out or f"cost-allocation-{report.month}.xlsx"
    data = monthly.workbook_bytes(report)
    with open(path, "wb") as f:
        f.write(data)
    audited("usage.report", report.month, by=",".join(d.spec for d in report.by), file=os.path.abspath(path))
    t = report.total
    click.echo(f"{report.month}: {t.requests:,} requests, {t.tokens:,} tokens, {money(t.cost)}; "
               f"{sum(len(g) for g in report.by.values())} groups")
    click.echo(path)


COMMANDS = ()       # `report` joins the `usage` group of cli/ops.py
