"""What :meth:`SQLBackend.query <dramatiq_ray.SQLBackend.query>` returns: one typed record per message."""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from ...errors import ConfigurationError

__all__ = ["FINISHED", "STATUSES", "ResultRecord", "check_statuses", "since_timestamp"]

#: Every status a message can have, in the order a message goes through them.
STATUSES = ("enqueued", "running", "success", "failure", "skipped", "cancelled")
#: The statuses of a message whose outcome is known.
FINISHED = ("success", "failure", "skipped", "cancelled")


def _when(timestamp: float | None) -> datetime.datetime | None:
    return None if timestamp is None else datetime.datetime.fromtimestamp(timestamp, datetime.UTC)


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


@dataclass(frozen=True)
class ResultRecord:
    """One message as the :class:`~dramatiq_ray.SQLBackend` recorded it. Times are timezone-aware UTC datetimes.

    Attributes:
      message_id: The Dramatiq message id (``None`` for a value stored with only a key, through ``_store``).
      actor_name: The actor's name.
      status: ``enqueued``, ``running``, ``success``, ``failure``, ``skipped`` or ``cancelled``.
      attempts: How many times a worker started it (1 for the first run); 0 when no worker has yet.
      enqueued_at: When it was last enqueued (a retry enqueues it again).
      finished_at: When its outcome was stored, or ``None``.
      error: ``"Type: message"`` of a failure, else ``None``.
      queue_name: The queue it was sent to.
      started_at: When a worker last started it.
      error_type, error_message: The failure's exception type name and message.
      traceback: The failure's traceback text, when Dramatiq had one.
      worker_host, worker_pid: The host name and process id of the worker that last ran it.
      result_size: The encoded size of the result in bytes (of the blob, when spilled).
      pointer: The pointer of a result spilled to a blob store, else ``None``.
      args, kwargs: The message's arguments, as recorded with ``record_args=True`` (after redaction), else ``None``.
      expires_at: When the row expires (``result_ttl`` after its last change).
    """

    message_id: str | None
    actor_name: str | None
    status: str
    attempts: int
    enqueued_at: datetime.datetime | None
    finished_at: datetime.datetime | None
    error: str | None
    queue_name: str | None = None
    started_at: datetime.datetime | None = None
    error_type: str | None = None
    error_message: str | None = None
    traceback: str | None = None
    worker_host: str | None = None
    worker_pid: int | None = None
    result_size: int | None = None
    pointer: str | None = None
    args: list[Any] | None = None
    kwargs: dict[str, Any] | None = None
    expires_at: datetime.datetime | None = None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> ResultRecord:
        """A record from a row of the results table."""
        error_type = row["error_type"]
        return cls(
            message_id=row["message_id"],
            actor_name=row["actor_name"],
            status=row["status"],
            attempts=int(row["attempts"] or 0),
            enqueued_at=_when(row["enqueued_at"]),
            finished_at=_when(row["finished_at"]),
            error=f"{error_type}: {row['error_message']}" if error_type else None,
            queue_name=row["queue_name"],
            started_at=_when(row["started_at"]),
            error_type=error_type,
            error_message=row["error_message"],
            traceback=row["traceback"],
            worker_host=row["worker_host"],
            worker_pid=row["worker_pid"],
            result_size=row["result_size"],
            pointer=row["pointer"],
            args=_loads(row["args"]),
            kwargs=_loads(row["kwargs"]),
            expires_at=_when(row["expires_at"]),
        )

    def as_json(self) -> dict[str, Any]:
        """The record as JSON-ready values (times as ISO 8601 strings)."""
        data = asdict(self)
        for name, value in data.items():
            if isinstance(value, datetime.datetime):
                data[name] = value.isoformat()
        return data


def check_statuses(status: str | Iterable[str] | None) -> tuple[str, ...]:
    """``status`` as a tuple of valid statuses (empty: any).

    Raises:
      ConfigurationError: an unknown status.
    """
    if status is None:
        return ()
    wanted = (status,) if isinstance(status, str) else tuple(status)
    unknown = [value for value in wanted if value not in STATUSES]
    if unknown or not all(isinstance(value, str) for value in wanted):
        raise ConfigurationError(f"Unknown status {unknown or wanted!r}: choose among {', '.join(STATUSES)}.")
    return wanted


def since_timestamp(since: datetime.datetime | datetime.timedelta | None, now: float) -> float | None:
    """The POSIX timestamp ``since`` stands for: a ``timedelta`` is that long before ``now``; a naive
    ``datetime`` is taken as UTC.

    Raises:
      ConfigurationError: ``since`` is another type, or a negative ``timedelta``.
    """
    if since is None:
        return None
    if isinstance(since, datetime.timedelta):
        if since < datetime.timedelta(0):
            raise ConfigurationError(f"since must be a positive timedelta (how long ago), got {since!r}.")
        return now - since.total_seconds()
    if isinstance(since, datetime.datetime):
        aware = since if since.tzinfo is not None else since.replace(tzinfo=datetime.UTC)
        return aware.timestamp()
    raise ConfigurationError(
        f"since must be a datetime.timedelta (how long ago) or a datetime.datetime, got {type(since).__name__} "
        f"{since!r}."
    )
