"""Message lifecycle events for result backends that record them (:class:`~dramatiq_ray.SQLBackend`).

A Dramatiq result backend only sees outcomes (``store_result``, ``store_exception``). ``dramatiq_ray.Results``
also tells its backend when a message is enqueued, starts running in a worker, and is skipped, through the one
method of :class:`MessageEventRecorder`, for the messages whose results it stores (``store_results``). It reaches
the backend through the ``SpillingBackend`` that wraps it, so users only pass ``Results(backend=SQLBackend(...))``.

It also decides what happens to a message whose outcome could not be stored (the database was down longer than
the backend retried): :func:`retry_unstored` runs it again later instead of letting the worker acknowledge it with
no result. That holds for any result backend behind ``dramatiq_ray.Results``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import dramatiq
    from dramatiq.results import Results

__all__ = ["EVENTS", "MessageEventRecorder", "record_event", "recorder_of", "retry_unstored"]

logger = logging.getLogger(__name__)

#: The events ``dramatiq_ray.Results`` forwards: from ``before_enqueue``, ``before_process_message`` and
#: ``after_skip_message``.
EVENTS = ("enqueued", "running", "skipped")


@runtime_checkable
class MessageEventRecorder(Protocol):
    """A result backend that records message lifecycle events. Must not raise: recording is best effort (the
    outcome, stored as usual, is what counts)."""

    def record_message_event(self, event: str, message: Any, ttl: int) -> None:
        """Record that ``message`` was ``event`` (one of :data:`EVENTS`); keep the record ``ttl`` milliseconds."""


def recorder_of(backend: object) -> MessageEventRecorder | None:
    """The recorder behind ``backend`` (itself, or the backend a ``SpillingBackend`` wraps), or ``None``."""
    from ..backend import SpillingBackend

    inner = backend.backend if isinstance(backend, SpillingBackend) else backend
    return inner if isinstance(inner, MessageEventRecorder) else None


def record_event(results: Results, broker: dramatiq.Broker, message: Any, event: str) -> None:
    """Forward ``event`` to the recorder behind ``results.backend``, when there is one and the message's result
    is stored (the ``store_results`` and ``result_ttl`` options, looked up as Dramatiq's Results does)."""
    recorder = recorder_of(results.backend)
    if recorder is None:
        return
    store_results, result_ttl = results._lookup_options(broker, message)  # type: ignore[no-untyped-call]
    if store_results:
        recorder.record_message_event(event, message, result_ttl)


#: The option counting how many times a message was run again because its outcome could not be stored.
UNSTORED_OPTION = "dramatiq_ray_unstored"
#: The delays before such a message runs again, in milliseconds: doubling from the first up to the cap.
UNSTORED_FIRST_DELAY, UNSTORED_MAX_DELAY = 1_000, 60_000


def retry_unstored(broker: dramatiq.Broker, message: Any, error: BaseException) -> None:
    """``message`` ran but its outcome could not be stored: enqueue it again (it runs again and stores its
    outcome then) rather than let the worker acknowledge it as done. When even that fails, fail it, so that it is
    rejected (dead-lettered) instead of acknowledged."""
    count = int(message.options.get(UNSTORED_OPTION, 0) or 0)
    delay = min(UNSTORED_FIRST_DELAY * 2 ** min(count, 16), UNSTORED_MAX_DELAY)
    message.options[UNSTORED_OPTION] = count + 1
    logger.warning(
        "The outcome of message %s of %r could not be stored (%s: %s); it runs again in %d ms.",
        message.message_id,
        message.actor_name,
        type(error).__name__,
        error,
        delay,
    )
    try:
        broker.enqueue(message, delay=delay)
    except Exception as enqueue_error:
        logger.error(
            "Message %s of %r could not be enqueued again either (%s: %s): it is failed (rejected) rather than "
            "acknowledged without its outcome.",
            message.message_id,
            message.actor_name,
            type(enqueue_error).__name__,
            enqueue_error,
        )
        message.fail()
