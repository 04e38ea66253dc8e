"""The JSON payload of a webhook: what happened to one message, and where its result is.

::

    {"message_id": "...", "actor": "render", "queue": "default", "status": "succeeded", "attempts": 1,
     "enqueued_at": "2026-01-01T12:00:00.000Z", "started_at": "...", "finished_at": "...",
     "result": {"value": ...}}

``result`` is one of ``{"value": v}`` (small and JSON), ``{"pointer": p, "sha256": ..., "bytes": n, "url": u,
"url_expires_at": t}`` (spilled; ``url`` only when the store can sign, else ``url_error``), or ``{"omitted":
reason}``. A failed message has ``"status": "failed"`` and ``"error": {"type": ..., "message": ...}`` instead.
"""

from __future__ import annotations

import datetime
import json
import time
from typing import Any

import dramatiq

from ..payloads.marker import is_inline_shape, is_spilled_shape
from ..payloads.pointers import parse_pointer
from ..results.access import find_spilling_backend, get_pointer
from ..retries.rules import original_exception, type_name
from .presign import presign_pointer

__all__ = [
    "completion_event",
    "completion_result",
    "error_section",
    "iso_time",
    "message_fields",
    "payload_body",
    "pointer_section",
]

#: The longest error message carried, in characters.
MAX_ERROR_CHARS = 2000


def iso_time(milliseconds: float | None) -> str | None:
    """A Unix time in milliseconds as ISO 8601 UTC with milliseconds (``2026-01-01T12:00:00.000Z``)."""
    if milliseconds is None:
        return None
    moment = datetime.datetime.fromtimestamp(milliseconds / 1000, tz=datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def completion_result(result: Any, max_value_bytes: int) -> dict[str, Any]:
    """The ``result`` section for what an actor returned, as it reached the worker's after-hooks: the value, a
    spilled-value marker, or an inline non-JSON value. ``{"lookup": True}`` means "large and not spilled by the
    body: look in the result backend for a pointer when delivering" (a ``SpillingBackend`` spills when it stores).
    """
    if is_spilled_shape(result):
        return pointer_section(next(iter(result.values())))
    if is_inline_shape(result):
        return {"omitted": "not_json"}
    try:
        encoded = json.dumps(result, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError):
        return {"omitted": "not_json"}
    if len(encoded.encode()) > max_value_bytes:
        return {"lookup": True}
    return {"value": result}


def pointer_section(pointer: str) -> dict[str, Any]:
    """The ``result`` section of a spilled result, before a URL is added."""
    parsed = parse_pointer(pointer)
    section: dict[str, Any] = {"pointer": parsed.raw, "sha256": parsed.digest, "bytes": parsed.size}
    if parsed.codec != "json":
        section["codec"] = parsed.codec
    if parsed.compression is not None:
        section["compression"] = parsed.compression
    if parsed.key_id is not None:
        section["key_id"] = parsed.key_id
    return section


def error_section(exception: BaseException | None) -> dict[str, str]:
    """``{"type": ..., "message": ...}`` for the exception that failed a message (Ray's wrapper removed)."""
    if exception is None:
        return {"type": "Exception", "message": "unknown"}
    original = original_exception(exception)
    name = type_name(original)
    text = str(original)
    return {
        "type": name.removeprefix("builtins."),
        "message": text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "…",
    }


def message_fields(message: dramatiq.Message[Any] | dramatiq.MessageProxy) -> dict[str, Any]:
    """The identifying fields of a payload."""
    return {
        "message_id": message.message_id,
        "actor": message.actor_name,
        "queue": message.queue_name,
        "enqueued_at": iso_time(message.message_timestamp),
    }


def completion_event(
    message: dramatiq.MessageProxy,
    status: str,
    attempts: int,
    started: int | None,
    finished: int,
    *,
    result: dict[str, Any] | None = None,
    error: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The event of a message that is done (times in Unix milliseconds), before :func:`payload_body` completes it."""
    event: dict[str, Any] = {
        **message_fields(message),
        "status": status,
        "attempts": attempts,
        "started_at": iso_time(started),
        "finished_at": iso_time(finished),
    }
    if result is not None:
        event["result"] = result
    if error is not None:
        event["error"] = error
    return event


def payload_body(broker: dramatiq.Broker, event: dict[str, Any], expires_in: int) -> bytes:
    """The JSON body of one POST: the event, with a spilled result's presigned URL made now (valid ``expires_in``
    seconds), and a large unspilled value looked up as a pointer in the result backend."""
    payload = dict(event)
    result = payload.get("result")
    if result is not None and result.get("lookup"):
        result = _look_up_pointer(broker, event)
    if result is not None and "pointer" in result:
        result = _with_url(broker, result, expires_in)
    if result is not None:
        payload["result"] = result
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=True).encode()


def _look_up_pointer(broker: dramatiq.Broker, event: dict[str, Any]) -> dict[str, Any]:
    """The pointer the result backend keeps for a large value the body did not spill (a SpillingBackend behind
    Dramatiq's own Results spills when it stores), without reading the blob; else ``{"omitted": "too_large"}``."""
    backend = find_spilling_backend(broker)
    if backend is not None:
        message: dramatiq.Message[Any] = dramatiq.Message(
            queue_name=event["queue"],
            actor_name=event["actor"],
            args=(),
            kwargs={},
            options={},
            message_id=event["message_id"],
        )
        try:
            pointer = get_pointer(message, backend=backend)
        except Exception:  # not stored (store_results is off), or stored as a failure
            pointer = None
        if pointer is not None:
            return pointer_section(pointer)
    return {"omitted": "too_large"}


def _with_url(broker: dramatiq.Broker, result: dict[str, Any], expires_in: int) -> dict[str, Any]:
    backend = find_spilling_backend(broker)
    section = dict(result)
    try:
        section["url"] = presign_pointer(backend.store if backend is not None else None, result["pointer"], expires_in)
        section["url_expires_at"] = iso_time(time.time() * 1000 + expires_in * 1000)
    except Exception as error:  # the store cannot sign: the receiver still gets the pointer, and why
        section["url_error"] = str(error)
    return section
