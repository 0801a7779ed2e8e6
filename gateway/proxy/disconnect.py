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
    # A read watcher on the loop, stopped before the block ends: a greenlet parked in
    # wait_read(fd) and killed asynchronously outlived the request, and once the fd was closed
    # and reused, libev aborted the whole worker ("I/O watcher with invalid fd" in epoll_ctl).
    # Also no greenlet per request.
    done = []
    io = gevent.get_hub().loop.io(sock.fileno(), 1)      # 1: readable

    def readable():
        io.stop()
        if not done:
            gevent.spawn(_check, sock, cancel, done)

    io.start(readable)
    try:
        yield cancel
    finally:
        done.append(True)
        io.stop()
        io.close()


def _check(sock, cancel: Cancel, done: list) -> None:
    if done:
        return
    try:
        gone = not sock.recv(1, socket.MSG_PEEK)
    except OSError:         # reset, or already closed
        gone = True
    if gone and not done:
        cancel.trigger()
