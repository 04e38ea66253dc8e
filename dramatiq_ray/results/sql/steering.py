"""Cancel marks, message states and progress in the database of an ``SQLBackend``: one row per message in the
table ``<table_prefix>steering``, created on first use (beside the versioned result tables, which it does not
touch), each row ignored once ``expires_at`` has passed, and deleted by a later write of the same process: at
most one ``DELETE`` of the expired rows per table per ``sweep_every`` milliseconds in each process (the first write
of a process sweeps).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

from ...callpath.channel import MARK_TTL, RUNNING, Progress
from .engine import Database

__all__ = ["SQL_PASSWORD_ENV", "SWEEP_EVERY", "SQLChannel"]

logger = logging.getLogger(__name__)

#: The environment variable a database password is read from where a body runs (it never travels with the call).
SQL_PASSWORD_ENV = "DRAMATIQ_RAY_SQL_PASSWORD"
#: The default cadence of deleting expired rows, in milliseconds: at most once per table per process per this.
SWEEP_EVERY = 10 * 60 * 1000

# When this process last deleted the expired rows of a table, by (database, table): a channel is unpickled afresh
# for each call that travels to Ray, so the cadence is kept per process, not per channel.
_last_sweeps: dict[tuple[str, str], float] = {}
_sweeps_lock = threading.Lock()


class SQLChannel:
    """Marks and progress in the SQL database of an ``SQLBackend``, kept ``ttl`` milliseconds after each write;
    expired rows are deleted by a write at most once every ``sweep_every`` milliseconds per process.

    Pickled with the call without the URL's password, which is read from ``DRAMATIQ_RAY_SQL_PASSWORD`` where the
    body runs (a Ray task or job), when the database needs one.
    """

    def __init__(
        self, database: Database, *, table_prefix: str, ttl: int = MARK_TTL, sweep_every: int = SWEEP_EVERY
    ) -> None:
        self.database = database
        self.table_prefix = table_prefix
        self.ttl = ttl
        self.sweep_every = sweep_every
        self._engine: Any = None
        self._table: Any = None
        self._pid = 0
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        return {
            "url": self.database.url.set(password=None).render_as_string(hide_password=False),
            "kind": self.database.kind,
            "table_prefix": self.table_prefix,
            "ttl": self.ttl,
            "sweep_every": self.sweep_every,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        import sqlalchemy as sa

        url = sa.make_url(state["url"])
        if url.password is None and os.environ.get(SQL_PASSWORD_ENV):
            url = url.set(password=os.environ[SQL_PASSWORD_ENV])
        self.__init__(  # type: ignore[misc]
            Database(url=url, kind=state["kind"]),
            table_prefix=state["table_prefix"],
            ttl=state["ttl"],
            sweep_every=state.get("sweep_every", SWEEP_EVERY),
        )

    def describe(self) -> str:
        return f"the {self.table_prefix}steering table of {self.database.describe()}"

    def _ready(self) -> tuple[Any, Any]:
        if self._engine is not None and self._pid == os.getpid():
            return self._engine, self._table
        with self._lock:
            if self._engine is None or self._pid != os.getpid():
                import sqlalchemy as sa

                metadata = sa.MetaData()
                table = sa.Table(
                    f"{self.table_prefix}steering",
                    metadata,
                    sa.Column("message_id", sa.String(255), primary_key=True),
                    sa.Column("state", sa.String(16), nullable=True),
                    sa.Column("cancelled", sa.Boolean, nullable=False, default=False),
                    sa.Column("progress", sa.Text, nullable=True),
                    sa.Column("expires_at", sa.Float, nullable=False),
                    sa.Index(f"{self.table_prefix}steering_expires_at", "expires_at"),
                )
                engine = self.database.create_engine({})
                try:
                    metadata.create_all(engine, checkfirst=True)
                except Exception:
                    # Another process created it at the same moment: it is there now.
                    metadata.create_all(engine, checkfirst=True)
                self._engine, self._table, self._pid = engine, table, os.getpid()
        return self._engine, self._table

    def close(self) -> None:
        """Close this process's pooled connections (a later operation opens them again)."""
        engine = self._engine
        if engine is not None and self._pid == os.getpid():
            engine.dispose()

    def _write(self, message_id: str, **values: Any) -> None:
        import sqlalchemy as sa

        engine, table = self._ready()
        now = time.time()
        values["expires_at"] = now + self.ttl / 1000
        for _ in range(2):
            with engine.begin() as connection:
                updated = connection.execute(
                    sa.update(table).where(table.c.message_id == message_id).values(**values)
                ).rowcount
                if updated:
                    break
                try:
                    with connection.begin_nested():
                        connection.execute(sa.insert(table).values(message_id=message_id, **values))
                    break
                except sa.exc.IntegrityError:
                    continue  # inserted by another process meanwhile: update it
        if self._sweep_due():
            with engine.begin() as connection:
                deleted = connection.execute(sa.delete(table).where(table.c.expires_at < now)).rowcount
            logger.debug("Deleted %d expired row(s) of %s.", deleted, self.describe())

    def _sweep_due(self) -> bool:
        """Whether this write deletes the expired rows (and, if so, the next one within ``sweep_every`` will not)."""
        key = (self.database.describe(), self.table_prefix)
        now = time.monotonic()
        with _sweeps_lock:
            last = _last_sweeps.get(key)
            if last is not None and now - last < self.sweep_every / 1000:
                return False
            _last_sweeps[key] = now
            return True

    def _read(self, message_id: str) -> Any:
        import sqlalchemy as sa

        engine, table = self._ready()
        with engine.connect() as connection:
            return connection.execute(
                sa.select(table).where(table.c.message_id == message_id, table.c.expires_at > time.time())
            ).first()

    def mark_cancelled(self, message_id: str) -> None:
        self._write(message_id, cancelled=True)

    def is_cancelled(self, message_id: str) -> bool:
        row = self._read(message_id)
        return bool(row is not None and row.cancelled)

    def set_state(self, message_id: str, state: str) -> None:
        self._write(message_id, state=state)

    def start(self, message_id: str) -> bool:
        self._write(message_id, state=RUNNING)
        return self.is_cancelled(message_id)

    def state(self, message_id: str) -> str | None:
        row = self._read(message_id)
        return None if row is None else row.state

    def write_progress(self, message_id: str, progress: Progress) -> None:
        try:
            self._write(message_id, progress=progress.to_json())
        except Exception as error:
            logger.warning("Could not write the progress of message %s to %s: %s", message_id, self.describe(), error)

    def read_progress(self, message_id: str) -> Progress | None:
        row = self._read(message_id)
        return None if row is None or row.progress is None else Progress.from_json(row.progress)
