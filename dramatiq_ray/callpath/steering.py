"""A message's handle on its channel (:class:`Steering`), and the call a body reports progress with.

Runners ask the handle, between their wait slices, whether the message was cancelled (throttled), and the body
reports progress through it (:func:`report_progress`, throttled, the last value always written when the body
ends). Where marks and progress live is :mod:`.channel`; this module also re-exports its names, and
:class:`~dramatiq_ray.callpath.redis_channel.RedisChannel`, for the modules that import them from here.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

from .. import metrics
from ..errors import ConfigurationError, MessageCancelledError
from .channel import FINISHED, MARK_TTL, QUEUED, RUNNING, Channel, Progress
from .redis_channel import RedisChannel

__all__ = [
    "CANCEL_CHECK_EVERY",
    "FINISHED",
    "MARK_TTL",
    "PROGRESS_EVERY",
    "QUEUED",
    "RUNNING",
    "Channel",
    "Progress",
    "RedisChannel",
    "Steering",
    "report_progress",
]

logger = logging.getLogger(__name__)

#: At most one progress write per message per this many seconds (the last value is always written at the end).
PROGRESS_EVERY = 0.5
#: At most one look at a running message's cancel mark per this many seconds.
CANCEL_CHECK_EVERY = 1.0


class Steering:
    """One message's handle on its channel: asks whether it was cancelled and writes its progress, throttled.

    It travels with the call (the throttling state stays behind). Runners call :meth:`cancel_requested` between
    their wait slices; the replicas runner, or any other, does the same to stop its remote work.
    """

    def __init__(
        self,
        channel: Channel,
        message_id: str,
        *,
        progress_every: float = PROGRESS_EVERY,
        check_every: float = CANCEL_CHECK_EVERY,
    ) -> None:
        self.channel = channel
        self.message_id = message_id
        self.progress_every = progress_every
        self.check_every = check_every
        self._reset()

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._checked_at = float("-inf")
        self._cancelled = False
        self._written_at = float("-inf")
        self._pending: Progress | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {
            "channel": self.channel,
            "message_id": self.message_id,
            "progress_every": self.progress_every,
            "check_every": self.check_every,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset()

    def cancel_requested(self) -> bool:
        """Whether the message was cancelled; reads the mark at most once per ``check_every`` seconds (a mark,
        once seen, stays seen). A mark that cannot be read counts as none (logged)."""
        if self._cancelled:
            return True
        now = time.monotonic()
        if now - self._checked_at < self.check_every:
            return False
        self._checked_at = now
        try:
            self._cancelled = self.channel.is_cancelled(self.message_id)
        except Exception as error:
            logger.warning("Could not read the cancel mark of message %s: %s", self.message_id, error)
        return self._cancelled

    def cancelled_error(self, actor_name: str, where: str) -> MessageCancelledError:
        return MessageCancelledError(
            f"Message {self.message_id} of actor {actor_name!r} was cancelled {where}; it is not retried.",
            message_id=self.message_id,
        )

    def report(self, progress: Progress) -> tuple[bool, bool]:
        """Write ``progress`` now, or keep it for the next write when the last one is under ``progress_every``
        seconds old.

        Returns:
          Whether ``progress`` was written now, and whether a report kept back before it was dropped (replaced by
          this one, never written).
        """
        with self._lock:
            now = time.monotonic()
            replaced = self._pending is not None
            if now - self._written_at < self.progress_every:
                self._pending = progress
                return False, replaced
            self._written_at, self._pending = now, None
        self.channel.write_progress(self.message_id, progress)
        return True, replaced

    def flush(self) -> bool:
        """Write the progress kept back by the throttle, if any (when the body ends); return whether one was."""
        with self._lock:
            pending, self._pending = self._pending, None
        if pending is not None:
            self.channel.write_progress(self.message_id, pending)
        return pending is not None


_steering: ContextVar[tuple[Steering, str] | None] = ContextVar("dramatiq_ray_steering", default=None)


@contextlib.contextmanager
def _steered(steering: Steering | None, actor_name: str) -> Iterator[None]:
    """Make ``steering`` the one :func:`report_progress` uses while the body runs; flush it at the end."""
    token = _steering.set((steering, actor_name) if steering is not None else None)
    try:
        yield
    finally:
        _steering.reset(token)
        if steering is not None and steering.flush():
            metrics.record_progress(actor_name, written=1)


def report_progress(done: float, total: float | None = None, note: str | None = None) -> bool:
    """Report the progress of the message whose body is running, wherever it runs (the worker thread, a Ray task,
    a Ray job); :func:`~dramatiq_ray.get_progress` reads it from any process.

    Writes are throttled (at most one every 0.5 s per message; the last value is always written when the body
    ends), so calling it in a tight loop is cheap. It is also where a body running in the worker thread (with
    ``ray=False``) notices that its message was cancelled: then it raises ``MessageCancelledError``.

    Parameters:
      done: how much is done, in any unit.
      total: how much there is in all, or ``None`` when unknown.
      note: a short free text (no secrets: anyone who can read progress sees it).

    Returns:
      Whether the progress is recorded: ``False`` outside a body, or when the broker's result backend keeps no
      progress (only a Redis result backend and an ``SQLBackend`` do).

    Raises:
      MessageCancelledError: the message was cancelled (the body should let it propagate).
      ConfigurationError: ``done`` or ``total`` is not a number.

    Example::

        @dramatiq.actor(store_results=True)
        def train(epochs):
            for epoch in range(epochs):
                ...
                report_progress(epoch + 1, epochs, note=f"loss {loss:.3f}")
    """
    for name, value in (("done", done), ("total", total)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise ConfigurationError(f"report_progress: {name} must be a number, not {type(value).__name__}.")
    if note is not None and not isinstance(note, str):
        raise ConfigurationError(f"report_progress: note must be a string, not {type(note).__name__}.")
    current = _steering.get()
    if current is None:
        return False
    steering, actor_name = current
    written, replaced = steering.report(Progress(done, total, note, time.time()))
    metrics.record_progress(actor_name, written=int(written), throttled=int(replaced))
    if steering.cancel_requested():
        raise steering.cancelled_error(actor_name, "while it ran")
    return True
