"""Cancel marks and progress: where every worker, Ray task and Ray job sees them, and the handle a body uses.

A :class:`Channel` is the place marks and progress live (the result backend's Redis, see :class:`RedisChannel`,
or an ``SQLBackend``'s database). It carries only its configuration, never a connection or credentials, so it
travels with a message's call to wherever the body runs, as the spill plan does. :class:`Steering` is one
message's handle on it: runners ask it, between their wait slices, whether the message was cancelled
(throttled), and the body reports progress through it (:func:`report_progress`, throttled, the last value
always written when the body ends).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Protocol

from .. import metrics
from ..errors import ConfigurationError, MessageCancelledError

__all__ = [
    "CANCEL_CHECK_EVERY",
    "MARK_TTL",
    "PROGRESS_EVERY",
    "Channel",
    "Progress",
    "RedisChannel",
    "Steering",
    "report_progress",
]

logger = logging.getLogger(__name__)

#: How long cancel marks, message states and progress live, in milliseconds (7 days: Dramatiq's longest retry
#: backoff, so a mark outlives a delayed or retried message's wait).
MARK_TTL = 7 * 24 * 3600 * 1000
#: At most one progress write per message per this many seconds (the last value is always written at the end).
PROGRESS_EVERY = 0.5
#: At most one look at a running message's cancel mark per this many seconds.
CANCEL_CHECK_EVERY = 1.0
#: The environment variable a Redis password is read from where a body runs (it never travels with the call).
REDIS_PASSWORD_ENV = "DRAMATIQ_RAY_REDIS_PASSWORD"

#: A message's states, as recorded by ``dramatiq_ray.Results``: sent (or put back), taken by a worker, done.
QUEUED, RUNNING, FINISHED = "queued", "running", "finished"


@dataclass(frozen=True)
class Progress:
    """The latest progress a message's body reported.

    Attributes:
      done: how much is done (any unit the body chooses).
      total: how much there is in all, or ``None`` when unknown.
      note: a short free text, or ``None``.
      time: when it was reported, in seconds since the epoch.
    """

    done: float
    total: float | None
    note: str | None
    time: float

    def to_json(self) -> str:
        return json.dumps({"done": self.done, "total": self.total, "note": self.note, "time": self.time})

    @classmethod
    def from_json(cls, raw: str | bytes) -> Progress:
        data = json.loads(raw)
        return cls(data["done"], data.get("total"), data.get("note"), float(data["time"]))


class Channel(Protocol):
    """Where cancel marks, message states and progress live, seen by every worker, Ray task and Ray job.

    Implementations keep only configuration (they are pickled with the call) and never raise from
    :meth:`write_progress` (progress is best effort).
    """

    def mark_cancelled(self, message_id: str) -> None: ...

    def is_cancelled(self, message_id: str) -> bool: ...

    def set_state(self, message_id: str, state: str) -> None: ...

    def start(self, message_id: str) -> bool:
        """Record that ``message_id`` runs; return whether it was cancelled (one round trip)."""
        ...

    def state(self, message_id: str) -> str | None: ...

    def write_progress(self, message_id: str, progress: Progress) -> None: ...

    def read_progress(self, message_id: str) -> Progress | None: ...

    def describe(self) -> str: ...


class RedisChannel:
    """Marks and progress in Redis, under ``<namespace>:cancel:<id>``, ``<namespace>:state:<id>`` and
    ``<namespace>:progress:<id>``, each with a time-to-live of ``ttl`` milliseconds.

    Built from the result backend's client (:meth:`from_client`): it keeps that client's connection settings,
    without the password, which is read from ``DRAMATIQ_RAY_REDIS_PASSWORD`` where the call travels to (a Ray task
    or job) when Redis needs one.
    """

    def __init__(
        self,
        *,
        connection_kwargs: dict[str, Any],
        connection_class: Any = None,
        namespace: str = "dramatiq-results",
        ttl: int = MARK_TTL,
    ) -> None:
        self.connection_kwargs = dict(connection_kwargs)
        self.connection_class = connection_class
        self.namespace = namespace
        self.ttl = ttl
        self._client: Any = None
        self._pid = 0
        self._lock = threading.Lock()

    @classmethod
    def from_client(cls, client: Any, *, namespace: str = "dramatiq-results", ttl: int = MARK_TTL) -> RedisChannel:
        pool = client.connection_pool
        channel = cls(
            connection_kwargs=pool.connection_kwargs,
            connection_class=pool.connection_class,
            namespace=namespace,
            ttl=ttl,
        )
        channel._client, channel._pid = client, os.getpid()
        return channel

    def __getstate__(self) -> dict[str, Any]:
        # Plain settings only: the client's helpers (locks, handlers) stay behind, and so does the password.
        kwargs = {
            key: value
            for key, value in self.connection_kwargs.items()
            if isinstance(value, str | int | float | bool | None) and key != "password" and not key.startswith("orig_")
        }
        return {
            "connection_kwargs": kwargs,
            "connection_class": self.connection_class,
            "namespace": self.namespace,
            "ttl": self.ttl,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)  # type: ignore[misc]

    def describe(self) -> str:
        kwargs = self.connection_kwargs
        where = kwargs.get("path") or f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"
        return f"Redis at {where} (db {kwargs.get('db', 0)})"

    def client(self) -> Any:
        if self._client is not None and self._pid == os.getpid():
            return self._client
        with self._lock:
            if self._client is None or self._pid != os.getpid():
                import redis

                kwargs = dict(self.connection_kwargs)
                if "password" not in kwargs and os.environ.get(REDIS_PASSWORD_ENV):
                    kwargs["password"] = os.environ[REDIS_PASSWORD_ENV]
                if self.connection_class is not None:
                    kwargs["connection_class"] = self.connection_class
                self._client = redis.Redis(connection_pool=redis.ConnectionPool(**kwargs))
                self._pid = os.getpid()
        return self._client

    def _key(self, kind: str, message_id: str) -> str:
        return f"{self.namespace}:{kind}:{message_id}"

    def mark_cancelled(self, message_id: str) -> None:
        self.client().set(self._key("cancel", message_id), b"1", px=self.ttl)

    def is_cancelled(self, message_id: str) -> bool:
        return bool(self.client().exists(self._key("cancel", message_id)))

    def set_state(self, message_id: str, state: str) -> None:
        self.client().set(self._key("state", message_id), state.encode(), px=self.ttl)

    def start(self, message_id: str) -> bool:
        pipe = self.client().pipeline(transaction=False)
        pipe.set(self._key("state", message_id), RUNNING.encode(), px=self.ttl)
        pipe.exists(self._key("cancel", message_id))
        return bool(pipe.execute()[1])

    def state(self, message_id: str) -> str | None:
        raw = self.client().get(self._key("state", message_id))
        return raw.decode() if raw is not None else None

    def write_progress(self, message_id: str, progress: Progress) -> None:
        try:
            self.client().set(self._key("progress", message_id), progress.to_json().encode(), px=self.ttl)
        except Exception as error:
            logger.warning("Could not write the progress of message %s to %s: %s", message_id, self.describe(), error)

    def read_progress(self, message_id: str) -> Progress | None:
        raw = self.client().get(self._key("progress", message_id))
        return Progress.from_json(raw) if raw is not None else None


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
