"""Default settings; override with GATEWAY_* environment variables or instance/config.py."""
import os


def database_url() -> str:
    """DATABASE_URL, normalised to the psycopg 3 driver; SQLite in instance/ by default."""
    url = os.environ.get("DATABASE_URL") or "sqlite:///gateway.db"
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://"):]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    return url


class Defaults:
    SQLALCHEMY_DATABASE_URI = database_url()
    SQLALCHEMY_ENGINE_OPTIONS = {"pool_pre_ping": True}
    REDIS_URL = os.environ.get("REDIS_URL") or None   # shared counters, stats and cache invalidation
    REDIS_CONNECT_TIMEOUT = 0.25         # Redis answers in a millisecond when it is well
    REDIS_TIMEOUT = 0.5
    REDIS_BREAKER_SECONDS = 5.0          # after a Redis failure, skip it this long, then probe once
    SECRET_KEY = None                   # generated into instance/ on first start if unset
    MAX_REQUEST_BYTES = 4 * 1024 * 1024  # /v1 bodies over this get 413 (gzip: once decompressed)
    CORS_ORIGINS = ""                    # browser origins allowed to call /v1, comma-separated, or *
    AUDIO_MAX_REQUEST_BYTES = 26 * 1024 * 1024   # audio uploads (OpenAI takes files up to 25 MB)
    MODERATION_DEFAULT_MODEL = "omni-moderation-latest"     # /v1/moderations without a model
    UPSTREAM_CONNECT_TIMEOUT = 5.0
    UPSTREAM_FIRST_BYTE_TIMEOUT = 120.0  # slow models think for a long time before answering
    UPSTREAM_IDLE_TIMEOUT = 60.0         # longest silence between two stream chunks
    UPSTREAM_POOL_SIZE = 128             # connections kept per provider and worker
    UPSTREAM_MAX_EVENT_BYTES = 8 * 1024 * 1024   # one SSE event from a provider; past it the stream fails
    ALLOW_PRIVATE_UPSTREAMS = False      # loopback/private provider URLs (Ollama, vLLM, tests)
    PROBE_TIMEOUT_SECONDS = 10.0         # Test connection: every "could not reach" answers after this
    PROBE_LIMIT_PER_USER = 10            # Test connections per minute and console user
    PROBE_LIMIT_PER_IP = 20              # ... and per client address
    KEY_CACHE_SECONDS = 5.0              # how long a key lookup is trusted without the database
    KEY_CACHE_STALE_SECONDS = 300.0      # ... and how long while the database cannot be reached
    DB_LOCK_TIMEOUT = 2.0                # longest wait for a database lock while serving requests
    UNAVAILABLE_RETRY_AFTER = 2          # retry-after of a 503 when the database cannot answer
    CATALOG_CACHE_SECONDS = 5.0
    USAGE_BATCH_SIZE = 200
    USAGE_FLUSH_SECONDS = 0.5
    USAGE_QUEUE_MAX = 50_000             # then request greenlets wait: back-pressure, not loss
    STREAM_KEEPALIVE_SECONDS = 15.0      # SSE comment while waiting, so a gone client is noticed
    METRICS_TOKEN = None                 # GATEWAY_METRICS_TOKEN: /metrics then wants this bearer token
    DEMO = True                          # seed the mock provider and a demo key on an empty database
    SESSION_COOKIE_HTTPONLY = True
    SESSION_COOKIE_SAMESITE = "Lax"
    CONSOLE_REFRESH_SECONDS = 30         # the overview refreshes itself this often; 0: never

    # Routing and resilience
    MAX_ATTEMPTS = 3                     # upstream attempts per request, all deployments together
    ROUTING_DEADLINE_SECONDS = 60.0      # no new attempt starts after this
    RETRY_BASE_SECONDS = 0.1             # backoff before retrying a deployment already tried
    RETRY_MAX_SECONDS = 2.0
    RETRY_AFTER_MAX_SECONDS = 5.0        # a longer retry-after means: go elsewhere, not wait
    ROUTING_EXPLORE = 0.05               # share of requests ordered at random, to refresh stats
    MAX_FALLBACK_MODELS = 5
    SHADOW_MAX_CONCURRENCY = 8           # per worker; shadows beyond this are skipped
    HEALTH_WINDOW_SECONDS = 300.0        # samples older than this are forgotten
    HEALTH_SAMPLES = 200                 # per deployment
    HEALTH_SYNC_SECONDS = 1.0            # Redis sync period
    HEALTH_REDIS_PREFIX = "gw:health:"
    CIRCUIT_FAILURES = 5                 # consecutive failures that open the circuit
    CIRCUIT_ERROR_RATE = 0.5             # ... or this error rate over the window below
    CIRCUIT_MIN_REQUESTS = 20            # ... with at least this many requests in it
    CIRCUIT_WINDOW_SECONDS = 60.0
    CIRCUIT_COOLDOWN_SECONDS = 30.0      # open this long, then one half-open probe
    RATE_LIMIT_COOLDOWN_SECONDS = 10.0   # after a 429 without retry-after
    # Quotas
    QUOTA_DEFAULT_MAX_TOKENS = 4096      # worst case reserved when a request sets no max_tokens
    QUOTA_RESERVATION_TTL = 3600         # seconds before a reservation of a dead process is freed
    QUOTA_REDIS_PREFIX = "gw:q:"
    QUOTA_LEASES = "auto"                # per-worker blocks of quota (leases.py): auto = on under gevent
    QUOTA_LEASE_REQUESTS = 100           # a block holds room for this many requests of the asking size
    QUOTA_LEASE_SHARE = 0.1              # and at most this share of what the counter has left
    QUOTA_LEASE_FLUSH_SECONDS = 1.0      # settled usage reaches the database this often
    QUOTA_LEASE_TTL = 60                 # seconds before a dead worker's lease is released
    QUOTA_REDIS_FALLBACK = "database"    # Redis down: count in the database, or "refuse" (503)
    # Console
    LOGIN_THROTTLE_REDIS_PREFIX = "gw:login:"
    TRUSTED_ORIGINS = ""                 # more origins allowed to post to the console, comma-separated
    SETTINGS_CACHE_SECONDS = 5.0
    PROMPT_LOG_MAX_CHARS = 32 * 1024     # per stored prompt or answer, when storage is on
    RESPONSES_STORE = True               # keep /v1/responses answers (store) for previous_response_id
    RETENTION_INTERVAL_SECONDS = 3600    # how often old usage and prompts are purged; 0: only by CLI
    # Alerts (README: Alerts)
    ALERT_CHECK_SECONDS = 30.0           # how often health alerts are evaluated; 0: never (off in TESTING)
    ALERT_CHECK_IN_TESTING = False       # run that check under TESTING too
    ALERT_MIN_REQUESTS = 10              # requests in the health window before an error-rate or p95 alert
    SMTP_HOST = ""                       # e-mail alerts when set (with SMTP_FROM)
    SMTP_PORT = 587
    SMTP_USER = ""
    SMTP_PASSWORD = ""
    SMTP_FROM = ""
    SMTP_STARTTLS = True
    SMTP_TIMEOUT = 10.0
    # Response cache and Idempotency-Key (README: Response cache, idempotency and overhead)
    CACHE_SCOPE = "key"                  # who shares cached answers: key, or team (keys without one: key)
    CACHE_DEFAULT_TTL = 300              # seconds, when `x-gateway-cache: on` names no TTL
    CACHE_MAX_TTL = 7 * 86400            # longest TTL a header, key or policy may ask for
    CACHE_MAX_BYTES = 1024 * 1024        # answers larger than this are not cached
    RESPONSE_STORE_REDIS_PREFIX = "gw:rs:"
    IDEMPOTENCY_TTL_SECONDS = 86400      # how long an Idempotency-Key's response is replayed
    IDEMPOTENCY_LOCK_SECONDS = 600       # a request in flight holds its key at most this long
