"""Services, grouped by area: routing/ (which deployment serves a request, and calling it),
accounting/ (who may spend what, and what was spent), reporting/ (the console's reads) and
admin/ (configuration writes shared by console, CLI and gateway.yaml).

init_app() builds every per-process object the services keep (caches, counters, statistics,
the usage writer) in one place, from the app's config."""
from __future__ import annotations

import atexit
import functools
import threading

from flask import Flask


def init_app(app: Flask) -> None:
    """Build the services' state for `app`; nothing connects or starts a thread here."""
    from gateway import metrics, pubsub
    from gateway.auth import throttle
    from gateway.database import LockBreaker
    from gateway.redis_link import RedisLink
    from gateway.services import gauges
    from gateway.services.response_store import ResponseStore
    from gateway.services.accounting import alerts, key_cache, keys, leases, limits, pricing, retention, usage
    from gateway.services.accounting.counters import DbCounters
    from gateway.services.accounting.redis_counters import RedisCounters
    from gateway.services.accounting.settle_retry import SettleRetry
    from gateway.services.admin import settings
    from gateway.services.routing.breaker_log import BreakerLog
    from gateway.services.routing.catalog import Catalog
    from gateway.services.routing.health import Health
    from gateway.services.routing.health_alerts import AlertChecker

    c = app.config
    app.extensions["db_locks"] = LockBreaker(c["UNAVAILABLE_RETRY_AFTER"])
    # One Redis client and breaker per process: when one user of Redis finds it down, the
    # others skip it too instead of each paying its own timeout.
    redis = RedisLink(c["REDIS_URL"], c["REDIS_CONNECT_TIMEOUT"], c["REDIS_TIMEOUT"], c["REDIS_BREAKER_SECONDS"])
    bus = pubsub.Bus(c["REDIS_URL"], redis)
    counters = RedisCounters(app, redis) if c["REDIS_URL"] else DbCounters(app)
    if not c["REDIS_URL"] and leases.enabled(app):     # admission without a write per request
        counters = leases.LeasedCounters(app, counters)
    settle_retry = SettleRetry(app, counters.settle, give_up_after=float(c["QUOTA_RESERVATION_TTL"]))
    key_lookups = key_cache.KeyCache(keys.lookup, c["KEY_CACHE_SECONDS"], bus=bus if bus.url else None,
                                     stale=c["KEY_CACHE_STALE_SECONDS"], wait=c["DB_LOCK_TIMEOUT"])
    recorder = usage.UsageRecorder(app)
    health = Health(app, redis)
    # Breaker transitions (downtime history) are written by the usage writer's thread.
    health.breaker_log = BreakerLog(app)
    recorder.also_flush.append(health.breaker_log.flush)
    setting_values: dict = {}
    app.extensions.update({
        "redis": redis,
        "pubsub": bus,
        "catalog": Catalog(c["CATALOG_CACHE_SECONDS"]),
        "price_book": pricing.PriceBook(c["CATALOG_CACHE_SECONDS"]),
        "tag_budgets": limits.TagBudgetCache(c["CATALOG_CACHE_SECONDS"]),
        "health": health,
        "breaker_log": health.breaker_log,
        "key_cache": key_lookups,
        "quota_backend": counters,
        "settle_retry": settle_retry,
        "settings_cache": setting_values,
        "alerts_fired": alerts.Fired(),
        "alert_checker": AlertChecker(app),
        "shadow_slots": threading.BoundedSemaphore(int(c["SHADOW_MAX_CONCURRENCY"])),
        "usage": recorder,
        "metrics": metrics.Metrics(functools.partial(gauges.known_model, app),
                                   functools.partial(gauges.read, app)),
        "retention": retention.RetentionJob(app),
        "login_failures": throttle.build(app),
        "response_store": ResponseStore(app, redis if c["REDIS_URL"] else None, c["RESPONSE_STORE_REDIS_PREFIX"]),
    })
    if bus.url:     # another process changed a key or a setting: drop our copy
        bus.subscribe(key_cache.INVALIDATE_CHANNEL, key_lookups.on_message, key_lookups.drop_all)
        bus.subscribe(settings.INVALIDATE_CHANNEL, lambda name: setting_values.pop(name, None),
                      setting_values.clear)
    atexit.register(recorder.drain)      # also the batch the writer is in the middle of
    atexit.register(settle_retry.run_once)
    if isinstance(counters, leases.LeasedCounters):
        atexit.register(counters.close)     # gunicorn's worker_exit calls it first (runs once)
