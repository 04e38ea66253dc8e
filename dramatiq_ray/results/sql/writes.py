"""The writes of :class:`~dramatiq_ray.SQLBackend`: a message's outcome (retried while the database is
unreachable) and its lifecycle events (best effort). What goes in the row is ``rows.py``; the SQL,
``statements.py``; the connections and retries, ``connections.py``.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .engine import first_line
from .lifecycle import EVENTS
from .rows import event_values, outcome_values
from .waiting import notify_payload

if TYPE_CHECKING:
    from .config import Redactor
    from .connections import ProcessConnections
    from .statements import Statements

__all__ = ["RowWriter"]

# Records keep the name of SQLBackend's module, the logger users configure.
logger = logging.getLogger("dramatiq_ray.results.sql.backend")


class RowWriter:
    """Writes one backend's rows in the current process.

    Parameters:
      process: The backend's connections.
      statements: The backend's statements.
      key_of: The backend's ``build_message_key``: a message's key.
      record_args: Record each message's args and kwargs.
      redact: Called before arguments are recorded (see ``SQLBackend``).
      record_events: Record lifecycle events; ``False`` records outcomes only.
      store_timeout: How long an outcome's write retries while the database is unreachable, in milliseconds.
    """

    def __init__(
        self,
        process: ProcessConnections,
        statements: Statements,
        key_of: Callable[[Any], str],
        *,
        record_args: bool,
        redact: Redactor | None,
        record_events: bool,
        store_timeout: int,
    ) -> None:
        self.process = process
        self.statements = statements
        self.key_of = key_of
        self.record_args = record_args
        self.redact = redact
        self.record_events = record_events
        self.store_timeout = store_timeout
        self.host = socket.gethostname()

    def outcome(self, message: Any, key: str, payload: Any, data: bytes, ttl: int, exception: Exception | None) -> None:
        """Write ``message``'s outcome (``payload``, encoded as ``data``) under ``key``, for ``ttl`` milliseconds.

        Raises:
          ResultBackendError: the database stayed unreachable for ``store_timeout``.
        """
        values = outcome_values(
            message,
            key,
            payload,
            data,
            ttl,
            exception,
            host=self.host,
            record_args=self.record_args,
            redact=self.redact,
        )
        parameters = dict(values)
        if self.process.database.kind == "postgresql":
            parameters["notify_data"] = notify_payload(data)
        statement = self.statements.outcome(frozenset(values))
        self.process.write(statement, parameters, f"store the result of {key}", self.store_timeout)

    def event(self, event: str, message: Any, ttl: int) -> None:
        """Record that ``message`` was enqueued, started running, or was skipped. Best effort: a database error is
        logged at WARNING and the message goes on."""
        if not self.record_events or event not in EVENTS:
            return
        try:
            self._event(event, message, ttl)
        except Exception as error:
            logger.warning(
                "Could not record that message %s of %r is %s in %s (%s: %s); its outcome is stored as usual.",
                message.message_id,
                message.actor_name,
                event,
                self.process.database.describe(),
                type(error).__name__,
                first_line(error),
            )

    def _event(self, event: str, message: Any, ttl: int) -> None:
        key = self.key_of(message)
        values = event_values(
            event, message, key, ttl, host=self.host, record_args=self.record_args, redact=self.redact
        )
        statement = self.statements.event(event, frozenset(values))
        _, writer = self.process.ready()
        with writer.begin() as connection:
            connection.execute(statement, values)
