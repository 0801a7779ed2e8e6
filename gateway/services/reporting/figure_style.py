"""What every console chart shares (Plotly figures as plain dicts, drawn by static/console.js
under the CSP): one look, and dollars written as money() writes them."""
from __future__ import annotations

import math

from gateway.formatting import money

FONT = {"family": "system-ui, sans-serif", "size": 12}


def finish(fig: dict, **layout) -> dict:
    """`fig` with the console's look (font, no template, resizing) and chart config; `layout`
    (height, margin, legend...) is laid over the figure's own layout."""
    fig["layout"].update(font=dict(FONT), template={}, autosize=True, **layout)
    fig["config"] = {"displaylogo": False, "responsive": True}
    return fig


def money_hover(values: list[float]) -> dict:
    """A trace's hover text as money() writes it ($0.000075, $1,234.50), never Plotly's 7.5e-05 or 75µ."""
    return {"customdata": [money(v) for v in values], "hovertemplate": "%{x}<br>%{customdata}<extra>%{fullData.name}</extra>"}


def money_axis(top: float) -> dict:
    """A y axis in dollars with enough decimals for its largest value: $0.00004, $0.25, $1,200."""
    if top >= 10:
        return {"tickprefix": "$", "tickformat": ",.0f"}
    if top >= 0.1 or top <= 0:
        return {"tickprefix": "$", "tickformat": ",.2f"}
    places = -math.floor(math.log10(top)) + 1      # two significant digits of the top, trailing zeros dropped
    return {"tickprefix": "$", "tickformat": f",.{places}~f"}
