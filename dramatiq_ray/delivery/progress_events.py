"""Progress events: while a message whose webhook reports progress runs, one thread per worker process looks at
its latest progress (written by :func:`~dramatiq_ray.report_progress` wherever the body runs: the worker thread,
a Ray task, a Ray job) every ``every`` milliseconds, and hands each new value on as a webhook event of type
``progress``.

So events are throttled by construction (at most one per message per interval, none when nothing changed), and
they come from the worker, which can enqueue, whichever process the body runs in. An event is one POST, never
retried: the next one supersedes it, and the completion event follows them all.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import dramatiq

from ..errors import ConfigurationError
from .attempts import now_ms
from .payload import iso_time, message_fields

__all__ = ["PROGRESS_EVENT", "PROGRESS_OPTION", "ProgressWatch", "check_progress_option"]

logger = logging.getLogger(__name__)

#: The actor and message option that turns progress events on or off for a message's webhook.
PROGRESS_OPTION = "webhook_progress"
#: The ``type`` of a progress event.
PROGRESS_EVENT = "progress"


def check_progress_option(options: dict[str, Any], where: str) -> None:
    """Raise ``ConfigurationError`` when ``options`` has a ``webhook_progress`` that is not a bool."""
    value = options.get(PROGRESS_OPTION)
    if value is not None and not isinstance(value, bool):
        raise ConfigurationError(f"{where}: {PROGRESS_OPTION} must be True or False, got {value!r}.")


@dataclass
class _Watched:
    fields: dict[str, Any]
    url: str
    last_time: float | None = None
    sent: int = 0


def steering_channel(broker: dramatiq.Broker) -> Any:
    """The channel where the broker's progress lives (``dramatiq_ray.Results`` over Redis or SQL), or ``None``."""
    for middleware in broker.middleware:
        find = getattr(middleware, "steering_channel", None)
        if callable(find):
            channel = find()
            if channel is not None:
                return channel
    return None


class ProgressWatch:
    """The messages this worker process runs with progress events on, and the thread that looks at their progress.

    Parameters:
      every: How often the progress of each watched message is read, in milliseconds (the most events per
        message per this long: one).
      send: Called with each progress delivery (it enqueues it on the delivery queue).
    """

    def __init__(self, *, every: int, send: Callable[[dict[str, Any]], None]) -> None:
        self.every = every
        self.send = send
        self._lock = threading.Lock()
        self._watched: dict[str, _Watched] = {}
        self._channel: Any = None
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._stopping = threading.Event()
        self._warned = False

    def watch(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy, url: str, attempts: int) -> None:
        """Start looking at ``message``'s progress (it was just taken by a worker thread)."""
        channel = self._channel or steering_channel(broker)
        if channel is None:
            with self._lock:  # once per process: every message of every actor would say the same
                warn, self._warned = not self._warned, True
            if warn:
                logger.warning(
                    "Progress webhooks need dramatiq_ray.Results with a Redis result backend or an SQLBackend (where "
                    "progress is kept): no progress event is sent (first seen for actor %r).",
                    message.actor_name,
                )
            return
        fields = {
            "type": PROGRESS_EVENT,
            **message_fields(message),
            "status": "running",
            "attempts": attempts,
            "started_at": iso_time(now_ms()),
        }
        with self._lock:
            self._channel = channel
            self._watched[message.message_id] = _Watched(fields, url)
            if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
                self._stopping.clear()
                self._thread = threading.Thread(target=self._run, name="dramatiq-ray-progress-events", daemon=True)
                self._pid = os.getpid()
                self._thread.start()

    def forget(self, message_id: str) -> None:
        """Stop looking at ``message_id`` (it was acked, nacked or skipped)."""
        with self._lock:
            self._watched.pop(message_id, None)

    def stop(self) -> None:
        """Forget every message and end the thread (the worker is shutting down)."""
        with self._lock:
            self._watched.clear()
            thread, self._thread = self._thread, None
        self._stopping.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _run(self) -> None:
        while not self._stopping.wait(self.every / 1000):
            try:
                self.poll()
            except Exception:  # never let the thread die: the next round tries again
                logger.warning("Could not look at the progress of running messages.", exc_info=True)

    def poll(self) -> int:
        """Read the progress of every watched message once; send an event for each that changed. Return how many."""
        with self._lock:
            watched = list(self._watched.items())
        sent = 0
        for message_id, entry in watched:
            try:
                progress = self._channel.read_progress(message_id)
            except Exception as error:
                logger.warning("Could not read the progress of message %s: %s", message_id, error)
                continue
            if progress is None or progress.time == entry.last_time:
                continue
            with self._lock:
                if self._watched.get(message_id) is not entry:
                    continue  # done meanwhile: its completion event tells the rest
                entry.last_time = progress.time
                entry.sent += 1
                number = entry.sent
            event = {
                **entry.fields,
                "progress": {
                    "done": progress.done,
                    "total": progress.total,
                    "note": progress.note,
                    "reported_at": iso_time(progress.time * 1000),
                },
            }
            delivery = {
                "kind": PROGRESS_EVENT,
                "event": event,
                "url": entry.url,
                "created": now_ms(),
                "attempt": 1,
                "webhook_id": f"{message_id}.progress.{number}",
            }
            try:
                self.send(delivery)
                sent += 1
            except Exception as error:
                logger.warning("Could not enqueue a progress event of message %s: %s", message_id, error)
        return sent
