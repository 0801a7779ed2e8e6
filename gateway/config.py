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
    SECRET_KEY = None                   # generated into instance/ on first start if unset
    MAX_REQUEST_BYTES = 4 * 1024 * 1024  # /v1 bodies over this get 413
    UPSTREAM_CONNECT_TIMEOUT = 5.0
    UPSTREAM_FIRST_BYTE_TIMEOUT = 120.0  # slow models think for a long time before answering
    UPSTREAM_IDLE_TIMEOUT = 60.0         # longest silence between two stream chunks
    UPSTREAM_POOL_SIZE = 128             # connections kept per provider and worker
    ALLOW_PRIVATE_UPSTREAMS = False      # loopback/private provider URLs (Ollama, vLLM, tests)
    KEY_CACHE_SECONDS = 5.0              # how long a key lookup is trusted without the database
    CATALOG_CACHE_SECONDS = 5.0
    USAGE_BATCH_SIZE = 200
    USAGE_FLUSH_SECONDS = 0.5
    USAGE_QUEUE_MAX = 50_000             # then request greenlets wait: back-pressure, not loss
    STREAM_KEEPALIVE_SECONDS = 15.0      # SSE comment while waiting, so a gone client is noticed
    DEMO = True                          # seed the mock provider and a demo key on an empty database
    SESSION_COOKIE_HTTPONLY = True
    SESSION_COOKIE_SAMESITE = "Lax"
