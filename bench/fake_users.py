"""Fake users service for the benchmark: answers ``GET /auth/status`` for bearer tokens.

    Bearer u<N>   -> 200 user N (active, not admin)
    Bearer admin  -> 200 user 1 (active, admin)
    anything else -> 401

Python standard library only (``ThreadingHTTPServer``, HTTP/1.1 keep-alive, one thread per
connection; evalsvc keeps its connections to the users service open). Answers are precomputed
per token and sent in a single write with TCP_NODELAY, so a call costs well under a millisecond
of CPU: evalsvc caches verdicts, so it only calls on a cache miss anyway. ``GET /_bench/calls``
tells how many ``/auth/status`` calls were answered (the benchmark reports it per scenario).

    python3 bench/fake_users.py [PORT]      (default 8301, on 127.0.0.1 only)
"""

from __future__ import annotations

import contextlib
import json
import re
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

USER_TOKEN = re.compile(r"Bearer u([0-9]{1,9})")
_cache: dict[str, bytes] = {}
_calls = 0
_calls_lock = threading.Lock()


def _response(status: int, reason: str, payload: dict) -> bytes:
    body = json.dumps(payload).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def _user(user_id: int, admin: bool = False) -> bytes:
    data = {
        "id": user_id,
        "username": f"user{user_id}",
        "email": f"user{user_id}@example.com",
        "active": True,
        "admin": admin,
    }
    return _response(200, "OK", {"status": "success", "data": data})


INVALID = _response(401, "Unauthorized", {"status": "error", "message": "Invalid token."})
NOT_FOUND = _response(404, "Not Found", {"status": "error", "message": "Not found."})


def auth_status(authorization: str) -> bytes:
    hit = _cache.get(authorization)
    if hit is None:
        match = USER_TOKEN.fullmatch(authorization)
        if match:
            hit = _user(int(match.group(1)))
        elif authorization == "Bearer admin":
            hit = _user(1, admin=True)
        else:
            return INVALID
        if len(_cache) < 100_000:
            _cache[authorization] = hit
    return hit


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        global _calls
        path = self.path.split("?", 1)[0]
        if path == "/auth/status":
            with _calls_lock:
                _calls += 1
            answer = auth_status(self.headers.get("Authorization", ""))
        elif path == "/_bench/calls":
            answer = _response(200, "OK", {"calls": _calls})
        else:
            answer = NOT_FOUND
        self.wfile.write(answer)

    def log_message(self, format: str, *args: object) -> None:
        pass


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128


def main() -> None:
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8301
    server = Server(("127.0.0.1", port), Handler)
    print(f"fake users service on http://127.0.0.1:{port}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()


if __name__ == "__main__":
    main()
