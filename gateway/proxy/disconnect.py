"""Noticing, while a non-streaming /v1 request waits on a provider, that its client went away.

WSGI gives an app no signal for that (a stream learns it at its next write). Under gunicorn's
gevent workers the environ holds the client's socket: a greenlet waits for it to turn readable
while the upstream call runs. The request body was read whole, so readable means the client
closed (EOF or reset) or sent a pipelined next request (then it is still there and we stop
watching). A client that half-closes its side after sending counts as gone. Elsewhere (the
Flask test client, `flask run`, unpatched workers) nothing is watched."""
from __future__ import annotations

import socket
from contextlib import contextmanager
from typing import Iterator

import gevent
from gevent import monkey
from gevent.socket import wait_read

from gateway.services.routing.cancel import Cancel


def client_socket(environ: dict):
    """The client's socket: gunicorn's gevent_pywsgi worker, or its other workers; else None."""
    return environ.get("gunicorn.sock") or environ.get("gunicorn.socket")


@contextmanager
def watch(environ: dict) -> Iterator[Cancel]:
    """A Cancel that fires when the client disconnects, for the duration of the block."""
    cancel = Cancel()
    sock = client_socket(environ)
    if sock is None or not monkey.is_module_patched("socket"):
        yield cancel
        return
    watcher = gevent.spawn(_wait_gone, sock, cancel)
    try:
        yield cancel
    finally:
        watcher.kill(block=False)


def _wait_gone(sock, cancel: Cancel) -> None:
    try:
        wait_read(sock.fileno())
        gone = not sock.recv(1, socket.MSG_PEEK)
    except OSError:         # reset, or already closed
        gone = True
    if gone:
        cancel.trigger()
