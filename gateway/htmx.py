"""htmx helpers: one view serves the full page or just the partial htmx swaps in."""
from __future__ import annotations

from flask import Response, redirect, render_template, request


def is_partial() -> bool:
    """An htmx swap, not a boosted navigation or a history restore (those need the whole page)."""
    h = request.headers
    return (h.get("HX-Request") == "true"
            and h.get("HX-Boosted") != "true"
            and h.get("HX-History-Restore-Request") != "true")


def render(page: str, partial: str, /, **ctx) -> str:
    return render_template(partial if is_partial() else page, **ctx)


def navigate(url: str) -> Response:
    """Go to `url` after a write: HX-Redirect for htmx (it can't see a 3xx), else a 303."""
    if request.headers.get("HX-Request") == "true":
        return Response("", 204, {"HX-Redirect": url})
    return redirect(url, 303)
