"""A small web-style producer (standard library WSGI): start a render, poll its progress, cancel it.

    POST   /renders?frames=N      -> 202 {"id": ...}                      sends the message
    GET    /renders/<id>          -> 200 {"state": ..., "progress": ...}  running, done, failed or cancelled
    DELETE /renders/<id>          -> 202 {"cancel": "requested"} or 409 {"cancel": "finished" | "unknown"}

A real application does the same from Django, Flask or FastAPI: ``send`` returns at once, ``get_progress`` and
``cancel`` work from any process, and ``get_result(block=False)`` says whether the message is done.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

import dramatiq
from dramatiq.results import ResultFailure, ResultMissing

from dramatiq_ray import CancelOutcome, cancel, get_progress

from .tasks import render

#: How long each simulated frame takes on Ray, in seconds.
SECONDS_PER_FRAME = 0.5


def _message(message_id: str) -> dramatiq.Message[Any]:
    name = render.actor_name
    return dramatiq.Message(
        queue_name=render.queue_name, actor_name=name, args=(), kwargs={}, options={}, message_id=message_id
    )


def state_of(message_id: str) -> dict[str, Any]:
    """What a status page shows: the state, the result or error, and the latest progress."""
    progress = get_progress(message_id)
    body: dict[str, Any] = {
        "id": message_id,
        "progress": None
        if progress is None
        else {"done": progress.done, "total": progress.total, "note": progress.note, "time": progress.time},
    }
    try:
        body["result"] = _message(message_id).get_result(block=False)
        body["state"] = "done"
    except ResultMissing:
        body["state"] = "running"
    except ResultFailure as failure:
        body["state"] = "cancelled" if failure.orig_exc_type == "MessageCancelledError" else "failed"
    return body


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "")
    parts = [part for part in path.split("/") if part]
    status, body = "404 Not Found", {"error": "not found"}
    if parts == ["renders"] and method == "POST":
        frames = int(parse_qs(environ.get("QUERY_STRING", "")).get("frames", ["10"])[0])
        message = render.send(frames, SECONDS_PER_FRAME)
        status, body = "202 Accepted", {"id": message.message_id}
    elif len(parts) == 2 and parts[0] == "renders" and method == "GET":
        status, body = "200 OK", state_of(parts[1])
    elif len(parts) == 2 and parts[0] == "renders" and method == "DELETE":
        outcome = cancel(parts[1])
        status = "202 Accepted" if outcome is CancelOutcome.REQUESTED else "409 Conflict"
        body = {"cancel": outcome.value}
    data = json.dumps(body).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return [data]
