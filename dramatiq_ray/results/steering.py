"""Cancel a message and read its progress, from any process: :func:`cancel`, :func:`get_progress`.

Marks and progress live in the broker's result backend: a Redis result backend's Redis
(:class:`~dramatiq_ray.callpath.redis_channel.RedisChannel`) or an ``SQLBackend``'s database
(:class:`~dramatiq_ray.results.sql.steering.SQLChannel`), reached through ``dramatiq_ray.Results``, which also
records each message's state (queued, running, finished) there so that cancelling a finished or unknown message
is a no-op that says so.
"""

from __future__ import annotations

import asyncio
import enum
import sys
from typing import Any

import dramatiq
from dramatiq.results import ResultBackend

from .. import metrics
from ..callpath.channel import FINISHED as STATE_FINISHED
from ..callpath.channel import Channel, Progress
from ..callpath.redis_channel import RedisChannel
from ..errors import ConfigurationError
from .access import find_spilling_backend
from .backend import SpillingBackend

__all__ = ["CancelOutcome", "cancel", "channel_for", "get_progress", "get_progress_async"]


class CancelOutcome(enum.StrEnum):
    """What :func:`cancel` did."""

    #: The message was marked cancelled: not started yet, it is skipped; running, it is stopped.
    REQUESTED = "requested"
    #: No-op: the message had already finished (succeeded, failed or was cancelled).
    FINISHED = "finished"
    #: No-op: no message with this id was sent through ``dramatiq_ray.Results`` (or its state expired).
    UNKNOWN = "unknown"


def channel_for(backend: ResultBackend) -> Channel | None:
    """The channel of marks and progress behind a result backend (a ``SpillingBackend`` or what it wraps), or
    ``None`` when it keeps none (only a Redis result backend and an ``SQLBackend`` do)."""
    from .sql.backend import SQLBackend
    from .sql.steering import SQLChannel

    inner = backend.backend if isinstance(backend, SpillingBackend) else backend
    # A Redis result backend's module is imported by whoever built one: not imported here, so redis-py (and what
    # it imports) stays out of processes that use another backend.
    redis_backends = sys.modules.get("dramatiq.results.backends.redis")
    if redis_backends is not None and isinstance(inner, redis_backends.RedisBackend):
        return RedisChannel.from_client(inner.client, namespace=f"{inner.namespace}:dramatiq-ray")
    if isinstance(inner, SQLBackend):
        return SQLChannel(inner.database, table_prefix=inner.table_prefix)
    return None


def _channel(broker: dramatiq.Broker | None, what: str) -> Channel:
    broker = broker if broker is not None else dramatiq.get_broker()
    for middleware in broker.middleware:
        channel = getattr(middleware, "steering_channel", None)
        if callable(channel):
            found = channel()
            if found is not None:
                return found  # type: ignore[no-any-return]
    backend = find_spilling_backend(broker)
    raise ConfigurationError(
        f"{what} needs dramatiq_ray.Results with a Redis result backend or an SQLBackend on the broker (this "
        f"broker has {type(backend.backend).__name__ if backend is not None else 'no dramatiq_ray.Results'}): "
        "marks and progress live in the result backend's Redis or database."
    )


def _message_id(message_or_id: dramatiq.Message[Any] | dramatiq.MessageProxy | str) -> str:
    if isinstance(message_or_id, str):
        return message_or_id
    message_id = getattr(message_or_id, "message_id", None)
    if not isinstance(message_id, str):
        raise ConfigurationError(f"Expected a message or a message id, not {type(message_or_id).__name__}.")
    return message_id


def cancel(
    message_or_id: dramatiq.Message[Any] | dramatiq.MessageProxy | str, *, broker: dramatiq.Broker | None = None
) -> CancelOutcome:
    """Cancel a message, from any process.

    Not started yet (queued, delayed, or waiting for a retry): the worker that takes it skips it, and its body
    never runs. Running on Ray: its Ray task is killed (``ray.cancel(force=True)``) or its Ray job stopped within
    about a second. Running in the worker thread (``ray=False``): it stops at its next
    :func:`~dramatiq_ray.report_progress`. Either way its outcome is a failure, never retried:
    ``get_result`` raises ``ResultFailure`` with ``orig_exc_type == "MessageCancelledError"``; a pipeline stops at
    it; a group counts it as a failed member.

    Parameters:
      message_or_id: the message (as ``send`` returned it) or its id.
      broker: the broker whose ``dramatiq_ray.Results`` keeps the marks (default: the global broker).

    Returns:
      ``CancelOutcome.REQUESTED``, or ``FINISHED`` / ``UNKNOWN`` when there was nothing to cancel (no-op).

    Raises:
      ConfigurationError: the broker has no ``dramatiq_ray.Results`` with a Redis result backend or an SQLBackend.
    """
    channel = _channel(broker, "cancel")
    message_id = _message_id(message_or_id)
    state = channel.state(message_id)
    if state is None:
        outcome = CancelOutcome.UNKNOWN
    elif state == STATE_FINISHED:
        outcome = CancelOutcome.FINISHED
    else:
        channel.mark_cancelled(message_id)
        outcome = CancelOutcome.REQUESTED
    metrics.record_cancellation(getattr(message_or_id, "actor_name", ""), outcome.value)
    return outcome


def get_progress(
    message_or_id: dramatiq.Message[Any] | dramatiq.MessageProxy | str, *, broker: dramatiq.Broker | None = None
) -> Progress | None:
    """The latest progress the message's body reported (``done``, ``total``, ``note``, ``time``), from any
    process, or ``None`` when it reported none (yet).

    Raises:
      ConfigurationError: the broker has no ``dramatiq_ray.Results`` with a Redis result backend or an SQLBackend.
    """
    return _channel(broker, "get_progress").read_progress(_message_id(message_or_id))


async def get_progress_async(
    message_or_id: dramatiq.Message[Any] | dramatiq.MessageProxy | str, *, broker: dramatiq.Broker | None = None
) -> Progress | None:
    """:func:`get_progress` for asyncio code (the read runs in a thread)."""
    return await asyncio.to_thread(get_progress, message_or_id, broker=broker)
