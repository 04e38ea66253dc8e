"""Which messages this process runs, and the state each one has where cancel marks live.

``dramatiq_ray.Results`` records every message's state (queued, running, finished) in the result backend's
channel of marks and progress (:mod:`dramatiq_ray.results.steering`), so that cancelling a finished or unknown
message is a no-op that says so, and reads a message's cancel mark as it starts. :class:`MessageStates` keeps
that bookkeeping: the channel, built on first use, and the messages this process runs, so that a message put
back on the queue (a retry) is not taken for done when it is acked.
"""

from __future__ import annotations

import logging
import threading

from dramatiq.results import ResultBackend

from ..callpath.steering import FINISHED, QUEUED, Channel
from .steering import channel_for

__all__ = ["MessageStates"]

logger = logging.getLogger(__name__)


class MessageStates:
    """The states of the messages one ``Results`` sees, recorded in its backend's channel (best effort).

    Parameters:
      backend: The result backend whose channel keeps the states (a ``SpillingBackend`` or what it wraps).
    """

    def __init__(self, backend: ResultBackend) -> None:
        self._backend = backend
        self._lock = threading.Lock()
        # By message id, under the lock: the messages this process is running (how many times at once: a
        # redelivered duplicate may run beside the original), and those of them that Retries (or anything, from
        # any thread) put back on the queue, which are not done when they are acked.
        self._running: dict[str, int] = {}
        self._requeued: set[str] = set()
        # Where cancel marks, message states and progress live; built on first use.
        self._channel: tuple[Channel | None] | None = None

    def channel(self) -> Channel | None:
        """Where cancel marks, message states and progress live, or ``None`` (the result backend keeps none)."""
        if self._channel is None:
            self._channel = (channel_for(self._backend),)
        return self._channel[0]

    def queued(self, message_id: str) -> None:
        """Record that ``message_id`` was sent, or put back on the queue while it runs here (a retry)."""
        self._set_state(message_id, QUEUED)
        with self._lock:
            if message_id in self._running:
                self._requeued.add(message_id)

    def running(self, message_id: str) -> None:
        """Note that ``message_id`` runs in this process (once more: a redelivered duplicate may run beside it)."""
        with self._lock:
            self._running[message_id] = self._running.get(message_id, 0) + 1

    def cancelled_before_start(self, message_id: str) -> bool:
        """Record that ``message_id`` runs, and say whether it was cancelled (one round trip)."""
        channel = self.channel()
        if channel is None:
            return False
        try:
            return channel.start(message_id)
        except Exception as error:
            logger.warning(
                "Could not read the cancel mark of message %s in %s (%s); it runs.",
                message_id,
                channel.describe(),
                error,
            )
            return False

    def acked(self, message_id: str) -> bool:
        """Record that ``message_id`` was acked; return whether it is done for good (it was not put back on the
        queue to run again meanwhile)."""
        if self._forget(message_id):
            return False
        self._set_state(message_id, FINISHED)
        return True

    def failed(self, message_id: str) -> None:
        """Record that ``message_id`` failed for good (it was nacked)."""
        self._forget(message_id)
        self._set_state(message_id, FINISHED)

    def clear(self) -> None:
        """Forget every running message (the worker has stopped)."""
        with self._lock:
            self._running.clear()
            self._requeued.clear()

    def close(self) -> None:
        """Close the channel's connections, when it has any; a later use opens them again."""
        channel = self._channel[0] if self._channel is not None else None
        close = getattr(channel, "close", None)
        if close is not None:
            close()

    def _forget(self, message_id: str) -> bool:
        """Forget that ``message_id`` runs here; return whether it was put back on the queue meanwhile."""
        with self._lock:
            count = self._running.pop(message_id, 0) - 1
            if count > 0:
                self._running[message_id] = count
            requeued = message_id in self._requeued
            if count <= 0:
                self._requeued.discard(message_id)
            return requeued

    def _set_state(self, message_id: str, state: str) -> None:
        channel = self.channel()
        if channel is None:
            return
        try:
            channel.set_state(message_id, state)
        except Exception as error:
            # Best effort: the message runs as usual; only a cancel of it may say "unknown".
            logger.warning(
                "Could not record that message %s is %s in %s: %s", message_id, state, channel.describe(), error
            )
