"""A stand-in for the platform's users service, for the demo (``bin/run``) and the compose
stack: it answers ``GET /auth/status`` as the users service does (scores/users_service.py), for
the tokens it is given, and 401 for any other. ``GET /health`` answers 200.

    python -m demo.users_service --bind 127.0.0.1:0 --user=TOKEN=4 --user=TOKEN2=1:admin \
        [--url-file PATH]

``--user=TOKEN=ID[:admin]`` (repeatable; the ``=`` keeps a token that starts with ``-`` a
value; or ``DEMO_USERS="TOKEN=ID[:admin],..."`` in the environment) vouches for TOKEN as
platform user ID, privileged with ``:admin``. ``--bind``
takes ``HOST:PORT``; port 0 picks a free one, and ``--url-file`` receives the base URL once it
listens (bin/run waits for it). Runs until SIGTERM or SIGINT. Python's standard library only.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any

REJECTED = {"status": "fail", "message": "Invalid token. Please log in again."}


def parse_user(spec: str) -> tuple[str, dict[str, Any]]:
    """``TOKEN=ID[:admin]`` as (token, the user's record as /auth/status gives it).

    Raises:
        ValueError: not of that form, or an id outside 1..2147483647.
    """
    token, sep, rest = spec.strip().rpartition("=")
    user_id, _, role = rest.partition(":")
    if not sep or not token or not user_id.isdigit() or role not in ("", "admin"):
        raise ValueError(f"expected TOKEN=ID or TOKEN=ID:admin, not {spec!r}")
    if not 0 < int(user_id) <= 2_147_483_647:
        raise ValueError(f"user id out of range in {spec!r}")
    uid = int(user_id)
    return token, {
        "id": uid,
        "username": f"user{uid}",
        "email": f"user{uid}@example.com",
        "active": True,
        "admin": role == "admin",
    }


class Handler(BaseHTTPRequestHandler):
    """``/auth/status`` for the server's ``users``; ``/health``; 404 for anything else."""

    server: UsersServer
    protocol_version = "HTTP/1.1"  # evalsvc keeps its connections to the users service open

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/health":
            self._answer(200, {"status": "ok"})
        elif path == "/auth/status":
            scheme, _, token = self.headers.get("Authorization", "").partition(" ")
            user = self.server.users.get(token) if scheme == "Bearer" else None
            if user is None:
                self._answer(401, REJECTED)
            else:
                self._answer(200, {"status": "success", "data": user})
        else:
            self._answer(404, {"status": "fail", "message": "Not found."})

    def _answer(self, status: int, payload: dict[str, Any]) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: evalsvc's request log already has a line for each request a token made."""


class UsersServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], users: dict[str, dict[str, Any]]) -> None:
        super().__init__(address, Handler)
        self.users = users

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m demo.users_service", description=__doc__)
    parser.add_argument("--bind", default="127.0.0.1:0", help="HOST:PORT (default 127.0.0.1:0)")
    parser.add_argument("--user", action="append", default=[], metavar="TOKEN=ID[:admin]")
    parser.add_argument("--url-file", type=Path, help="write the base URL here once listening")
    args = parser.parse_args(argv)
    specs = [*args.user, *filter(None, os.environ.get("DEMO_USERS", "").split(","))]
    try:
        users = dict(parse_user(spec) for spec in specs)
    except ValueError as exc:
        parser.error(str(exc))
    host, _, port = args.bind.rpartition(":")
    if not host or not port.isdigit():
        parser.error(f"--bind takes HOST:PORT, not {args.bind!r}")
    server = UsersServer((host, int(port)), users)

    def stop(signum: int, frame: FrameType | None) -> None:
        threading.Thread(target=server.shutdown).start()  # not from serve_forever's thread

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if args.url_file is not None:
        partial = args.url_file.with_name(args.url_file.name + ".part")
        partial.write_text(server.url + "\n")
        partial.replace(args.url_file)  # whole or absent for whoever waits for it
    print(f"demo users service on {server.url}, {len(users)} token(s)", file=sys.stderr)
    with server:
        server.serve_forever()


if __name__ == "__main__":
    main()
