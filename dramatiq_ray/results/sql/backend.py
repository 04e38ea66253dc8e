"""SQLBackend: a Dramatiq result backend in SQLite or PostgreSQL, with one row of metadata per message.

Why SQLAlchemy Core 2.x rather than psycopg 3 and the standard library's sqlite3 side by side: one code path
describes the tables, the indexes, the migrations, the upserts (both databases have ``INSERT ... ON CONFLICT DO
UPDATE ... WHERE``, which SQLAlchemy writes from one description) and the queries; it pools connections per
process and turns each driver's errors into one hierarchy, so "the database is unreachable" is recognised the
same way for both. What differs is small and kept in ``engine.py`` (SQLite's pragmas and write lock) and
``waiting.py`` (PostgreSQL's LISTEN/NOTIFY, which uses the psycopg connection directly). The cost: SQLite also
needs the ``sql`` extra (SQLAlchemy), which is pure Python apart from optional speedups.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import re
import socket
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from dramatiq.results import ResultBackend, ResultMissing, ResultTimeout
from dramatiq.results.backend import DEFAULT_TIMEOUT, Missing
from dramatiq.results.result import wrap_exception, wrap_result

from ...errors import ConfigurationError, ResultBackendError
from ..pointers import looks_like_pointer, parse_pointer
from .engine import WRITE_OPTION, Database, is_transient, parse_url
from .lifecycle import EVENTS
from .records import ResultRecord, check_statuses, since_timestamp
from .schema import build_tables, migrate
from .waiting import Listener, Waiters, notify_payload, sleep_until

if TYPE_CHECKING:
    import sqlalchemy as sa
    from dramatiq.encoder import Encoder

    from ..stores.base import BlobStore
    from .gc import CollectReport

__all__ = ["SQLBackend"]

logger = logging.getLogger(__name__)

#: Redacts a message's arguments before they are recorded: ``redact(actor_name, args, kwargs) -> (args, kwargs)``.
Redactor = Callable[[str, Sequence[Any], Mapping[str, Any]], tuple[Sequence[Any], Mapping[str, Any]]]

_PREFIX = re.compile(r"^[a-z_][a-z0-9_]{0,29}$")
_FAILURE_CANARY = "dramatiq.results.Result"
#: Longest error message, traceback and recorded arguments kept, in characters.
_TEXT_LIMIT = 64 * 1024
#: The first pause of a blocking read on SQLite and of a retried write, in seconds.
_FIRST_PAUSE = 0.002


class SQLBackend(ResultBackend):
    """A Dramatiq result backend that keeps results in SQLite or PostgreSQL, one row per message, with the
    message's status, attempts, worker, times, error and (optionally) arguments, queryable with :meth:`query` and
    ``dramatiq-ray results list``.

    ::

        backend = SQLBackend(url="sqlite:////var/lib/dramatiq-ray/results.db")      # one host, several workers
        backend = SQLBackend(url="postgresql://dramatiq@db.internal/results")       # many hosts
        broker.add_middleware(Results(backend=backend, store=S3Store("results")))   # spilled results: a pointer

        backend.query(actor="render", status="failure", since=timedelta(hours=1))

    With ``dramatiq_ray.Results`` a message's row appears when it is enqueued and goes through ``running`` to
    ``success``, ``failure`` or ``skipped``; with Dramatiq's own ``Results`` only outcomes are recorded. Only
    messages whose results are stored (``store_results``) are recorded. Rows expire ``result_ttl`` after their
    last change: expired rows are never read, and ``dramatiq-ray gc`` (or :meth:`collect_expired`) deletes them,
    and the blobs only they pointed to.

    A blocking ``get_result`` on PostgreSQL waits for a notification (one LISTEN connection per backend and
    process wakes the waiting threads); on SQLite it reads again with a capped backoff. Either way it returns or
    times out within a few milliseconds of ``timeout``.

    The tables are created, or migrated to this version's schema, by the first operation of each process (or by
    :meth:`migrate`); processes starting together are safe.

    Parameters:
      url: ``sqlite:///relative.db``, ``sqlite:////absolute/path.db`` or ``postgresql://user:pw@host:5432/db``.
      namespace, encoder, use_namespace_prefix_keys: as for every Dramatiq result backend.
      table_prefix: Prefix of the table and index names (lowercase letters, digits, ``_``; up to 30).
      record_args: Record each message's args and kwargs (as JSON; values JSON cannot encode as their ``repr``).
      redact: Called as ``redact(actor_name, args, kwargs)`` before arguments are recorded; returns the
        ``(args, kwargs)`` to record. When it raises, nothing is recorded for that message.
      record_events: Record enqueued/running/skipped (forwarded by ``dramatiq_ray.Results``). ``False``
        records outcomes only: one write per message instead of three.
      store_timeout: How long storing an outcome retries while the database is unreachable, in milliseconds,
        before ``ResultBackendError`` (``dramatiq_ray.Results`` then runs the message again).
      poll_cap: SQLite: the longest pause between two reads of a blocking ``get_result``, in milliseconds.
      migrate: Migrate an older schema at start (default). ``False`` raises ``SchemaVersionError`` instead.
      engine_options: Passed to ``sqlalchemy.create_engine`` (``pool_size``, ``max_overflow``, ``echo``...).

    Raises:
      ConfigurationError: a bad URL (another database, an in-memory SQLite, a missing directory) or argument.
      MissingDependencyError: SQLAlchemy, or for PostgreSQL psycopg, is not installed (the ``sql`` extra).
    """

    def __init__(
        self,
        *,
        url: str,
        namespace: str = "dramatiq-results",
        encoder: Encoder | None = None,
        use_namespace_prefix_keys: bool = False,
        table_prefix: str = "dramatiq_ray_",
        record_args: bool = False,
        redact: Redactor | None = None,
        record_events: bool = True,
        store_timeout: int = 10_000,
        poll_cap: int = 50,
        migrate: bool = True,
        engine_options: Mapping[str, Any] | None = None,
    ) -> None:
        problems = _check_arguments(table_prefix, record_args, redact, store_timeout, poll_cap)
        if problems:
            raise ConfigurationError(f"SQLBackend: {' '.join(problems)}", problems)
        self.database: Database = parse_url(url)
        super().__init__(namespace=namespace, encoder=encoder, use_namespace_prefix_keys=use_namespace_prefix_keys)
        self.table_prefix = table_prefix
        self.tables = build_tables(table_prefix)
        self.record_args = record_args
        self.redact = redact
        self.record_events = record_events
        self.store_timeout = store_timeout
        self.poll_cap = poll_cap
        self.migrate_at_start = migrate
        self.engine_options = dict(engine_options or {})
        self.channel = f"{table_prefix}results"
        self._lock = threading.Lock()
        self._pid = -1
        self._engine: sa.Engine | None = None
        self._reader: sa.Engine | None = None
        self._writer: sa.Engine | None = None
        self._schema_ready = False
        self._waiters = Waiters()
        self._listener: Listener | None = None
        self._statements: dict[tuple[str, frozenset[str]], Any] = {}
        self._host = socket.gethostname()

    def __repr__(self) -> str:
        return f"SQLBackend(url={self.database.describe()!r}, table_prefix={self.table_prefix!r})"

    # --- connections and schema ------------------------------------------------------------------------------

    def _engines(self) -> tuple[sa.Engine, sa.Engine]:
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
                    self._schema_ready = False
                    self._listener = None
                    self._waiters = Waiters()
                    self._pid = pid
        assert self._reader is not None and self._writer is not None
        return self._reader, self._writer

    def _ready(self) -> tuple[sa.Engine, sa.Engine]:
        engines = self._engines()
        if not self._schema_ready:
            with self._lock:
                if not self._schema_ready:
                    self._migrate(apply=self.migrate_at_start)
                    self._schema_ready = True
        return engines

    def _migrate(self, *, apply: bool) -> tuple[int, int]:
        _, writer = self._engines()
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
            logger.info("Migrated the result tables of %r from schema %d to %d.", self, before, after)
        return before, after

    def migrate(self) -> int:
        """Create the tables or migrate them to this version's schema now; return the schema version.

        Raises:
          SchemaVersionError: the database's schema is newer than this version of dramatiq-ray.
          ResultBackendError: the database cannot be reached.
        """
        try:
            _, after = self._migrate(apply=True)
        except Exception as error:
            if is_transient(error):
                raise self._unreachable("migrate the result tables", error) from error
            raise
        self._schema_ready = True
        return after

    def close(self) -> None:
        """Stop the listener and close this process's connections (a later operation opens them again)."""
        with self._lock:
            listener, self._listener = self._listener, None
            engine, self._engine, self._reader, self._writer = self._engine, None, None, None
            self._pid = -1
        if listener is not None:
            listener.stop()
        if engine is not None:
            engine.dispose()

    def _unreachable(self, what: str, error: BaseException) -> ResultBackendError:
        return ResultBackendError(
            f"Could not {what} in {self.database.describe()} ({type(error).__name__}: {_first_line(error)}). Check "
            "that the database is up and reachable from this host; a message whose outcome could not be stored "
            "is run again by dramatiq_ray.Results."
        )

    # --- storing outcomes ------------------------------------------------------------------------------------

    def store_result(self, message: Any, result: Any, ttl: int) -> None:
        """Store ``result`` (or the pointer a ``SpillingBackend`` gives) as the message's outcome, for ``ttl``
        milliseconds; retried for up to ``store_timeout`` while the database is unreachable.

        Raises:
          ResultBackendError: the database stayed unreachable for ``store_timeout``.
        """
        self._store_outcome(message, self.build_message_key(message), wrap_result(result), ttl, None)  # type: ignore[no-untyped-call]

    def store_exception(self, message: Any, exception: Exception, ttl: int) -> None:
        """Store a failure, with its type, message and traceback (see :meth:`store_result`)."""
        self._store_outcome(message, self.build_message_key(message), wrap_exception(exception), ttl, exception)  # type: ignore[no-untyped-call]

    def _store(self, message_key: str, result: Any, ttl: int) -> None:
        self._store_outcome(None, message_key, result, ttl, None)

    def _store_outcome(self, message: Any, key: str, payload: Any, ttl: int, exception: Exception | None) -> None:
        data = self.encoder.encode(payload)
        now = time.time()
        values: dict[str, Any] = {
            "key": key,
            "result": data,
            "result_size": None,
            "pointer": None,
            "blob_digest": None,
            "error_type": None,
            "error_message": None,
            "traceback": None,
            "finished_at": now,
            "updated_at": now,
            "expires_at": now + ttl / 1000,
        }
        failed = isinstance(payload, dict) and payload.get("__t") == _FAILURE_CANARY
        if failed:
            values["status"] = "failure"
            values["error_type"] = str(payload["exn"].get("type"))[:255]
            values["error_message"] = _clip(str(payload["exn"].get("msg")))
            values["traceback"] = _traceback_of(message, exception)
        else:
            values["status"] = "success"
            values["result_size"] = len(data)
            if looks_like_pointer(payload):
                try:
                    pointer = parse_pointer(payload)
                except Exception:
                    pass
                else:
                    values.update(pointer=pointer.raw, blob_digest=pointer.digest, result_size=pointer.size)
        if message is not None:
            retries = int(message.options.get("retries", 0) or 0)
            values.update(self._identity(message))
            values.update(worker_host=self._host, worker_pid=os.getpid())
            values["attempts"] = max(retries, 1) if failed else retries + 1
            values.update(self._arguments(message))
        parameters = dict(values)
        if self.database.kind == "postgresql":
            parameters["notify_data"] = notify_payload(data)
        self._write(self._outcome_statement(frozenset(values)), parameters, f"store the result of {key}")

    def _identity(self, message: Any) -> dict[str, Any]:
        return {
            "message_id": str(message.message_id)[:64],
            "queue_name": str(message.queue_name)[:255],
            "actor_name": str(message.actor_name)[:255],
        }

    def _write(self, statement: Any, values: dict[str, Any], what: str) -> None:
        """Run one write, retrying while the database is unreachable, for up to ``store_timeout``."""
        deadline = time.monotonic() + self.store_timeout / 1000
        pause = _FIRST_PAUSE * 25
        failures = 0
        while True:
            try:
                _, writer = self._ready()
                with writer.begin() as connection:
                    connection.execute(statement, values)
                return
            except Exception as error:
                if not is_transient(error):
                    raise
                failures += 1
                if time.monotonic() + pause > deadline:
                    raise self._unreachable(what, error) from error
                if failures == 1:
                    logger.warning(
                        "Could not %s in %s (%s); retrying for up to %d ms.",
                        what,
                        self.database.describe(),
                        _first_line(error),
                        self.store_timeout,
                    )
                time.sleep(pause)
                pause = min(pause * 2, 1.0)

    def _upsert(self, names: frozenset[str]) -> Any:
        """``INSERT`` of the columns ``names``, each a bind parameter of its name."""
        import sqlalchemy as sa
        from sqlalchemy.dialects import postgresql, sqlite

        insert = postgresql.insert if self.database.kind == "postgresql" else sqlite.insert
        return insert(self.tables.results).values({name: sa.bindparam(name) for name in sorted(names)})

    def _statement(self, purpose: str, names: frozenset[str], build: Callable[[frozenset[str]], Any]) -> Any:
        """A statement built once per purpose and set of columns: SQLAlchemy then compiles it once too."""
        key = (purpose, names)
        statement = self._statements.get(key)
        if statement is None:
            statement = self._statements[key] = build(names)
        return statement

    def _outcome_statement(self, names: frozenset[str]) -> Any:
        return self._statement("outcome", names, self._build_outcome)

    def _build_outcome(self, values: frozenset[str]) -> Any:
        import sqlalchemy as sa

        table = self.tables.results
        insert = self._upsert(values)
        new = insert.excluded
        update: dict[str, Any] = {
            name: new[name]
            for name in values
            if name not in ("key", "message_id", "queue_name", "actor_name", "attempts", "args", "kwargs")
        }
        for name in ("message_id", "queue_name", "actor_name", "args", "kwargs", "worker_host", "worker_pid"):
            if name in values:
                update[name] = sa.func.coalesce(new[name], table.c[name])
        # A message a middleware skipped (recorded "skipped") stores None: it stays "skipped".
        update["status"] = sa.case(
            (sa.and_(table.c.status == "skipped", new.status == "success"), "skipped"), else_=new.status
        )
        if "attempts" in values:
            # The worker counted the attempt when it started the message ("running"): keep that count.
            update["attempts"] = sa.case((table.c.attempts > 0, table.c.attempts), else_=new.attempts)
        statement = insert.on_conflict_do_update(index_elements=[table.c.key], set_=update)
        if self.database.kind != "postgresql":
            return statement
        # One statement, one round trip: the row is written and waiters are notified when it commits; a small
        # result travels in the notification, so a woken waiter needs no read (see waiting.py).
        stored = statement.returning(table.c.key).cte("stored")
        payload = sa.func.concat(stored.c.key, " ", sa.bindparam("notify_data", type_=sa.String))
        return sa.select(sa.func.pg_notify(self.channel, payload)).select_from(stored)

    # --- lifecycle events ------------------------------------------------------------------------------------

    def record_message_event(self, event: str, message: Any, ttl: int) -> None:
        """Record that ``message`` was enqueued, started running, or was skipped (see
        :class:`~dramatiq_ray.results.sql.lifecycle.MessageEventRecorder`). Best effort: a database error is
        logged at WARNING and the message goes on; its outcome is stored as usual."""
        if not self.record_events or event not in EVENTS:
            return
        try:
            self._record_event(event, message, ttl)
        except Exception as error:
            logger.warning(
                "Could not record that message %s of %r is %s in %s (%s: %s); its outcome is stored as usual.",
                message.message_id,
                message.actor_name,
                event,
                self.database.describe(),
                type(error).__name__,
                _first_line(error),
            )

    def _record_event(self, event: str, message: Any, ttl: int) -> None:
        now = time.time()
        values: dict[str, Any] = {
            "key": self.build_message_key(message),
            **self._identity(message),
            "status": "skipped" if event == "skipped" else event,
            "attempts": 0,
            "updated_at": now,
            "expires_at": now + ttl / 1000,
        }
        if event == "enqueued":
            values["enqueued_at"] = now
            values.update(self._arguments(message))
        elif event == "running":
            values.update(
                started_at=now,
                attempts=int(message.options.get("retries", 0) or 0) + 1,
                worker_host=self._host,
                worker_pid=os.getpid(),
            )
            values.update(self._arguments(message))
        else:
            values["finished_at"] = now
        statement = self._statement(f"event-{event}", frozenset(values), self._build_event)
        _, writer = self._ready()
        with writer.begin() as connection:
            connection.execute(statement, values)

    def _build_event(self, values: frozenset[str]) -> Any:
        import sqlalchemy as sa

        table = self.tables.results
        insert = self._upsert(values)
        update = {name: insert.excluded[name] for name in values if name not in ("key", "args", "kwargs")}
        for name in ("args", "kwargs"):
            if name in values:
                update[name] = sa.func.coalesce(table.c[name], insert.excluded[name])
        if "enqueued_at" in values:
            update.pop("attempts")  # a retry enqueues it again: the attempts counted so far stay
        # Never over an outcome already stored (a message sent again after it finished keeps its result).
        return insert.on_conflict_do_update(index_elements=[table.c.key], set_=update, where=table.c.result.is_(None))

    def _arguments(self, message: Any) -> dict[str, Any]:
        if not self.record_args:
            return {}
        args, kwargs = tuple(message.args), dict(message.kwargs)
        if self.redact is not None:
            try:
                args, kwargs = self.redact(message.actor_name, args, kwargs)  # type: ignore[assignment]
            except Exception as error:
                logger.warning(
                    "The redact hook failed for a message of %r (%s: %s): its arguments are not recorded.",
                    message.actor_name,
                    type(error).__name__,
                    error,
                )
                return {}
        recorded = {"args": json.dumps(list(args), default=repr), "kwargs": json.dumps(dict(kwargs), default=repr)}
        return {name: text if len(text) <= _TEXT_LIMIT else None for name, text in recorded.items()}

    # --- reading ---------------------------------------------------------------------------------------------

    def _read(self, key: str) -> bytes | None:
        statement = self._statement("read", frozenset(), self._build_read)
        reader, _ = self._ready()
        with reader.connect() as connection:
            found = connection.execute(statement, {"key": key, "now": time.time()}).scalar()
        return None if found is None else bytes(found)

    def _build_read(self, _: frozenset[str]) -> Any:
        import sqlalchemy as sa

        table = self.tables.results
        return sa.select(table.c.result).where(
            table.c.key == sa.bindparam("key"), table.c.result.is_not(None), table.c.expires_at > sa.bindparam("now")
        )

    def _get(self, message_key: str) -> Any:
        try:
            data = self._read(message_key)
        except Exception as error:
            if is_transient(error):
                raise self._unreachable("read a result", error) from error
            raise
        return Missing if data is None else self.encoder.decode(data)

    def get_result(self, message: Any, *, block: bool = False, timeout: int | None = None) -> Any:
        """Get a message's result; with ``block``, wait up to ``timeout`` milliseconds (default 10 s) for it.

        Raises:
          ResultMissing: ``block`` is false and the outcome is not stored (yet), or it expired.
          ResultTimeout: waiting timed out.
          ResultFailure: the message failed.
          ResultBackendError: the database could not be reached (when blocking: at the last attempt).
        """
        key = self.build_message_key(message)
        if not block:
            stored = self._get(key)
            if stored is Missing:
                raise ResultMissing(message)  # type: ignore[no-untyped-call]
            return self.unwrap_result(stored)  # type: ignore[no-untyped-call]
        deadline = time.monotonic() + (DEFAULT_TIMEOUT if timeout is None else timeout) / 1000
        if self.database.kind == "postgresql":
            data = self._wait_notified(key, deadline)
        else:
            data = self._wait_polling(key, deadline)
        if data is None:
            raise ResultTimeout(message)  # type: ignore[no-untyped-call]
        return self.unwrap_result(self.encoder.decode(data))  # type: ignore[no-untyped-call]

    def _read_or_error(self, key: str) -> tuple[bytes | None, BaseException | None]:
        try:
            return self._read(key), None
        except Exception as error:
            if not is_transient(error):
                raise
            return None, error

    def _wait_polling(self, key: str, deadline: float) -> bytes | None:
        pause = _FIRST_PAUSE
        while True:
            data, error = self._read_or_error(key)
            if data is not None:
                return data
            if time.monotonic() >= deadline:
                if error is not None:
                    raise self._unreachable("read a result", error) from error
                return None
            sleep_until(deadline, pause)
            pause = min(pause * 2, self.poll_cap / 1000)

    def _wait_notified(self, key: str, deadline: float) -> bytes | None:
        waiters = self._listening()
        waiter = waiters.register(key)
        event = waiter.event
        pause = 0.05
        try:
            while True:
                event.clear()
                if waiter.data is not None:
                    return waiter.data
                data, error = self._read_or_error(key)
                if data is not None:
                    return data
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    if error is not None:
                        raise self._unreachable("read a result", error) from error
                    return None
                if error is not None:
                    # The listener wakes everyone when it reconnects; read again anyway after a pause.
                    event.wait(min(remaining, pause))
                    pause = min(pause * 2, 1.0)
                else:
                    event.wait(remaining)
        finally:
            waiters.unregister(key, waiter)

    def _listening(self) -> Waiters:
        """This process's waiters, with the listener thread started (once per process)."""
        reader, _ = self._ready()
        with self._lock:
            if self._listener is None or not self._listener.alive():
                engine = reader
                dialect = engine.dialect

                def connect() -> Any:
                    args, kwargs = dialect.create_connect_args(engine.url)
                    connection = dialect.loaded_dbapi.connect(*args, **{**kwargs, **self.database.connect_args()})
                    connection.autocommit = True
                    return connection

                self._listener = Listener(connect, self.channel, self._waiters, self.database.describe())
                self._listener.start()
            return self._waiters

    # --- queries ---------------------------------------------------------------------------------------------

    def query(
        self,
        *,
        actor: str | None = None,
        status: str | Iterable[str] | None = None,
        since: datetime.datetime | datetime.timedelta | None = None,
        limit: int = 100,
    ) -> list[ResultRecord]:
        """The messages recorded, newest change first, that match every filter given.

        Parameters:
          actor: Only this actor's messages.
          status: Only these statuses (one, or several): ``enqueued``, ``running``, ``success``, ``failure``,
            ``skipped``.
          since: Only messages whose record changed at or after this time: a ``datetime`` (naive: UTC), or a
            ``timedelta`` meaning that long ago.
          limit: At most this many records (1 to 10,000).

        Raises:
          ConfigurationError: an unknown status, a bad ``since`` or ``limit``.
          ResultBackendError: the database cannot be reached.
        """
        import sqlalchemy as sa

        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 10_000:
            raise ConfigurationError(f"limit must be an integer from 1 to 10000, got {limit!r}.")
        statuses = check_statuses(status)
        now = time.time()
        after = since_timestamp(since, now)
        table = self.tables.results
        statement = sa.select(table).where(table.c.expires_at > now)
        if actor is not None:
            statement = statement.where(table.c.actor_name == actor)
        if statuses:
            statement = statement.where(table.c.status.in_(statuses))
        if after is not None:
            statement = statement.where(table.c.updated_at >= after)
        statement = statement.order_by(table.c.updated_at.desc()).limit(limit)
        return [ResultRecord.from_row(row) for row in self._select(statement, "query the results")]

    def record(self, message: Any) -> ResultRecord | None:
        """The record of ``message`` (a ``Message``, or anything with its ids), or ``None`` when there is none or
        it expired.

        Raises:
          ResultBackendError: the database cannot be reached.
        """
        import sqlalchemy as sa

        table = self.tables.results
        statement = sa.select(table).where(
            table.c.key == self.build_message_key(message), table.c.expires_at > time.time()
        )
        rows = self._select(statement, "read a record")
        return ResultRecord.from_row(rows[0]) if rows else None

    def _select(self, statement: Any, what: str) -> list[Mapping[str, Any]]:
        try:
            reader, _ = self._ready()
            with reader.connect() as connection:
                return [dict(row._mapping) for row in connection.execute(statement)]
        except Exception as error:
            if is_transient(error):
                raise self._unreachable(what, error) from error
            raise

    # --- expiry ----------------------------------------------------------------------------------------------

    def collect_expired(
        self,
        *,
        store: BlobStore | None = None,
        older_than: float | datetime.timedelta = 86_400,
        batch_size: int = 1000,
        dry_run: bool = False,
        now: float | None = None,
    ) -> CollectReport:
        """Delete expired rows in batches of ``batch_size``, and from ``store`` the blobs that only they pointed
        to and that were not written or referenced again for ``older_than`` (seconds or a ``timedelta``, as in
        :func:`~dramatiq_ray.gc_blobs`: a pipeline's next message may still carry a pointer after its row
        expired). See :func:`dramatiq_ray.results.sql.gc.collect_expired`.

        Raises:
          ConfigurationError: a bad ``batch_size`` or ``older_than``.
          ResultBackendError: the database cannot be reached.
        """
        from .gc import collect_expired

        return collect_expired(
            self, store=store, older_than=older_than, batch_size=batch_size, dry_run=dry_run, now=now
        )

    def _connections(self) -> tuple[sa.Engine, sa.Engine]:
        """The reader and writer engines, with the schema ready (for ``gc.py``)."""
        return self._ready()


