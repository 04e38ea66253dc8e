"""Database URLs and engines of :class:`~dramatiq_ray.SQLBackend`: which URLs are accepted, how each database is
connected, and which errors mean "the database is unreachable for now".

SQLite: WAL journal (readers never block the writer, and several worker processes of one host share the file),
``synchronous=NORMAL`` (a commit survives a crash of the process; WAL's usual trade-off against power loss), a
busy timeout so that writers queue instead of failing, and ``BEGIN IMMEDIATE`` for writes so that a writer takes
the database's write lock at the start of its transaction, where the busy timeout applies.

PostgreSQL: psycopg 3. Single statements run in autocommit mode, one round trip each (no ``BEGIN``/``COMMIT``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ...errors import ConfigurationError, MissingDependencyError, ResultBackendError

if TYPE_CHECKING:
    import sqlalchemy as sa

__all__ = ["Database", "first_line", "is_transient", "parse_url", "unreachable"]

#: How long an SQLite writer waits for the write lock before giving up, in seconds.
SQLITE_BUSY_TIMEOUT = 30.0
#: How long connecting to PostgreSQL may take, in seconds.
PG_CONNECT_TIMEOUT = 10
#: The execution option that marks a connection as a writer (SQLite: ``BEGIN IMMEDIATE``).
WRITE_OPTION = "dramatiq_ray_write"

_SQLITE_DRIVERS = ("sqlite", "sqlite+pysqlite")
_PG_DRIVERS = ("postgresql", "postgres", "postgresql+psycopg")


@dataclass(frozen=True)
class Database:
    """A parsed, accepted database URL: ``kind`` is ``"sqlite"`` or ``"postgresql"``."""

    url: sa.URL
    kind: str

    def describe(self) -> str:
        """The URL without its password, for logs and messages."""
        return self.url.render_as_string(hide_password=True)

    def create_engine(self, options: dict[str, Any]) -> sa.Engine:
        """A new engine (connection pool) for this database; nothing is connected yet."""
        import sqlalchemy as sa

        if self.kind == "sqlite":
            engine = sa.create_engine(
                self.url,
                connect_args={"timeout": SQLITE_BUSY_TIMEOUT, "check_same_thread": False},
                **options,
            )
            sa.event.listen(engine, "connect", _sqlite_connect)
            sa.event.listen(engine, "begin", _sqlite_begin)
            return engine
        return sa.create_engine(self.url, connect_args=self.connect_args(), **options)

    def connect_args(self) -> dict[str, Any]:
        """What every PostgreSQL connection is opened with, beside the URL's own parameters."""
        return {"connect_timeout": PG_CONNECT_TIMEOUT, "application_name": "dramatiq-ray"}


def _sqlite_connect(dbapi_connection: Any, record: Any) -> None:
    # pysqlite's own transaction handling is turned off: the "begin" listener below emits BEGIN itself.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT * 1000)}")
    finally:
        cursor.close()


def _sqlite_begin(connection: sa.Connection) -> None:
    write = connection.get_execution_options().get(WRITE_OPTION, False)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def _require(module: str) -> None:
    import importlib

    try:
        importlib.import_module(module)
    except ImportError as error:
        raise MissingDependencyError("SQLBackend", "sql", module) from error


def parse_url(url: object) -> Database:
    """Check ``url`` and say which database it names.

    Accepted: ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db``, ``postgresql://user@host/db``
    (also ``postgres://`` and ``postgresql+psycopg://``; psycopg 3 is the driver).

    Raises:
      ConfigurationError: not a string, not a URL, another database or driver, an in-memory SQLite database, or
        an SQLite file whose directory does not exist.
      MissingDependencyError: SQLAlchemy (or, for PostgreSQL, psycopg) is not installed.
    """
    if not isinstance(url, str) or not url.strip():
        raise ConfigurationError(
            f"SQLBackend needs a database URL such as 'sqlite:////var/lib/dramatiq-ray/results.db' or "
            f"'postgresql://user@host/dbname', got {url!r}."
        )
    _require("sqlalchemy")
    import sqlalchemy as sa
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = sa.make_url(url.strip())
    except (ArgumentError, ValueError) as error:
        raise ConfigurationError(
            f"SQLBackend: {_hide_password(url)!r} is not a database URL ({error}). Use "
            "'sqlite:////absolute/path.db' or 'postgresql://user:password@host:5432/dbname'."
        ) from error
    driver = parsed.drivername
    if driver in _SQLITE_DRIVERS:
        database = parsed.database or ""
        if database in ("", ":memory:") or database.startswith("file::memory:"):
            raise ConfigurationError(
                f"SQLBackend: {url!r} is an in-memory SQLite database, which no other connection or process sees: "
                "use a file, e.g. 'sqlite:////var/lib/dramatiq-ray/results.db'."
            )
        directory = os.path.dirname(os.path.abspath(database))
        if not os.path.isdir(directory):
            raise ConfigurationError(
                f"SQLBackend: the directory of the SQLite database {database!r} ({directory}) does not exist: "
                "create it, or name a file in an existing directory."
            )
        return Database(url=parsed.set(drivername="sqlite"), kind="sqlite")
    if driver in _PG_DRIVERS:
        _require("psycopg")
        if not parsed.database:
            raise ConfigurationError(
                f"SQLBackend: {_hide_password(url)!r} names no database: add it, as in "
                "'postgresql://user@host:5432/dbname'."
            )
        return Database(url=parsed.set(drivername="postgresql+psycopg"), kind="postgresql")
    raise ConfigurationError(
        f"SQLBackend supports SQLite ('sqlite:///path.db') and PostgreSQL ('postgresql://...', driver psycopg 3), "
        f"not {driver!r} in {_hide_password(url)!r}."
    )


def _hide_password(url: str) -> str:
    scheme, separator, rest = url.partition("://")
    if separator and "@" in rest:
        credentials, _, host = rest.rpartition("@")
        user = credentials.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}" if ":" in credentials else url
    return url


def is_transient(error: BaseException) -> bool:
    """Whether ``error`` means the database cannot be reached or is busy for now (retrying may succeed), rather
    than a mistake that will fail again (a bad query, a constraint, a value the driver rejects)."""
    import sqlite3

    from sqlalchemy import exc

    if isinstance(error, exc.DBAPIError) and error.connection_invalidated:
        return True
    if isinstance(getattr(error, "orig", None), sqlite3.Error):
        # sqlite3 reports mistakes (no such table, a syntax error) as OperationalError too.
        text = str(error.orig).lower()  # type: ignore[attr-defined]
        return any(word in text for word in ("locked", "busy", "unable to open", "disk i/o"))
    return isinstance(error, exc.OperationalError | exc.InterfaceError) or (
        isinstance(error, exc.DBAPIError) and isinstance(error.orig, ConnectionError | OSError)
    )


def unreachable(database: Database, what: str, error: BaseException) -> ResultBackendError:
    """The error raised when the backend could not do ``what`` (``"read a result"``) because of ``error``."""
    return ResultBackendError(
        f"Could not {what} in {database.describe()} ({type(error).__name__}: {first_line(error)}). Check "
        "that the database is up and reachable from this host; an attempt whose outcome could not be stored "
        "fails, and the retry policy runs it again."
    )


def first_line(error: BaseException) -> str:
    """The first line of the driver's message (or of ``error``'s), for logs and errors."""
    text = str(getattr(error, "orig", None) or error).strip()
    return text.splitlines()[0] if text else type(error).__name__
