"""Limits checked before a request goes upstream, settled after (issue: keys, quotas, budgets).

The proxy calls admit() once a request is authenticated and valid, and relay calls settle()
exactly once per admitted request, with the final usage entry, however the request ended.
"""
from __future__ import annotations

from flask import Flask

from gateway.services.usage import UsageEntry


def admit(call) -> None:
    """Reserve the worst case against every limit that applies, or raise QuotaExceeded /
    RateLimited. May set call.reservation and call.rate_headers."""


def settle(app: Flask, call, entry: UsageEntry) -> None:
    """Turn the reservation into the real usage (or release it). May run outside an app
    context (at the end of a stream), so it must open its own."""
