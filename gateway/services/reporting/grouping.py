"""What the usage charts and breakdown table share when grouped: the top groups kept apart,
the rest summed in SQL as one OTHER group (charts.grouped)."""
from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import case, literal, null, or_

TOP_GROUPS = 8          # series drawn per chart; the rest is summed as "other"


class _Other:
    """The groups past the top ones, summed (a key no group value can equal)."""

    def __repr__(self) -> str:
        return "OTHER"


OTHER = _Other()
MANY = ("key", "user")      # groupings that run to hundreds of groups


@dataclass
class Grouped:
    """What the charts and the breakdown table share: per (bucket, group) and per group."""
    by_bucket: dict[tuple, list]
    by_group: dict[tuple, list]


def folded(expr, top: list) -> list:
    """[the group, or NULL outside `top`; 1 outside `top`]: groups past the top ones summed in SQL."""
    named = [v for v in top if v is not None]
    if not (named or None in top):
        return [null(), literal(1)]
    inside = or_(*([expr.in_(named)] if named else []), *([expr.is_(None)] if None in top else []))
    return [case((inside, expr), else_=null()), case((inside, 0), else_=1)]


def top_groups(by_group: dict[tuple, list]) -> list:
    """The TOP_GROUPS groups with the most requests, which the charts draw apart."""
    return sorted((k[0] for k in by_group), key=lambda g: by_group[(g,)][0], reverse=True)[:TOP_GROUPS]
