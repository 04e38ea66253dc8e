"""What each write of :class:`~dramatiq_ray.SQLBackend` puts in a message's row: an outcome (a value, a spilled
result's pointer, or a failure with its error and traceback) or a lifecycle event, with the message's identity,
its worker and, when recorded, its arguments. Column values only: the statements that write them are in
``statements.py``.
"""

from __future__ import annotations

import json
import logging
import os
import time
import traceback
from typing import TYPE_CHECKING, Any

from ...payloads.pointers import looks_like_pointer, parse_pointer

if TYPE_CHECKING:
    from .config import Redactor

__all__ = ["event_values", "identity", "outcome_values", "recorded_arguments"]

# Records keep the name of SQLBackend's module, the logger users configure.
logger = logging.getLogger("dramatiq_ray.results.sql.backend")

_FAILURE_CANARY = "dramatiq.results.Result"
#: Longest error message, traceback and recorded arguments kept, in characters.
_TEXT_LIMIT = 64 * 1024


def outcome_values(
    message: Any,
    key: str,
    payload: Any,
    data: bytes,
    ttl: int,
    exception: Exception | None,
    *,
    host: str,
    record_args: bool,
    redact: Redactor | None,
) -> dict[str, Any]:
    """The columns of an outcome: ``payload`` is what Dramatiq stores (a wrapped result or exception), ``data``
    its encoding; ``message`` is ``None`` for a value stored with only a key."""
    now = time.time()
    values: dict[str, Any] = {
        "key": key,
        "result": data,
        "result_size": None,
        "pointer": None,
        "blob_digest": None,
        "error_type": None,
        "error_message": None,
        "traceback": None,
        "finished_at": now,
        "updated_at": now,
        "expires_at": now + ttl / 1000,
    }
    failed = isinstance(payload, dict) and payload.get("__t") == _FAILURE_CANARY
    if failed:
        values["error_type"] = str(payload["exn"].get("type"))[:255]
        # dramatiq_ray.cancel: a failure of its own kind, so operators can tell it from a crash.
        values["status"] = "cancelled" if values["error_type"] == "MessageCancelledError" else "failure"
        values["error_message"] = _clip(str(payload["exn"].get("msg")))
        values["traceback"] = _traceback_of(message, exception)
    else:
        values["status"] = "success"
        values["result_size"] = len(data)
        if looks_like_pointer(payload):
            try:
                pointer = parse_pointer(payload)
            except Exception:
                pass
            else:
                values.update(pointer=pointer.raw, blob_digest=pointer.digest, result_size=pointer.size)
    if message is not None:
        retries = int(message.options.get("retries", 0) or 0)
        values.update(identity(message))
        values.update(worker_host=host, worker_pid=os.getpid())
        values["attempts"] = max(retries, 1) if failed else retries + 1
        values.update(recorded_arguments(message, record_args, redact))
    return values


def event_values(
    event: str, message: Any, key: str, ttl: int, *, host: str, record_args: bool, redact: Redactor | None
) -> dict[str, Any]:
    """The columns of a lifecycle event (``enqueued``, ``running`` or ``skipped``)."""
    now = time.time()
    values: dict[str, Any] = {
        "key": key,
        **identity(message),
        "status": "skipped" if event == "skipped" else event,
        "attempts": 0,
        "updated_at": now,
        "expires_at": now + ttl / 1000,
    }
    if event == "enqueued":
        values["enqueued_at"] = now
        values.update(recorded_arguments(message, record_args, redact))
    elif event == "running":
        values.update(
            started_at=now,
            attempts=int(message.options.get("retries", 0) or 0) + 1,
            worker_host=host,
            worker_pid=os.getpid(),
        )
        values.update(recorded_arguments(message, record_args, redact))
    else:
        values["finished_at"] = now
    return values


def identity(message: Any) -> dict[str, Any]:
    """The columns naming the message, its queue and its actor."""
    return {
        "message_id": str(message.message_id)[:64],
        "queue_name": str(message.queue_name)[:255],
        "actor_name": str(message.actor_name)[:255],
    }


def recorded_arguments(message: Any, record_args: bool, redact: Redactor | None) -> dict[str, Any]:
    """The ``args`` and ``kwargs`` columns as JSON, after ``redact``; none when arguments are not recorded or the
    hook fails (logged at WARNING); a column longer than the limit is left empty."""
    if not record_args:
        return {}
    args, kwargs = tuple(message.args), dict(message.kwargs)
    if redact is not None:
        try:
            args, kwargs = redact(message.actor_name, args, kwargs)  # type: ignore[assignment]
        except Exception as error:
            logger.warning(
                "The redact hook failed for a message of %r (%s: %s): its arguments are not recorded.",
                message.actor_name,
                type(error).__name__,
                error,
            )
            return {}
    recorded = {"args": json.dumps(list(args), default=repr), "kwargs": json.dumps(dict(kwargs), default=repr)}
    return {name: text if len(text) <= _TEXT_LIMIT else None for name, text in recorded.items()}


def _clip(text: str) -> str:
    return text if len(text) <= _TEXT_LIMIT else text[: _TEXT_LIMIT - 20] + "\n... (truncated)"


def _traceback_of(message: Any, exception: Exception | None) -> str | None:
    # The exception's own traceback is this failure's; Retries' "traceback" option may be an earlier attempt's
    # when this one failed at once (denylist, throws).
    if exception is not None and exception.__traceback__ is not None:
        return _clip("".join(traceback.format_exception(exception)))
    text = message.options.get("traceback") if message is not None else None
    return _clip(text) if isinstance(text, str) else None
