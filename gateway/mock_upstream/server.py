"""Serving the mock over real sockets (gevent pywsgi), and its command line."""
from __future__ import annotations

import struct
from typing import Callable

from gateway.mock_upstream.wsgi import MockUpstream


def _handler_class():
    """pywsgi's handler, plus `mock.abort` in the environ to drop the connection with a RST."""
    import socket
    from gevent.pywsgi import WSGIHandler

    class Handler(WSGIHandler):
        def __init__(self, sock, address, server, rfile=None):
            # Headers and body go out in separate writes: without NODELAY, Nagle holds the
            # body until the client's delayed ACK (~40 ms a response).
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            super().__init__(sock, address, server, rfile)

        def get_environ(self):
            environ = super().get_environ()
            environ["mock.abort"] = self._abort
            environ["RAW_URI"] = self.path      # as sent, not percent-decoded (Bedrock's SigV4 check)
            return environ

        def _abort(self):
            # Linger 0 makes close() send RST. The socket only really closes once
            # rfile (a makefile() of it) is closed too.
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.rfile.close()
            self.socket.close()

    return Handler


def serve(host: str = "127.0.0.1", port: int = 0, ready: Callable[[int], None] | None = None,
          application: MockUpstream | None = None) -> None:
    """Serve the mock forever; `ready(port)` is called once the socket is bound.

    Needs gevent monkey patching already done (main() does it), so sleeps are cooperative."""
    from gevent.pywsgi import WSGIServer

    server = WSGIServer((host, port), application or MockUpstream(), log=None,
                        handler_class=_handler_class())
    server.start()
    if ready is not None:
        ready(server.server_port)
    server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    """`python -m gateway.mock_upstream [--host H] [--port P]`; prints the bound URL."""
    # Patch before anything imports socket/ssl. Caveat: when called from a process that
    # already imported requests, ssl etc. unpatched, those modules keep blocking calls;
    # run this in its own process.
    from gevent import monkey
    if not monkey.is_module_patched("socket"):
        monkey.patch_all()
    import argparse

    from gateway import mock_upstream

    summary = mock_upstream.__doc__.splitlines()[0]
    parser = argparse.ArgumentParser(prog="mock-upstream", description=summary)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    args = parser.parse_args(argv)

    def ready(port: int) -> None:
        print(f"mock-upstream listening on http://{args.host}:{port}", flush=True)

    serve(args.host, args.port, ready)

