"""Where cancel marks, message states and progress live: the :class:`Channel` protocol, the :class:`Progress` a
body reports, and how long they all live.

A channel is the result backend's Redis (:class:`~dramatiq_ray.callpath.redis_channel.RedisChannel`) or an
``SQLBackend``'s database (:class:`~dramatiq_ray.results.sql.steering.SQLChannel`). It carries only its
configuration, never a connection or credentials, so it travels with a message's call to wherever the body runs,
as the spill plan does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Protocol

__all__ = ["FINISHED", "MARK_TTL", "QUEUED", "RUNNING", "Channel", "Progress"]

#: How long cancel marks, message states and progress live, in milliseconds (7 days: Dramatiq's longest retry
#: backoff, so a mark outlives a delayed or retried message's wait).
MARK_TTL = 7 * 24 * 3600 * 1000

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
