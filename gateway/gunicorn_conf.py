"""gunicorn settings: `gunicorn -c python:gateway.gunicorn_conf app:app`.

The gevent worker monkey-patches after fork, before it loads the app; the master never
imports the app, so nothing touches ssl or sockets unpatched.
"""
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

bind = os.environ.get("GATEWAY_BIND", "0.0.0.0:8080")
workers = int(os.environ.get("WEB_CONCURRENCY", 2))
worker_class = os.environ.get("GATEWAY_WORKER_CLASS", "gevent_pywsgi")  # gevent's own WSGI server: ~25% more req/s than "gevent"
worker_connections = 1000
keepalive = 5
graceful_timeout = 30       # in-flight streams get this long to finish on SIGTERM
timeout = 30
accesslog = None


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
    # Migrate and seed once, in a separate process, before any worker starts.
    if os.environ.get("GATEWAY_SKIP_BOOTSTRAP") == "1":     # the database is prepared already (tests)
        return
    url = os.environ.get("GATEWAY_PUBLIC_URL", "http://127.0.0.1:8080")
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}   # not a worker
    subprocess.run([sys.executable, "-m", "flask", "--app", "app", "bootstrap", "--base-url", url],
                   check=True, env=env)


def on_exit(server):
    # The temporary folder made above goes with the server.
    if _made_metrics_dir:
        shutil.rmtree(_made_metrics_dir, ignore_errors=True)


def child_exit(server, worker):
    # A dead worker's gauges (queue depth, circuits) leave with it; its counters still count.
    from prometheus_client import multiprocess
    multiprocess.mark_process_dead(worker.pid)


def worker_exit(server, worker):
    # Write every queued usage record before the worker goes.
    app = getattr(worker, "wsgi", None)
    usage = getattr(app, "extensions", {}).get("usage") if app else None
    if usage is not None:
        usage.drain()       # also the batch the writer holds, not only what is queued
