"""A webhook receiver in a few lines of standard library: verify the signature, deduplicate on webhook-id, answer
2xx. Run it on its own while workers run: ``python -m examples.webhooks.receiver`` (port 8765)."""

from __future__ import annotations

import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from dramatiq_ray import WebhookSignatureError
from dramatiq_ray.webhooks import ID_HEADER, verify

from .tasks import WEBHOOK_SECRET


class Receiver:
    """Keeps every verified event by message id. ``fail_first`` answers 503 to the first POST (to show a retry)."""

    def __init__(self, port: int, *, fail_first: bool = False) -> None:
        self.events: dict[str, dict[str, Any]] = {}
        self.posts = 0
        self.refused = 0
        self.duplicates = 0
        self.fail_first = fail_first
        self.changed = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status = receiver.handle(body, self.headers)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)

    def handle(self, body: bytes, headers: Any) -> int:
        try:
            event = verify(body, headers, secrets=[WEBHOOK_SECRET])
        except WebhookSignatureError as error:
            print(f"  receiver: refused a request: {error}", flush=True)
            with self.changed:
                self.refused += 1
            return 400
        with self.changed:
            self.posts += 1
            if self.fail_first and self.posts == 1:
                return 503  # a receiver having a bad moment: the POST is retried
            key = headers[ID_HEADER]  # webhook-id: the message id, the same on every attempt
            if key in self.events:
                self.duplicates += 1  # already handled: answer 2xx, do nothing again
            else:
                self.events[key] = event
            self.changed.notify_all()
        return 200

    def wait_for(self, count: int, timeout: float) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: len(self.events) >= count, timeout)

    def __enter__(self) -> Receiver:
        threading.Thread(target=self.server.serve_forever, args=(0.1,), daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


if __name__ == "__main__":
    with Receiver(8765) as running:
        print("Receiving webhooks on http://127.0.0.1:8765/hooks/dramatiq (Ctrl-C to stop).", flush=True)
        try:
            while True:
                running.wait_for(len(running.events) + 1, 3600)
                print(list(running.events.values())[-1], flush=True)
        except KeyboardInterrupt:
            sys.exit(0)
