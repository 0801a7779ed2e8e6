"""The policy simulator's charts as Plotly figures (plain dicts, drawn by static/console.js
like the usage charts): cost per model, requests per deployment, cumulative cost over time,
and the month-end forecast against each budget."""
from __future__ import annotations

from gateway.formatting import money
from gateway.services.reporting.figure_style import finish, money_axis, money_hover
from gateway.services.reporting.forecast import Forecast
from gateway.services.reporting.simulator import Cell, Result

TOP = 12        # bars per chart, biggest first
ACTUAL, SIMULATED, BUDGET = "#8a94a6", "#2f6fed", "#b00020"


def _top(cells: dict[str, Cell], key) -> list[tuple[str, Cell]]:
    return sorted(cells.items(), key=lambda kv: key(kv[1]), reverse=True)[:TOP]


def _bars(title: str, rows: list[tuple[str, Cell]], actual, simulated, ytitle: str) -> dict:
    names = [name for name, _ in rows]
    ya, ys = [round(actual(c), 6) for _, c in rows], [round(simulated(c), 6) for _, c in rows]
    yaxis = {"title": {"text": ytitle}, "rangemode": "tozero"}
    dollars = ytitle == "USD"
    if dollars:
        yaxis.update(money_axis(max(ya + ys, default=0)))
    return {"data": [{"type": "bar", "name": "actual", "x": names, "y": ya, "marker": {"color": ACTUAL},
                      **(money_hover(ya) if dollars else {})},
                     {"type": "bar", "name": "simulated", "x": names, "y": ys, "marker": {"color": SIMULATED},
                      **(money_hover(ys) if dollars else {})}],
            "layout": {"title": {"text": title}, "barmode": "group", "yaxis": yaxis}}


def figures(result: Result) -> dict[str, dict]:
    """Cost per model, requests per deployment and the cumulative cost, actual against simulated."""
    figs = {
        "models": _bars("Cost per model (USD)", _top(result.models, lambda c: max(c.actual_cost, c.sim_cost)),
                        lambda c: c.actual_cost, lambda c: c.sim_cost, "USD"),
        "deployments": _bars("Requests per deployment",
                             _top(result.deployments, lambda c: max(c.actual_requests, c.sim_requests)),
                             lambda c: c.actual_requests, lambda c: c.sim_requests, "requests"),
    }
    times = sorted(result.buckets)
    xs = [result.start.isoformat()] + [t.isoformat() for t in times]     # from zero at the range's start
    actual = simulated = 0.0
    ya, ys = [0.0], [0.0]
    for t in times:
        actual += result.buckets[t].actual_cost
        simulated += result.buckets[t].sim_cost
        ya.append(round(actual, 6))
        ys.append(round(simulated, 6))
    figs["timeline"] = {
        "data": [{"type": "scatter", "mode": "lines+markers", "name": "actual", "x": xs, "y": ya,
                  "line": {"color": ACTUAL, "shape": "hv"}, **money_hover(ya)},
                 {"type": "scatter", "mode": "lines+markers", "name": "simulated", "x": xs, "y": ys,
                  "line": {"color": SIMULATED, "shape": "hv"}, **money_hover(ys)}],
        "layout": {"title": {"text": "Cost over the range (USD, cumulative)"},
                   "xaxis": {"type": "date", "range": [result.start.isoformat(), result.end.isoformat()]},
                   "yaxis": {"rangemode": "tozero", **money_axis(max(ya + ys))}}}
    return _finish(figs)


def forecast_figure(rows: list[Forecast]) -> dict:
    """Spent so far and the projected rest of the month per monthly budget, as percent of that
    budget (a $0.05 team and a $12.50 tag side by side stay readable); hovers say the dollars."""
    rows = [f for f in rows if f.budget]
    names = [f"{f.kind}: {f.name}" for f in rows]

    def bar(name: str, usd: list[float], color: str) -> dict:
        pct = [round(v / f.budget * 100, 2) for v, f in zip(usd, rows, strict=True)]
        return {"type": "bar", "name": name, "x": names, "y": pct, "marker": {"color": color},
                "customdata": [f"{money(v)} ({p:.0f}% of {money(f.budget)})"
                               for v, p, f in zip(usd, pct, rows, strict=True)],
                "hovertemplate": "%{x}<br>%{customdata}<extra>%{fullData.name}</extra>"}

    fig = {"data": [bar("spent so far", [f.spent for f in rows], SIMULATED),
                    bar("projected rest of month", [max(f.projected - f.spent, 0) for f in rows], "#9bb7f5"),
                    {"type": "scatter", "mode": "markers", "name": "monthly budget", "x": names, "y": [100] * len(rows),
                     "marker": {"symbol": "line-ew-open", "size": 40, "color": BUDGET, "line": {"width": 3}},
                     "hoverinfo": "skip"}],
           "layout": {"title": {"text": "Month-end forecast (% of each monthly budget)"}, "barmode": "stack",
                      "yaxis": {"rangemode": "tozero", "ticksuffix": "%"}}}
    return _finish({"forecast": fig})["forecast"]


def _finish(figs: dict[str, dict]) -> dict[str, dict]:
    for fig in figs.values():
        finish(fig, height=320, margin={"l": 50, "r": 20, "t": 40, "b": 60}, legend={"orientation": "h", "y": -0.25})
    return figs
