"""``python -m examples.steering``: start workers and the small web app, start two renders over HTTP, watch
their progress, cancel one while it runs on Ray, and check what each ends as."""

from __future__ import annotations

import json
import sys
import threading
import time
import urllib.error
import urllib.request
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from .._workers import dramatiq_workers, redis_answers, say
from .app import app
from .tasks import NAMESPACE, REDIS_URL

#: How long to wait for each render to reach a state, in seconds (the first message also waits for Ray).
WAIT = 300


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return None


def call(base: str, method: str, path: str) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(base + path, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def wait_for(base: str, render_id: str, done: Any, what: str) -> dict[str, Any]:
    deadline = time.monotonic() + WAIT
    while True:
        _, state = call(base, "GET", f"/renders/{render_id}")
        if done(state):
            return state
        if time.monotonic() > deadline:
            raise RuntimeError(f"render {render_id} did not {what} within {WAIT} s (last state: {state})")
        time.sleep(0.2)


def client(base: str) -> int:
    problems = []
    _, short = call(base, "POST", "/renders?frames=4")
    _, long = call(base, "POST", "/renders?frames=600")
    say(f"POST /renders twice: a short render {short['id']} (4 frames) and a long one {long['id']} (600 frames).")

    running = wait_for(base, long["id"], lambda s: (s["progress"] or {}).get("done", 0) >= 2, "report progress")
    say(f"GET /renders/{long['id']}: {running['state']}, progress {running['progress']['note']!r}.")
    code, answer = call(base, "DELETE", f"/renders/{long['id']}")
    say(f"DELETE /renders/{long['id']}: {code} {answer}")
    cancelled = wait_for(base, long["id"], lambda s: s["state"] != "running", "end")
    say(f"  it ended {cancelled['state']} at {cancelled['progress']['note']!r}: it was stopped on Ray.")
    if cancelled["state"] != "cancelled":
        problems.append(f"the long render ended {cancelled['state']}")

    finished = wait_for(base, short["id"], lambda s: s["state"] != "running", "end")
    say(f"GET /renders/{short['id']}: {finished['state']}, result {finished.get('result')}.")
    if finished["state"] != "done" or finished["progress"]["done"] != 4:
        problems.append(f"the short render ended {finished['state']} with progress {finished['progress']}")
    code, answer = call(base, "DELETE", f"/renders/{short['id']}")
    say(f"DELETE /renders/{short['id']} (already done): {code} {answer}")
    if code != 409 or answer != {"cancel": "finished"}:
        problems.append(f"cancelling a finished render answered {code} {answer}")

    for problem in problems:
        say(f"UNEXPECTED: {problem}")
    if problems:
        return 1
    say("Cancel and progress behaved as expected.")
    return 0


def main() -> int:
    if not redis_answers(REDIS_URL):
        return 2
    say(f"Broker, results, cancel marks and progress: Redis at {REDIS_URL} (keys under {NAMESPACE!r}).")
    server = make_server("127.0.0.1", 0, app, handler_class=_Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}"
    say(f"The web app listens on {base}.")
    try:
        with dramatiq_workers("examples.steering.tasks", processes=1, threads=2):
            return client(base)
    except RuntimeError as error:
        say(f"FAILED: {error}")
        return 1
    finally:
        server.shutdown()


if __name__ == "__main__":
    sys.exit(main())
