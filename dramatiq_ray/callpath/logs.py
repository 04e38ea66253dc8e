"""A body's log records, brought back from wherever it ran (a Ray task, a Ray job) to the worker's log output.

A Ray worker process has no logging configured: a body's ``logger.info`` there goes nowhere, and its warnings
reach the worker only as bare ``(name pid=...) line`` stdout lines that Ray deduplicates across the cluster.
So, where the body runs in another process, the body step captures the records it logs at the configured level
(:func:`capture`) into a bounded buffer, for the duration of the body only. They travel back with the outcome
(with the exception too, when the body raises) as plain data: the message already formatted, the exception text
already rendered, nothing of the body's objects. The worker thread then re-emits each one (:func:`emit`)
through the logger of the same name, so the worker's own logging configuration (handlers, formats, per-logger
levels) decides where it goes, as if the body had run in the worker. Each re-emitted record carries the extras
``actor`` and ``message_id`` (and ``remote_pid``) and a prefix naming them; it keeps its original time, logger
name, level, source line, process and thread.

Records come back when the body ends, not while it runs. Returning them, rather than printing them for Ray to
forward, keeps them out of Ray's log deduplication.
"""

from __future__ import annotations

import collections
import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

__all__ = ["BodyLogs", "WithLogs", "attach", "capture", "emit", "emit_attached", "level_of"]

logger = logging.getLogger(__name__)

#: At most this many records of one body come back: the last ones (how many were dropped is said).
MAX_RECORDS = 1000
#: A longer formatted message is cut to this many characters.
MAX_MESSAGE_CHARS = 8192
#: The attribute under which a body's exception carries its records back.
ATTRIBUTE = "__dramatiq_ray_logs__"

# The LogRecord attributes that travel; everything else (args, exc_info objects) is rendered or left behind.
_FIELDS = (
    "name",
    "levelno",
    "levelname",
    "pathname",
    "filename",
    "module",
    "lineno",
    "funcName",
    "created",
    "msecs",
    "process",
    "processName",
    "thread",
    "threadName",
    "stack_info",
)


@dataclass
class BodyLogs:
    """The records one body logged, as plain data (picklable and JSON-encodable), and how many were dropped."""

    records: list[dict[str, Any]] = field(default_factory=list)
    dropped: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"records": self.records, "dropped": self.dropped}

    @classmethod
    def from_dict(cls, data: Any) -> BodyLogs | None:
        if not isinstance(data, dict):
            return None
        return cls(list(data.get("records") or ()), int(data.get("dropped") or 0))


@dataclass(frozen=True)
class WithLogs:
    """A body's return value, with the records it logged."""

    value: Any
    logs: BodyLogs


def level_of(value: int | str) -> int:
    """A logging level from its number or name (``"INFO"``, ``"debug"``).

    Raises:
      ValueError: not a level Python's logging knows.
    """
    if isinstance(value, bool):
        raise ValueError(f"not a logging level: {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        level = logging.getLevelName(value.strip().upper())
        if isinstance(level, int):
            return level
    raise ValueError(f"not a logging level: {value!r} (use a number or a name such as 'INFO')")


class _Capture(logging.Handler):
    def __init__(self, level: int) -> None:
        super().__init__(level)
        self.records: collections.deque[dict[str, Any]] = collections.deque(maxlen=MAX_RECORDS)
        self.dropped = 0
        self._formatter = logging.Formatter()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            data = {name: getattr(record, name, None) for name in _FIELDS}
            message = record.getMessage()
            if len(message) > MAX_MESSAGE_CHARS:
                message = f"{message[:MAX_MESSAGE_CHARS]}... [cut: {len(message)} characters]"
            data["msg"] = message
            exc_text = record.exc_text
            if record.exc_info and not exc_text:
                exc_text = self._formatter.formatException(record.exc_info)
            if exc_text and len(exc_text) > 4 * MAX_MESSAGE_CHARS:
                exc_text = f"[cut: {len(exc_text)} characters] ...{exc_text[-4 * MAX_MESSAGE_CHARS :]}"
            data["exc_text"] = exc_text
            if len(self.records) == self.records.maxlen:
                self.dropped += 1
            self.records.append(data)
        except Exception:
            self.handleError(record)

    def taken(self) -> BodyLogs:
        return BodyLogs(list(self.records), self.dropped)


@contextlib.contextmanager
def capture(level: int) -> Iterator[_Capture]:
    """Capture the records logged at ``level`` or above, in this process, while the block runs (the body).

    The root logger's level is lowered to ``level`` for the block (a Ray worker's is WARNING, which would drop
    ``logger.info`` before any handler sees it) and restored after; a handler on the root logger means Python's
    last-resort handler no longer prints warnings to stderr meanwhile, so nothing comes back twice.
    """
    root = logging.getLogger()
    handler = _Capture(level)
    previous = root.level
    root.addHandler(handler)
    # Setting a level clears every logger's level cache: only when it changes.
    lowered = previous == logging.NOTSET or previous > level
    if lowered:
        root.setLevel(level)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        if lowered:
            root.setLevel(previous)


def attach(error: BaseException, logs: BodyLogs) -> None:
    """Have ``error`` (the body's exception, on its way back) carry ``logs``."""
    with contextlib.suppress(Exception):
        setattr(error, ATTRIBUTE, logs)


def emit_attached(error: BaseException, *, actor_name: str, message_id: str) -> None:
    """Re-emit the records ``error`` carries back (see :func:`attach`) and remove them from it."""
    logs = getattr(error, ATTRIBUTE, None)
    if logs is None:
        return
    with contextlib.suppress(Exception):
        delattr(error, ATTRIBUTE)
    if isinstance(logs, BodyLogs):
        emit(logs, actor_name=actor_name, message_id=message_id)


def emit(logs: BodyLogs | None, *, actor_name: str, message_id: str) -> None:
    """Re-emit a body's records in this thread, each through the logger of its name, with the extras ``actor``,
    ``message_id`` and ``remote_pid`` and a prefix ``[<actor> <message id> on Ray pid <pid>]``. A record is
    handled where that logger is enabled for its level (the worker's logging configuration decides)."""
    if logs is None:
        return
    if logs.dropped:
        logger.warning(
            "%d earlier log records of actor %r (message %s) were dropped: at most %d come back per message.",
            logs.dropped,
            actor_name,
            message_id,
            MAX_RECORDS,
        )
    for data in logs.records:
        try:
            target = logging.getLogger(str(data.get("name") or "root"))
            levelno = int(data.get("levelno") or logging.INFO)
            if not target.isEnabledFor(levelno):
                continue
            pid = data.get("process")
            record = logging.makeLogRecord(
                {
                    **data,
                    "msg": f"[{actor_name} {message_id} on Ray pid {pid}] {data.get('msg', '')}",
                    "args": None,
                    "actor": actor_name,
                    "message_id": message_id,
                    "remote_pid": pid,
                }
            )
            target.handle(record)
        except Exception as error:
            logger.warning("A log record of actor %r could not be re-emitted: %s", actor_name, error)
