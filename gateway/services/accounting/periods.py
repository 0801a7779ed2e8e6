"""Quota periods: when a day, week or month starts in a given time zone (as naive UTC)."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from gateway.errors import InvalidRequest

EPOCH = datetime(1970, 1, 1)    # the one "period" of a total (never-resetting) quota


@lru_cache(maxsize=256)
def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidRequest(f"Unknown time zone '{name}'.", param="quota_tz") from None


def _to_utc(local: datetime) -> datetime:
    return local.astimezone(timezone.utc).replace(tzinfo=None)


def bounds(period: str, tz: str, now: datetime) -> tuple[datetime, datetime | None]:
    """(start, end) of the period holding `now` (naive UTC); end None for a total quota."""
    if period in (None, "", "total"):
        return EPOCH, None
    z = zone(tz)
    local = now.replace(tzinfo=timezone.utc).astimezone(z)
    day = local.replace(hour=0, minute=0, second=0, microsecond=0, tzinfo=None)
    if period == "day":
        start, end = day, day + timedelta(days=1)
    elif period == "week":      # ISO weeks start on Monday
        start = day - timedelta(days=day.weekday())
        end = start + timedelta(days=7)
    elif period == "month":
        start = day.replace(day=1)
        end = (start + timedelta(days=32)).replace(day=1)
    else:
        raise InvalidRequest(f"Unknown quota period '{period}'.", param="quota_period")
    return _to_utc(start.replace(tzinfo=z)), _to_utc(end.replace(tzinfo=z))


def minute(now: datetime) -> tuple[datetime, datetime]:
    """The fixed one-minute window for RPM and TPM."""
    start = now.replace(second=0, microsecond=0)
    return start, start + timedelta(minutes=1)