def _check_arguments(
    table_prefix: object, record_args: object, redact: object, store_timeout: object, poll_cap: object
) -> list[str]:
    problems = []
    if not isinstance(table_prefix, str) or not _PREFIX.match(table_prefix):
        problems.append(
            f"table_prefix must be 1 to 30 lowercase letters, digits or underscores, starting with a letter or "
            f"underscore, got {table_prefix!r}."
        )
    if not isinstance(record_args, bool):
        problems.append(f"record_args must be True or False, got {record_args!r}.")
    if redact is not None and not callable(redact):
        problems.append(
            f"redact must be a function redact(actor_name, args, kwargs) -> (args, kwargs), got {redact!r}."
        )
    if redact is not None and record_args is False:
        problems.append("redact is only called when arguments are recorded: pass record_args=True too.")
    for name, value, least in (("store_timeout", store_timeout, 0), ("poll_cap", poll_cap, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            problems.append(f"{name} must be an integer number of milliseconds >= {least}, got {value!r}.")
    return problems


def _first_line(error: BaseException) -> str:
    text = str(getattr(error, "orig", None) or error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _clip(text: str) -> str:
    return text if len(text) <= _TEXT_LIMIT else text[: _TEXT_LIMIT - 20] + "\n... (truncated)"


def _traceback_of(message: Any, exception: Exception | None) -> str | None:
    # The exception's own traceback is this failure's; Retries' "traceback" option may be an earlier attempt's
    # when this one failed at once (denylist, throws).
    if exception is not None and exception.__traceback__ is not None:
        return _clip("".join(traceback.format_exception(exception)))
    text = message.options.get("traceback") if message is not None else None
    return _clip(text) if isinstance(text, str) else None
