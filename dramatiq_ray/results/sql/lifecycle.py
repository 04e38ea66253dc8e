"""Message lifecycle events for result backends that record them (:class:`~dramatiq_ray.SQLBackend`).

A Dramatiq result backend only sees outcomes (``store_result``, ``store_exception``). ``dramatiq_ray.Results``
also tells its backend when a message is enqueued, starts running in a worker, and is skipped, through the one
method of :class:`MessageEventRecorder`, for the messages whose results it stores (``store_results``). It reaches
the backend through the ``SpillingBackend`` that wraps it, so users only pass ``Results(backend=SQLBackend(...))``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import dramatiq
    from dramatiq.results import Results

__all__ = ["EVENTS", "MessageEventRecorder", "record_event", "recorder_of"]

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
