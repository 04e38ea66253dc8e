"""SQLBackend: a Dramatiq result backend in SQLite or PostgreSQL, with one row of metadata per message (why
SQLAlchemy Core: see the package's docstring)."""

from __future__ import annotations

import datetime
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from dramatiq.results import ResultBackend, ResultMissing, ResultTimeout
from dramatiq.results.backend import DEFAULT_TIMEOUT, Missing
from dramatiq.results.result import wrap_exception, wrap_result

from ...errors import ConfigurationError, ResultBackendError
from .config import Redactor, check_arguments
from .connections import ProcessConnections
from .engine import Database, is_transient, parse_url, unreachable
from .records import ResultRecord, check_statuses, since_timestamp
from .schema import build_tables
from .statements import Statements, select_record, select_records
from .waiting import Listener, Waiters, poll, wait_notified
from .writes import RowWriter

if TYPE_CHECKING:
    import sqlalchemy as sa
    from dramatiq.encoder import Encoder

    from ...payloads.stores.base import BlobStore
    from .gc import CollectReport

__all__ = ["SQLBackend"]


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
        before ``ResultBackendError`` (with ``dramatiq_ray.Results`` the attempt then fails, and the
        retry policy runs the message again).
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
        problems = check_arguments(table_prefix, record_args, redact, store_timeout, poll_cap)
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
        self._process = ProcessConnections(
            self.database,
            self.tables,
            self.channel,
            engine_options=self.engine_options,
            migrate_at_start=migrate,
            name=repr(self),
        )
        self._statements = Statements(self.tables, self.database.kind, self.channel)
        self._writes = RowWriter(
            self._process,
            self._statements,
            self.build_message_key,
            record_args=record_args,
            redact=redact,
            record_events=record_events,
            store_timeout=store_timeout,
        )

    def __repr__(self) -> str:
        return f"SQLBackend(url={self.database.describe()!r}, table_prefix={self.table_prefix!r})"

    # --- connections and schema ------------------------------------------------------------------------------

    def migrate(self) -> int:
        """Create the tables or migrate them to this version's schema now; return the schema version.

        Raises:
          SchemaVersionError: the database's schema is newer than this version of dramatiq-ray.
          ResultBackendError: the database cannot be reached.
        """
        try:
            _, after = self._process.migrate(apply=True)
        except Exception as error:
            if is_transient(error):
                raise self._unreachable("migrate the result tables", error) from error
            raise
        self._process.schema_ready = True
        return after

    def close(self) -> None:
        """Stop the listener and close this process's connections (a later operation opens them again)."""
        self._process.close()

    def _connections(self) -> tuple[sa.Engine, sa.Engine]:
        """The reader and writer engines, with the schema ready (for ``gc.py``)."""
        return self._process.ready()

    @property
    def _listener(self) -> Listener | None:
        """This process's listener thread, once a blocking read on PostgreSQL started it."""
        return self._process.listener

    def _listening(self) -> Waiters:
        return self._process.listening()

    def _unreachable(self, what: str, error: BaseException) -> ResultBackendError:
        return unreachable(self.database, what, error)

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
        self._writes.outcome(message, key, payload, self.encoder.encode(payload), ttl, exception)

    # --- lifecycle events ------------------------------------------------------------------------------------

    def record_message_event(self, event: str, message: Any, ttl: int) -> None:
        """Record that ``message`` was enqueued, started running, or was skipped (see
        :class:`~dramatiq_ray.results.sql.lifecycle.MessageEventRecorder`). Best effort: a database error is
        logged at WARNING and the message goes on; its outcome is stored as usual."""
        self._writes.event(event, message, ttl)

    # --- reading ---------------------------------------------------------------------------------------------

    def _read(self, key: str) -> bytes | None:
        statement = self._statements.read()
        reader, _ = self._process.ready()
        with reader.connect() as connection:
            found = connection.execute(statement, {"key": key, "now": time.time()}).scalar()
        return None if found is None else bytes(found)

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
            data, error = wait_notified(self._process.listening_until(deadline), self._read_or_error, key, deadline)
        else:
            data, error = poll(self._read_or_error, key, deadline, self.poll_cap / 1000)
        if error is not None:
            raise self._unreachable("read a result", error) from error
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
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 10_000:
            raise ConfigurationError(f"limit must be an integer from 1 to 10000, got {limit!r}.")
        statuses = check_statuses(status)
        now = time.time()
        after = since_timestamp(since, now)
        statement = select_records(
            self.tables.results, actor=actor, statuses=statuses, after=after, limit=limit, now=now
        )
        return [ResultRecord.from_row(row) for row in self._process.select(statement, "query the results")]

    def record(self, message: Any) -> ResultRecord | None:
        """The record of ``message`` (a ``Message``, or anything with its ids), or ``None`` when there is none or
        it expired.

        Raises:
          ResultBackendError: the database cannot be reached.
        """
        statement = select_record(self.tables.results, self.build_message_key(message), time.time())
        rows = self._process.select(statement, "read a record")
        return ResultRecord.from_row(rows[0]) if rows else None

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
