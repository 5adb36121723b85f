"""A webhook subscriber for the tests: a real HTTP server on 127.0.0.1 (``http.server`` in a
thread) that records what it receives and answers as it is told."""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson


@dataclass
class Received:
    """One request as the receiver saw it."""

    path: str
    headers: dict[str, str]
    body: bytes
    started: float  # time.monotonic() when it arrived
    answered: float = 0.0  # when it was answered (0: not yet)

    @property
    def event(self) -> dict[str, Any]:
        return orjson.loads(self.body)


# An answer: a status, or a callable that gets the request and returns one (it may block).
Answer = int | Callable[[Received], int]


@dataclass
class Receiver:
    """Answers each request with the next of ``script`` (then ``default``), recording it."""

    port: int = 0
    script: list[Answer] = field(default_factory=list)
    default: Answer = 200
    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    released: threading.Event = field(default_factory=threading.Event)  # ends every hang()
    server_names: list[str | None] = field(default_factory=list)  # asked for over TLS

    def url(self, path: str = "/hook", host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def answer(self, request: Received) -> int:
        with self.lock:
            self.received.append(request)
            answer = self.script.pop(0) if self.script else self.default
        return answer(request) if callable(answer) else answer

    def hang(self, seconds: float) -> Callable[[Received], int]:
        """An answer given after ``seconds`` (or once ``released``): 200."""

        def hanging(request: Received) -> int:
            self.released.wait(seconds)
            return 200

        return hanging

    def events(self) -> list[dict[str, Any]]:
        with self.lock:
            return [request.event for request in self.received]

    def wait_for(self, count: int, timeout: float = 20) -> list[Received]:
        """The requests, once at least ``count`` have arrived (fails after ``timeout``)."""
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                if len(self.received) >= count:
                    return list(self.received)
            assert time.monotonic() < deadline, f"{len(self.received)} of {count} requests came"
            time.sleep(0.01)


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the worker's pool expects

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            request = Received(
                path=self.path,
                headers={name.lower(): value for name, value in self.headers.items()},
                body=self.rfile.read(length),
                started=time.monotonic(),
            )
            status = receiver.answer(request)
            body = b"ok" if status < 300 else b"receiver says no"
            try:
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except OSError:
                pass  # the worker gave up waiting and closed the connection
            request.answered = time.monotonic()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@contextmanager
def running(
    receiver: Receiver | None = None, tls: ssl.SSLContext | None = None
) -> Iterator[Receiver]:
    """``receiver`` (a new one by default) serving on 127.0.0.1 until the block ends; over
    TLS with ``tls``, recording the names clients ask for (SNI) in ``receiver.server_names``."""
    receiver = receiver or Receiver()
    server = ThreadingHTTPServer(("127.0.0.1", receiver.port), _handler(receiver))
    server.daemon_threads = True
    if tls is not None:
        tls.sni_callback = lambda sock, name, context: receiver.server_names.append(name)
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    receiver.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver.released.set()
        server.shutdown()
        server.server_close()
        thread.join(5)
