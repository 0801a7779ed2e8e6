"""Rolling per-deployment statistics, circuit breakers, 429 cool-downs and RPM/TPM caps.

In memory per worker. With REDIS_URL set, a background sync (every HEALTH_SYNC_SECONDS)
pushes this worker's samples and state changes to Redis and reads back the shared view, so
every worker and instance routes on the same numbers. The request path itself calls Redis
only to reserve a slot under a deployment's RPM/TPM cap: one pipelined round trip, and only
for capped deployments. If Redis is unreachable everything keeps working per worker: both go
through the process's RedisLink, whose breaker skips Redis at once while it is down, so a
request never waits on it for longer than one short timeout.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import orjson
from flask import Flask, current_app

from gateway.redis_link import RedisDown, RedisLink
from gateway.threads import PerProcessThread

log = logging.getLogger("gateway.health")


@dataclass(slots=True)
class Sample:
    t: float                    # wall clock, comparable across processes
    ms: float                   # whole attempt
    ttft: float | None          # to the first content byte
    tps: float | None           # output tokens per second
    ok: bool
    r429: bool = False

    def pack(self) -> bytes:
        return orjson.dumps([round(self.t, 3), round(self.ms, 1), self.ttft, self.tps, self.ok, self.r429])

    @classmethod
    def unpack(cls, raw: bytes) -> Sample:
        return cls(*orjson.loads(raw))


@dataclass(slots=True)
class Stats:
    count: int = 0
    p50_ms: float | None = None
    p95_ms: float | None = None
    ttft_p95_ms: float | None = None
    tokens_per_s: float | None = None
    error_rate: float = 0.0
    rate_429: float = 0.0


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values.sort()
    return values[min(len(values) - 1, int(q * len(values)))]


@dataclass
class Deployment:
    """What one worker knows about one deployment."""
    samples: deque
    consecutive: int = 0
    open_until: float = 0.0     # wall time; 0: closed
    closed_at: float = 0.0      # errors before this do not count toward the rate
    opens: int = 0              # opened again without a success in between: longer cooldowns
    probe_until: float = 0.0    # a half-open probe is in flight until then
    cool_until: float = 0.0     # 429 cool-down
    minute: int = 0
    rpm: int = 0                # this minute, local (or shared view when Redis is on)
    tpm: int = 0
    pending: list = field(default_factory=list)     # samples not yet pushed to Redis
    state_dirty: bool = False
    tpm_pending: int = 0
    stats_cache: Stats | None = None
    noted: str = "closed"       # the breaker state last written to the downtime history


class Health:
    """One per worker process (app.extensions["health"])."""

    def __init__(self, app: Flask, link: RedisLink | None = None):
        self.app = app
        self.deps: dict[int, Deployment] = {}
        self.lock = threading.Lock()
        self.redis_url = app.config.get("REDIS_URL")
        c = app.config
        self.link = link or RedisLink(self.redis_url, c["REDIS_CONNECT_TIMEOUT"], c["REDIS_TIMEOUT"],
                                      c["REDIS_BREAKER_SECONDS"])
        self.prefix = app.config["HEALTH_REDIS_PREFIX"]
        self.redis_down_logged = False
        self.syncer = PerProcessThread("health-sync", self._run)
        self.breaker_log = None     # breaker_log.BreakerLog, set by services.init_app

    def _note(self, dep_id: int, d: Deployment, state: str, reason: str, now: float) -> None:
        """Hand a breaker transition to the downtime history (buffered, off the request path)."""
        if d.noted != state and self.breaker_log is not None:
            d.noted = state
            self.breaker_log.note(dep_id, state, reason, now)

    def _dep(self, dep_id: int) -> Deployment:
        d = self.deps.get(dep_id)
        if d is None:
            with self.lock:
                d = self.deps.setdefault(dep_id, Deployment(deque(maxlen=int(self.app.config["HEALTH_SAMPLES"]))))
            self._fetch_state(dep_id, d)
            self._ensure_sync()
        return d

    def _fetch_state(self, dep_id: int, d: Deployment) -> None:
        # A deployment this process has not seen yet: take the shared breaker state now, not at
        # the next sync, or a new worker's first request goes to a circuit another one opened.
        if not self.redis_url:
            return
        try:
            self._adopt(d, self.link.run(lambda r: r.hgetall(f"{self.prefix}{dep_id}:st")))
        except RedisDown:       # the link has logged it; the sync adopts the state once Redis is back
            pass

    @staticmethod
    def _adopt(d: Deployment, st: dict) -> None:
        """Take the shared breaker and cool-down state (a Redis hash), unless ours changed since."""
        if st and not d.state_dirty:
            d.open_until = float(st.get(b"open_until", 0))
            d.closed_at = float(st.get(b"closed_at", 0))
            d.opens = int(float(st.get(b"opens", 0)))
            d.cool_until = float(st.get(b"cool_until", 0))
            if not d.open_until:
                d.noted = "closed"      # another worker closed it (and wrote that down)

    def state(self, dep_id: int, now: float | None = None) -> str:
        """closed, open (cooling down) or half_open (a probe may go)."""
        d = self._dep(dep_id)
        now = now or time.time()
        if not d.open_until:
            return "closed"
        return "open" if now < d.open_until else "half_open"

    def cooling(self, dep_id: int, now: float | None = None) -> float:
        """Seconds left of a 429 cool-down; 0 when none."""
        return max(0.0, self._dep(dep_id).cool_until - (now or time.time()))

    def available(self, route, now: float | None = None) -> str:
        """ok, cooling (429), open, probe (half-open, free to probe) or busy (a probe is out)."""
        now = now or time.time()
        d = self._dep(route.deployment_id)
        if d.open_until:
            if now < d.open_until:
                return "open"
            return "probe" if now >= d.probe_until else "busy"
        if now < d.cool_until:
            return "cooling"
        return "ok"

    def over_cap(self, route, tokens: int) -> bool:
        """Would one more request of about `tokens` tokens exceed the deployment's caps (local view)?"""
        if not (route.rpm_limit or route.tpm_limit):
            return False
        d = self._roll(route.deployment_id)
        if route.rpm_limit and d.rpm >= route.rpm_limit:
            return True
        return bool(route.tpm_limit and d.tpm + tokens > route.tpm_limit and d.tpm > 0)

    def begin(self, route, tokens: int) -> bool:
        """Claim the right to send one attempt: the half-open probe slot and a slot under the
        RPM/TPM caps. False when another request holds the probe or the caps are full."""
        now = time.time()
        d = self._dep(route.deployment_id)
        if d.open_until:
            if now < d.open_until or now < d.probe_until:
                return False
            d.probe_until = now + max(5.0, float(self.app.config.get("UPSTREAM_FIRST_BYTE_TIMEOUT", 60)))
        if route.rpm_limit or route.tpm_limit:
            if not self._reserve(route, tokens):
                d.probe_until = 0.0
                return False
        if d.open_until:
            self._note(route.deployment_id, d, "half_open", "cool-down over: probe sent", now)
        return True

    def _roll(self, dep_id: int) -> Deployment:
        d = self._dep(dep_id)
        minute = int(time.time() // 60)
        if d.minute != minute:
            d.minute, d.rpm, d.tpm = minute, 0, 0
        return d

    def _reserve(self, route, tokens: int) -> bool:
        d = self._roll(route.deployment_id)
        if self.redis_url:
            key = f"{self.prefix}{route.deployment_id}:"

            def count(r):
                pipe = r.pipeline(transaction=False)
                pipe.incr(f"{key}rpm:{d.minute}")
                pipe.expire(f"{key}rpm:{d.minute}", 120)
                pipe.get(f"{key}tpm:{d.minute}")
                return pipe.execute()
            try:
                count, _, used = self.link.run(count)
                d.rpm, d.tpm = int(count), max(d.tpm, int(used or 0))
                if route.rpm_limit and count > route.rpm_limit:
                    return False
                return not (route.tpm_limit and d.tpm > 0 and d.tpm + tokens > route.tpm_limit)
            except RedisDown:      # fall back to this worker's count
                self._redis_failed()
        if route.rpm_limit and d.rpm >= route.rpm_limit:
            return False
        if route.tpm_limit and d.tpm > 0 and d.tpm + tokens > route.tpm_limit:
            return False
        d.rpm += 1
        return True

    def success(self, route, ms: float, ttft: float | None = None, out_tokens: int = 0,
                total_tokens: int = 0) -> None:
        """An attempt served the request."""
        gen_s = (ms - (ttft or 0.0)) / 1000
        tps = round(out_tokens / gen_s, 2) if out_tokens and gen_s > 0.001 else None
        d = self._dep(route.deployment_id)
        self._add(d, Sample(time.time(), ms, ttft if ttft is not None else ms, tps, True))
        d.consecutive = 0
        if d.open_until:
            d.open_until = d.probe_until = 0.0
            d.closed_at, d.opens, d.state_dirty = time.time(), 0, True
            self._note(route.deployment_id, d, "closed", "probe succeeded", d.closed_at)
        if total_tokens:
            self._roll(route.deployment_id).tpm += total_tokens
            d.tpm_pending += total_tokens

    def failure(self, route, ms: float, *, status: int | None = None,
                retry_after: float | None = None) -> None:
        """An attempt failed in a way that is the deployment's fault (5xx, timeout, reset, 429)."""
        now = time.time()
        d = self._dep(route.deployment_id)
        if status == 429:
            self._add(d, Sample(now, ms, None, None, False, True))
            wait = retry_after if retry_after is not None else self.app.config["RATE_LIMIT_COOLDOWN_SECONDS"]
            d.cool_until, d.state_dirty = max(d.cool_until, now + float(wait)), True
            d.probe_until = 0.0
            return
        self._add(d, Sample(now, ms, None, None, False))
        d.consecutive += 1
        dep_id = route.deployment_id
        if d.open_until:                      # the half-open probe failed: open again, longer
            self._open(d, now, dep_id, f"probe failed{f' (HTTP {status})' if status else ''}")
            return
        if d.consecutive >= int(self.app.config["CIRCUIT_FAILURES"]):
            self._open(d, now, dep_id, f"{d.consecutive} consecutive failures{f' (last HTTP {status})' if status else ''}")
            return
        since = max(now - float(self.app.config["CIRCUIT_WINDOW_SECONDS"]), d.closed_at)
        recent = [s for s in d.samples if s.t >= since and not s.r429]
        if len(recent) >= int(self.app.config["CIRCUIT_MIN_REQUESTS"]):
            errors = sum(1 for s in recent if not s.ok)
            if errors / len(recent) >= float(self.app.config["CIRCUIT_ERROR_RATE"]):
                self._open(d, now, dep_id, f"error rate {errors / len(recent):.0%} over {len(recent)} requests")

    def release(self, route) -> None:
        """The attempt ended without saying anything about the deployment (client error, disconnect)."""
        self._dep(route.deployment_id).probe_until = 0.0

    def _open(self, d: Deployment, now: float, dep_id: int, reason: str) -> None:
        cooldown = float(self.app.config["CIRCUIT_COOLDOWN_SECONDS"]) * min(2 ** d.opens, 8)
        d.open_until, d.probe_until, d.opens = now + cooldown, 0.0, d.opens + 1
        d.consecutive, d.state_dirty = 0, True
        log.warning("circuit opened for deployment after failures; retry in %.0fs", cooldown)
        self._note(dep_id, d, "opened", reason, now)

    def _add(self, d: Deployment, s: Sample) -> None:
        d.samples.append(s)
        d.stats_cache = None
        if self.redis_url:
            d.pending.append(s)

    def stats(self, dep_id: int) -> Stats:
        """Rolling statistics over the window (cached until the next sample)."""
        d = self._dep(dep_id)
        cached = d.stats_cache
        if cached is not None:
            return cached
        since = time.time() - float(self.app.config["HEALTH_WINDOW_SECONDS"])
        recent = [s for s in d.samples if s.t >= since]
        st = Stats(count=len(recent))
        if recent:
            ok = [s for s in recent if s.ok]
            st.p50_ms = _pct([s.ms for s in ok], 0.5)
            st.p95_ms = _pct([s.ms for s in ok], 0.95)
            st.ttft_p95_ms = _pct([s.ttft for s in ok if s.ttft is not None], 0.95)
            tps = [s.tps for s in ok if s.tps]
            st.tokens_per_s = round(sum(tps) / len(tps), 2) if tps else None
            st.error_rate = round(sum(1 for s in recent if not s.ok and not s.r429) / len(recent), 4)
            st.rate_429 = round(sum(1 for s in recent if s.r429) / len(recent), 4)
        d.stats_cache = st
        return st

    def _redis_failed(self) -> None:
        if not self.redis_down_logged:
            self.redis_down_logged = True
            log.warning("Redis unreachable: routing statistics are per worker until it is back",
                        exc_info=True)

    def _ensure_sync(self) -> None:
        if not self.redis_url:
            return
        self.syncer.ensure()

    def _run(self) -> None:
        while True:
            time.sleep(float(self.app.config["HEALTH_SYNC_SECONDS"]))
            self.sync()

    def sync(self) -> bool:
        """Push this worker's news to Redis and adopt the shared view; False if Redis failed
        (or its breaker is open)."""
        if not self.redis_url:
            return False
        items = list(self.deps.items())
        if not items:
            return True
        keep = int(self.app.config["HEALTH_SAMPLES"])
        ttl = int(float(self.app.config["HEALTH_WINDOW_SECONDS"])) + 60
        minute = int(time.time() // 60)
        pipe = self.link.client().pipeline(transaction=False)
        sent = []
        for dep_id, d in items:
            key = f"{self.prefix}{dep_id}:"
            pending, d.pending = d.pending, []
            tpm, d.tpm_pending = d.tpm_pending, 0
            dirty, d.state_dirty = d.state_dirty, False
            sent.append((d, pending, tpm, dirty))
            if pending:
                pipe.lpush(key + "s", *[s.pack() for s in pending])
                pipe.ltrim(key + "s", 0, keep - 1)
                pipe.expire(key + "s", ttl)
            if tpm:
                pipe.incrby(f"{key}tpm:{minute}", tpm)
                pipe.expire(f"{key}tpm:{minute}", 120)
            if dirty:
                pipe.hset(key + "st", mapping={"open_until": d.open_until, "closed_at": d.closed_at,
                                               "opens": d.opens, "cool_until": d.cool_until})
                pipe.expire(key + "st", ttl)
            pipe.lrange(key + "s", 0, keep - 1)
            pipe.hgetall(key + "st")
            pipe.get(f"{key}rpm:{minute}")
            pipe.get(f"{key}tpm:{minute}")
        try:
            results = self.link.run(lambda r: pipe.execute())
        except RedisDown:
            for d, pending, tpm, dirty in sent:     # keep them for the next try
                d.pending[:0] = pending[-keep:]
                d.tpm_pending += tpm
                d.state_dirty = d.state_dirty or dirty
            self._redis_failed()
            return False
        self.redis_down_logged = False
        pos = 0
        for dep_id, d in items:
            _, pending, tpm, dirty = sent.pop(0)
            pos += (3 if pending else 0) + (2 if tpm else 0) + (2 if dirty else 0)
            raw, st, rpm, tpm_used = results[pos:pos + 4]
            pos += 4
            shared = [Sample.unpack(x) for x in reversed(raw)]
            shared.extend(d.pending)        # arrived while we were syncing
            d.samples = deque(shared, maxlen=keep)
            d.stats_cache = None
            self._adopt(d, st)
            if d.minute == minute:
                d.rpm = max(d.rpm, int(rpm or 0))
                d.tpm = max(d.tpm, int(tpm_used or 0))
        return True

    def forget(self) -> None:
        """Drop everything known (tests, and `gateway routing reset`)."""
        with self.lock:
            self.deps.clear()


def health(app: Flask | None = None) -> Health:
    """This process's deployment statistics (built by services.init_app)."""
    return (app or current_app).extensions["health"]


def deployment_status(deployment_id: int) -> dict:
    """Health of one deployment for the console, the CLI and metrics."""
    h = health()
    st = h.stats(deployment_id)
    circuit = h.state(deployment_id)
    if circuit != "closed":
        state = "open"
    elif not st.count:
        state = "unknown"
    elif h.cooling(deployment_id) or st.error_rate >= 0.1 or st.rate_429 >= 0.1:
        state = "degraded"
    else:
        state = "healthy"
    return {"state": state, "circuit": circuit, "p50_ms": st.p50_ms, "p95_ms": st.p95_ms,
            "ttft_p95_ms": st.ttft_p95_ms, "tokens_per_s": st.tokens_per_s,
            "error_rate": st.error_rate, "rate_429": st.rate_429, "requests": st.count,
            "cooldown_s": round(h.cooling(deployment_id), 1)}
