"""A users service on a loopback port that can be switched between states (up, down, slow,
garbage, failing): the double of the fault tests (scores/tests/test_faults.py) and of the fault
benchmarks (bench/live_stack.py). Python's standard library only, so the benchmarks import it
without Django.
"""

from __future__ import annotations

import json
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _UsersHandler(BaseHTTPRequestHandler):
    """``GET /auth/status``: ``Bearer u<N>`` is user N; what it answers depends on the state of
    the double that owns the server."""

    server: _UsersServer

    def do_GET(self) -> None:
        double = self.server.double
        state = double.state
        double.received.append(state)
        if state == "slow":
            double.released.wait(timeout=2)
        elif state.startswith("slow:"):  # answers, after that many seconds
            double.released.wait(timeout=float(state.split(":")[1]))
        if state == "garbage":
            self._send(200, "text/html", b"<!doctype html><h1>Maintenance</h1>")
            return
        if state == "failing":
            self._send(502, "text/html", b"<h1>Bad Gateway</h1>")
            return
        scheme, _, token = self.headers.get("Authorization", "").partition(" ")
        if scheme != "Bearer" or not token.startswith("u") or not token[1:].isdigit():
            self._send(401, "application/json", b'{"status": "fail", "message": "Invalid."}')
            return
        data = {"id": int(token[1:]), "active": True, "admin": False}
        self._send(
            200, "application/json", json.dumps({"status": "success", "data": data}).encode()
        )

    def _send(self, status: int, content_type: str, body: bytes) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            pass  # a slow answer's caller has given up

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _UsersServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128  # many callers at once (the benchmarks' unknown tokens)
    double: UsersServiceDouble

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a caller that timed out closed its end: not the test's concern


@dataclass
class UsersServiceDouble:
    """The users service on a fixed loopback port, switched between states:

    - ``up``: ``Bearer u<N>`` is user N, anything else a 401;
    - ``down``: nothing listens on the port (connection refused);
    - ``slow``: answers only after the caller's timeout (released at teardown);
    - ``slow:<seconds>``: answers after that many seconds;
    - ``garbage``: 200 with an HTML page;
    - ``failing``: 502.

    ``received`` lists the state the double was in for each call it received; ``calls`` counts
    them.
    """

    port: int
    state: str = "down"
    received: list[str] = field(default_factory=list)
    released: threading.Event = field(default_factory=threading.Event)
    _server: _UsersServer | None = None

    @property
    def calls(self) -> int:
        return len(self.received)

    def switch(self, state: str) -> None:
        if state == "down":
            self.stop()
        elif self._server is None:
            server = _UsersServer(("127.0.0.1", self.port), _UsersHandler)
            server.double = self
            threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
            self._server = server
        self.state = state

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
