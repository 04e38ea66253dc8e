"""One process's connections to the database of a :class:`~dramatiq_ray.SQLBackend`: its engines, the schema
check of its first operation, its writes (retried while the database is unreachable) and queries, and the LISTEN
thread its blocking reads wait on (PostgreSQL).

Nothing connects before the first operation, and nothing crosses a fork: a forked child (a Dramatiq worker
process) builds its own engines, checks the schema again and starts its own listener.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .engine import WRITE_OPTION, Database, first_line, is_transient, unreachable
from .schema import migrate
from .waiting import Listener, Waiters, sleep_until

if TYPE_CHECKING:
    import sqlalchemy as sa

    from .schema import Tables

__all__ = ["ProcessConnections"]

# Records keep the name of SQLBackend's module, the logger users configure.
logger = logging.getLogger("dramatiq_ray.results.sql.backend")

#: The first pause of a retried write, in seconds; it doubles up to a second.
_FIRST_WRITE_PAUSE = 0.05
#: The pauses of a blocking read while the database is unreachable, in seconds: doubling up to the cap.
_FIRST_RETRY, _RETRY_CAP = 0.05, 1.0


class ProcessConnections:
    """The engines, schema state and listener of one backend in the current process.

    Parameters:
      database: The database.
      tables: The backend's tables.
      channel: The channel notified when an outcome is stored (PostgreSQL).
      engine_options: Passed to ``sqlalchemy.create_engine``.
      migrate_at_start: Migrate an older schema at the first operation; ``False`` raises instead.
      name: How logs name the backend.
    """

    def __init__(
        self,
        database: Database,
        tables: Tables,
        channel: str,
        *,
        engine_options: dict[str, Any],
        migrate_at_start: bool,
        name: str,
    ) -> None:
        self.database = database
        self.tables = tables
        self.channel = channel
        self.engine_options = engine_options
        self.migrate_at_start = migrate_at_start
        self.name = name
        self.schema_ready = False
        self.listener: Listener | None = None
        self._lock = threading.Lock()
        self._pid = -1
        self._engine: sa.Engine | None = None
        self._reader: sa.Engine | None = None
        self._writer: sa.Engine | None = None
        self._waiters = Waiters()

    def engines(self) -> tuple[sa.Engine, sa.Engine]:
        """The reader and writer engines of this process (a forked child builds its own)."""
        pid = os.getpid()
        if self._pid != pid:
            with self._lock:
                if self._pid != pid:
                    if self._engine is not None:
                        # Inherited from the parent: its connections are the parent's to close.
                        self._engine.dispose(close=False)
                    if self.database.kind == "postgresql":
                        # Every statement is one round trip: no BEGIN, no COMMIT (migrations use their own).
                        engine = self.database.create_engine({"isolation_level": "AUTOCOMMIT", **self.engine_options})
                        reader = writer = engine
                    else:
                        engine = self.database.create_engine(self.engine_options)
                        reader, writer = engine, engine.execution_options(**{WRITE_OPTION: True})
                    self._engine, self._reader, self._writer = engine, reader, writer
                    self.schema_ready = False
                    self.listener = None
                    self._waiters = Waiters()
                    self._pid = pid
        assert self._reader is not None and self._writer is not None
        return self._reader, self._writer

    def ready(self) -> tuple[sa.Engine, sa.Engine]:
        """The reader and writer engines, with the schema checked (and migrated) once per process."""
        engines = self.engines()
        if not self.schema_ready:
            with self._lock:
                if not self.schema_ready:
                    self.migrate(apply=self.migrate_at_start)
                    self.schema_ready = True
        return engines

    def migrate(self, *, apply: bool) -> tuple[int, int]:
        """Bring the schema to this version's (``apply``) or check it; return the versions before and after."""
        _, writer = self.engines()
        if self.database.kind == "postgresql":
            # In a transaction of its own (DDL is transactional): not on the pool, whose connections autocommit.
            import sqlalchemy as sa

            engine = self.database.create_engine({"poolclass": sa.pool.NullPool})
            try:
                before, after = migrate(engine, self.tables, apply=apply)
            finally:
                engine.dispose()
        else:
            before, after = migrate(writer, self.tables, apply=apply)  # in a BEGIN IMMEDIATE transaction
        if before != after:
            logger.info("Migrated the result tables of %s from schema %d to %d.", self.name, before, after)
        return before, after

    def write(self, statement: Any, values: dict[str, Any], what: str, timeout: int) -> None:
        """Run one write, retrying while the database is unreachable, for up to ``timeout`` milliseconds.

        Raises:
          ResultBackendError: the database stayed unreachable for ``timeout``.
        """
        deadline = time.monotonic() + timeout / 1000
        pause = _FIRST_WRITE_PAUSE
        failures = 0
        while True:
            try:
                _, writer = self.ready()
                with writer.begin() as connection:
                    connection.execute(statement, values)
                return
            except Exception as error:
                if not is_transient(error):
                    raise
                failures += 1
                if time.monotonic() + pause > deadline:
                    raise unreachable(self.database, what, error) from error
                if failures == 1:
                    logger.warning(
                        "Could not %s in %s (%s); retrying for up to %d ms.",
                        what,
                        self.database.describe(),
                        first_line(error),
                        timeout,
                    )
                time.sleep(pause)
                pause = min(pause * 2, 1.0)

    def select(self, statement: Any, what: str) -> list[Mapping[str, Any]]:
        """The rows ``statement`` selects.

        Raises:
          ResultBackendError: the database cannot be reached (``what`` says what could not be done).
        """
        try:
            reader, _ = self.ready()
            with reader.connect() as connection:
                return [dict(row._mapping) for row in connection.execute(statement)]
        except Exception as error:
            if is_transient(error):
                raise unreachable(self.database, what, error) from error
            raise

    def listening(self) -> Waiters:
        """This process's waiters, with the listener thread started (once per process)."""
        reader, _ = self.ready()
        with self._lock:
            if self.listener is None or not self.listener.alive():
                engine = reader
                dialect = engine.dialect

                def connect() -> Any:
                    args, kwargs = dialect.create_connect_args(engine.url)
                    connection = dialect.loaded_dbapi.connect(*args, **{**kwargs, **self.database.connect_args()})
                    connection.autocommit = True
                    return connection

                self.listener = Listener(connect, self.channel, self._waiters, self.database.describe())
                self.listener.start()
            return self._waiters

    def listening_until(self, deadline: float) -> Waiters:
        """This process's waiters once the listener runs, trying again while the database is unreachable (its
        first operation checks the schema) until ``deadline``, a ``time.monotonic()`` value.

        Raises:
          ResultBackendError: the database stayed unreachable until ``deadline``.
        """
        pause = _FIRST_RETRY
        while True:
            try:
                return self.listening()
            except Exception as error:
                if not is_transient(error):
                    raise
                if time.monotonic() >= deadline:
                    raise unreachable(self.database, "read a result", error) from error
                sleep_until(deadline, pause)
                pause = min(pause * 2, _RETRY_CAP)

    def close(self) -> None:
        """Stop the listener and close this process's connections (a later operation opens them again)."""
        with self._lock:
            listener, self.listener = self.listener, None
            engine, self._engine, self._reader, self._writer = self._engine, None, None, None
            self._pid = -1
        if listener is not None:
            listener.stop()
        if engine is not None:
            engine.dispose()
