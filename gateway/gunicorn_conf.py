"""gunicorn settings: `gunicorn -c python:gateway.gunicorn_conf gateway.wsgi:app` (`gateway serve` runs it).

The gevent worker monkey-patches after fork, before it loads the app; the master never
imports the app, so nothing touches ssl or sockets unpatched.
"""
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

bind = os.environ.get("GATEWAY_BIND", "127.0.0.1:8080")     # 0.0.0.0:8080 opens it to the network
workers = int(os.environ.get("WEB_CONCURRENCY", 2))
worker_class = os.environ.get("GATEWAY_WORKER_CLASS", "gevent_pywsgi")  # gevent's own WSGI server: ~25% more req/s than "gevent"
worker_connections = 1000
keepalive = 5
graceful_timeout = 30       # in-flight streams get this long to finish on SIGTERM
timeout = 30
accesslog = None
# gunicorn 27's control socket sits at one path per user ($HOME/.gunicorn/gunicorn.ctl): a second
# gateway on the host would take it over. Nothing here uses gunicornc.
control_socket_disable = True


_made_metrics_dir = None


def on_starting(server):
    # Workers inherit the folder where they share metric values (/metrics sums them); values of
    # an earlier run are stale, so it starts empty.
    global _made_metrics_dir
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        _made_metrics_dir = os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="gateway-metrics-")
    shared = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    shared.mkdir(parents=True, exist_ok=True)
    for old in shared.glob("*.db"):
        old.unlink()
    # Migrate and seed once before any worker starts, in a separate process: the master stays
    # free of ssl imported before gevent patches.
    if os.environ.get("GATEWAY_SKIP_BOOTSTRAP") == "1":     # done already (`gateway serve`, tests)
        return
    url = os.environ.get("GATEWAY_PUBLIC_URL") or "http://" + server.cfg.bind[0].replace("0.0.0.0:", "127.0.0.1:")
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}   # not a worker
    subprocess.run([sys.executable, "-m", "gateway", "bootstrap", "--base-url", url], check=True, env=env)


def on_exit(server):
    # The temporary folder made above goes with the server.
    if _made_metrics_dir:
        shutil.rmtree(_made_metrics_dir, ignore_errors=True)


def child_exit(server, worker):
    # A dead worker's gauges (queue depth, circuits) leave with it; its counters still count.
    from prometheus_client import multiprocess
    multiprocess.mark_process_dead(worker.pid)


def post_worker_init(worker):
    # The app and its imports are loaded: move them out of the collector's sight, so a
    # collection walks only what requests allocate (shorter pauses of the whole worker), and
    # collect young objects less often (each request allocates a few thousand).
    import gc
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


def worker_exit(server, worker):
    # Write every queued usage record before the worker goes, and wait for the batch the writer
    # greenlet may be in the middle of: it dies with the process.
    app = getattr(worker, "wsgi", None)
    usage = getattr(app, "extensions", {}).get("usage") if app else None
    if usage is not None:
        usage.drain(timeout=graceful_timeout)
    # Quota this worker leased and did not use goes back now, not after QUOTA_LEASE_TTL.
    store = getattr(app, "extensions", {}).get("quota_backend") if app else None
    if store is not None and hasattr(store, "leases"):
        store.close()
    import gc
    gc.unfreeze()       # let the interpreter's teardown collect as usual
