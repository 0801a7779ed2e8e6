"""gunicorn settings: `gunicorn -c python:gateway.gunicorn_conf app:app`.

The gevent worker monkey-patches after fork, before it loads the app; the master never
imports the app, so nothing touches ssl or sockets unpatched.
"""
import os
import subprocess
import sys

bind = os.environ.get("GATEWAY_BIND", "0.0.0.0:8080")
workers = int(os.environ.get("WEB_CONCURRENCY", 2))
worker_class = os.environ.get("GATEWAY_WORKER_CLASS", "gevent_pywsgi")  # gevent's own WSGI server: ~25% more req/s than "gevent"
worker_connections = 1000
keepalive = 5
graceful_timeout = 30       # in-flight streams get this long to finish on SIGTERM
timeout = 30
accesslog = None


def on_starting(server):
    # Migrate and seed once, in a separate process, before any worker starts.
    if os.environ.get("GATEWAY_SKIP_BOOTSTRAP") == "1":     # the database is prepared already (tests)
        return
    url = os.environ.get("GATEWAY_PUBLIC_URL", "http://127.0.0.1:8080")
    subprocess.run([sys.executable, "-m", "flask", "--app", "app", "bootstrap", "--base-url", url],
                   check=True)


def worker_exit(server, worker):
    # Write every queued usage record before the worker goes, and wait for the batch the writer
    # greenlet may be in the middle of: it dies with the process.
    app = getattr(worker, "wsgi", None)
    usage = getattr(app, "extensions", {}).get("usage") if app else None
    if usage is not None:
        usage.drain(timeout=graceful_timeout)
