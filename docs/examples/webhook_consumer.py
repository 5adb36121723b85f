"""A consumer of evalsvc's score webhooks: checks each delivery's signature with the
``standardwebhooks`` library, then prints the event (see docs/events.md).

    pip install standardwebhooks
    EVALSVC_WEBHOOK_SECRET=whsec_... python webhook_consumer.py --port 8001

evalsvc delivers at least once, so the same event may come again (a retry whose answer was
lost, a delivery staff sent again): this consumer remembers the events it handled and each
subject's latest ``sequence``, and acknowledges a repeat or an older event without handling it
again. It answers 204 to a delivery it accepts and 400 to one whose signature does not verify
(evalsvc retries it, then shows it failed in its admin).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks import Webhook, WebhookVerificationError

MAX_BODY = 1024 * 1024
REMEMBERED = 100_000  # event ids kept to recognise a repeat


def print_event(event: dict[str, Any]) -> None:
    print(
        f"{event['type']} #{event['sequence']} {event['subject']}: {json.dumps(event['data'])}",
        flush=True,
    )


class Consumer:
    """Verifies deliveries and hands each new event, once, to ``on_event``."""

    def __init__(self, secret: str, on_event: Callable[[dict[str, Any]], None]) -> None:
        self.webhook = Webhook(secret)
        self.on_event = on_event
        self.lock = threading.Lock()
        self.seen: OrderedDict[str, None] = OrderedDict()
        self.latest: dict[str, int] = {}  # subject -> the latest sequence handled

    def receive(self, body: bytes, headers: dict[str, str]) -> int:
        """The HTTP status to answer a delivery with."""
        try:
            event = self.webhook.verify(body, headers)  # signature and timestamp (5 min)
        except WebhookVerificationError:
            return 400
        with self.lock:
            repeat = event["id"] in self.seen
            older = event["sequence"] <= self.latest.get(event["subject"], 0)
            if repeat or older:
                return 204  # handled already, or superseded by a later change
            self.seen[event["id"]] = None
            if len(self.seen) > REMEMBERED:
                self.seen.popitem(last=False)
            self.latest[event["subject"]] = event["sequence"]
            self.on_event(event)
        return 204


def make_server(
    secret: str,
    port: int,
    on_event: Callable[[dict[str, Any]], None] = print_event,
    host: str = "127.0.0.1",
) -> ThreadingHTTPServer:
    """An HTTP server answering POSTs with ``Consumer.receive`` (call ``serve_forever``)."""
    consumer = Consumer(secret, on_event)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                self._answer(413)
                return
            body = self.rfile.read(length)
            self._answer(consumer.receive(body, dict(self.headers.items())))

        def _answer(self, status: int) -> None:
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return ThreadingHTTPServer((host, port), Handler)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args()
    secret = os.environ.get("EVALSVC_WEBHOOK_SECRET", "")
    if not secret:
        sys.exit("Set EVALSVC_WEBHOOK_SECRET to the subscription's secret (whsec_...).")
    server = make_server(secret, args.port, host=args.host)
    print(f"Listening on http://{args.host}:{args.port}/", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()


if __name__ == "__main__":
    main()
