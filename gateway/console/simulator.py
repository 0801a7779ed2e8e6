"""The policy simulator page: recorded traffic replayed under another policy, price table or
alias target, and the month-end forecast per team and tag budget. It changes nothing; admins
and viewers may run it (members see only their own traffic elsewhere, and a replay is about the
whole gateway's routing, so they may not)."""
from __future__ import annotations

from flask import request

from gateway.auth.rbac import SEE_ALL, require_role
from gateway.console import bp
from gateway.errors import InvalidRequest
from gateway.htmx import is_partial, render
from gateway.services.reporting import filters, forecast, simulator, simulator_charts
from gateway.services.routing import catalog
from gateway.services.routing.policies import STRATEGIES

FIELDS = ("range", "start", "end", "model", "tag", "route_model", "policy_source", "policy", "strategy",
          "candidates", "weights", "ab_model", "ab_percent", "prices", "aliases", "tag_keys")


def _split(text: str) -> list[str]:
    return [s.strip() for s in (text or "").replace("\n", ",").split(",") if s.strip()]


def _scenario(form) -> tuple[filters.UsageFilter, simulator.Scenario, tuple[str, ...], dict]:
    """The filter, scenario and tag names from the form, and field -> message for what is wrong."""
    f, errors = filters.parse_filter(form)
    routes: dict = {}
    prices: dict = {}
    aliases: dict = {}
    model = form.get("route_model", "").strip()[:200]
    source = form.get("policy_source") or "named"
    if source == "named" and form.get("policy", "").strip():
        if not model:
            errors["route_model"] = "Name the requested model or alias to route (or * for every model)."
        routes[model] = form["policy"].strip()
    elif source == "named" and model:
        errors["policy"] = f"Pick the policy to route '{model}' through."
    elif source == "ad_hoc":
        spec: dict = {"strategy": form.get("strategy", "weighted"), "candidates": _split(form.get("candidates", ""))}
        if not spec["candidates"] and form.get("strategy") == "weighted":
            errors["candidates"] = "A weighted policy needs its candidates."
        try:
            if form.get("weights", "").strip():
                spec["weights"] = simulator.parse_weights(form["weights"])
        except InvalidRequest as e:
            errors["weights"] = e.message
        if form.get("ab_model", "").strip():
            try:
                percent = float(form.get("ab_percent") or "")
            except ValueError:
                errors["ab_percent"] = "A percentage from 0 to 100."
                percent = 0.0
            spec["ab"] = {"model": form["ab_model"].strip(), "percent": percent}
        if not model:
            errors["route_model"] = "Name the requested model or alias to route (or * for every model)."
        routes[model] = spec
    for name, parse in (("prices", simulator.parse_prices),
                        ("aliases", lambda text: simulator.parse_pairs(text, "aliases"))):
        try:
            parsed = parse(form.get(name, ""))
        except InvalidRequest as e:
            errors[name] = e.message
            continue
        (prices if name == "prices" else aliases).update(parsed)
    tag_keys = tuple(_split(form.get("tag_keys", "")))
    if len(tag_keys) > simulator.MAX_TAG_KEYS:
        errors["tag_keys"] = f"At most {simulator.MAX_TAG_KEYS} tag names."
    scenario = simulator.Scenario(routes, prices, aliases)
    for name, message in simulator.validate(scenario, catalog.catalog().snapshot()).items():
        errors.setdefault(name, message)
    return f, scenario, tag_keys, errors


def _render(form, result=None, errors=None):
    """The page, or for htmx the panel (form and results) alone; the forecast is the page's."""
    ctx = {"form": form, "errors": errors or {}, "result": result, "strategies": STRATEGIES,
           "charts": simulator_charts.figures(result) if result is not None else {},
           "policy_names": simulator.known_policies(), "model_names": catalog.model_names(),
           "method": simulator.SPLIT_METHOD}
    if not is_partial():
        basis = request.args.get("basis", "7d")
        basis = basis if basis in forecast.BASES else "7d"
        rows = forecast.forecasts(basis)
        ctx.update(forecasts=rows, basis=basis,
                   forecast_chart=simulator_charts.forecast_figure(rows) if any(f.budget for f in rows) else None)
    return render("console/simulator.html", "console/_simulator_panel.html", **ctx)


@bp.get("/simulator")
@require_role(*SEE_ALL)
def simulator_page():
    return _render({"range": "7d", "policy_source": "named"})


@bp.post("/simulator")
@require_role(*SEE_ALL)
def simulator_run():
    form = {name: request.form.get(name, "") for name in FIELDS}
    f, scenario, tag_keys, errors = _scenario(form)
    if not errors:
        try:
            return _render(form, simulator.replay(f, scenario, tag_keys))
        except InvalidRequest as e:
            errors = {e.param or "route_model": e.message}
    return _render(form, errors=errors), 422
