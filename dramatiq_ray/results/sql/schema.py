"""The tables of :class:`~dramatiq_ray.SQLBackend`, their indexes, and forward migrations applied at start.

Two tables per ``table_prefix``: ``<prefix>results`` (one row per message) and ``<prefix>schema_version`` (the
version of that schema, one row). :func:`migrate` brings the schema up to :data:`SCHEMA_VERSION` in one
transaction that holds a lock, so that processes starting at the same time apply each migration exactly once: a
PostgreSQL transaction-level advisory lock, or SQLite's write lock (``BEGIN IMMEDIATE``). DDL is transactional
in both databases, so a migration that fails leaves the schema as it was.

Times are POSIX timestamps in seconds (``DOUBLE PRECISION``): one type that both databases compare and index the
same way; :class:`~dramatiq_ray.ResultRecord` turns them into UTC datetimes.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ...errors import SchemaVersionError

if TYPE_CHECKING:
    import sqlalchemy as sa

__all__ = ["SCHEMA_VERSION", "Tables", "build_tables", "migrate", "read_version"]

#: The schema version this code writes and reads.
SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Tables:
    """The SQLAlchemy tables of one ``table_prefix``."""

    prefix: str
    metadata: sa.MetaData
    results: sa.Table
    version: sa.Table


def build_tables(prefix: str) -> Tables:
    """The tables (and indexes) of the latest schema, named with ``prefix``."""
    import sqlalchemy as sa

    metadata = sa.MetaData()
    results = sa.Table(
        f"{prefix}results",
        metadata,
        # Dramatiq's message key (an MD5 hex digest of namespace, queue, actor and message id, or the readable
        # key with use_namespace_prefix_keys): what ResultBackend._store and _get are given.
        sa.Column("key", sa.String(512), primary_key=True),
        sa.Column("message_id", sa.String(64)),
        sa.Column("queue_name", sa.String(255)),
        sa.Column("actor_name", sa.String(255)),
        sa.Column("status", sa.String(16), nullable=False),
        # What ResultBackend stores, encoded by the backend's encoder: the value, a pointer string, or a wrapped
        # exception. NULL until the outcome is stored (enqueued, running, or skipped before it is).
        sa.Column("result", sa.LargeBinary),
        sa.Column("pointer", sa.String(2048)),
        sa.Column("blob_digest", sa.String(64)),
        sa.Column("result_size", sa.BigInteger),
        sa.Column("error_type", sa.String(255)),
        sa.Column("error_message", sa.Text),
        sa.Column("traceback", sa.Text),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("worker_host", sa.String(255)),
        sa.Column("worker_pid", sa.Integer),
        sa.Column("args", sa.Text),
        sa.Column("kwargs", sa.Text),
        sa.Column("enqueued_at", sa.Double),
        sa.Column("started_at", sa.Double),
        sa.Column("finished_at", sa.Double),
        sa.Column("updated_at", sa.Double, nullable=False),
        sa.Column("expires_at", sa.Double, nullable=False),
    )
    # query(actor=, status=, since=) and `dramatiq-ray results list`: newest first, filtered by what is given.
    sa.Index(f"{prefix}results_actor_status_updated", results.c.actor_name, results.c.status, results.c.updated_at)
    sa.Index(f"{prefix}results_status_updated", results.c.status, results.c.updated_at)
    sa.Index(f"{prefix}results_updated", results.c.updated_at)
    # gc: expired rows in batches; "does a live row still point to this blob?"
    sa.Index(f"{prefix}results_expires", results.c.expires_at)
    sa.Index(f"{prefix}results_blob_digest", results.c.blob_digest)
    sa.Index(f"{prefix}results_message_id", results.c.message_id)
    version = sa.Table(
        f"{prefix}schema_version",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("applied_at", sa.Double, nullable=False),
    )
    return Tables(prefix=prefix, metadata=metadata, results=results, version=version)


# --- migrations ----------------------------------------------------------------------------------------------


def _create_v1(connection: sa.Connection, tables: Tables) -> None:
    # The table and its indexes as build_tables describes them. When a later version changes the table, this
    # step must keep creating version 1's table (write its DDL here), and the new step alters it.
    tables.results.create(connection)


#: ``MIGRATIONS[n]`` brings the schema from version ``n`` to ``n + 1``. A new version appends one function (an
#: ``ALTER TABLE``, a new index) and bumps :data:`SCHEMA_VERSION`; :func:`build_tables` describes the result.
MIGRATIONS: list[Callable[[sa.Connection, Tables], None]] = [_create_v1]
assert len(MIGRATIONS) == SCHEMA_VERSION


def read_version(connection: sa.Connection, tables: Tables) -> int:
    """The schema version recorded in the database; 0 when there is no schema yet."""
    import sqlalchemy as sa

    if not sa.inspect(connection).has_table(tables.version.name):
        return 0
    found = connection.execute(sa.select(tables.version.c.version).where(tables.version.c.id == 1)).scalar()
    return int(found or 0)


def _lock(connection: sa.Connection, tables: Tables) -> None:
    """Hold the migration lock until the transaction ends (SQLite: its ``BEGIN IMMEDIATE`` already does)."""
    import sqlalchemy as sa

    if connection.dialect.name == "postgresql":
        key = int.from_bytes(hashlib.sha256(f"dramatiq-ray:{tables.prefix}".encode()).digest()[:8], "big", signed=True)
        connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


def migrate(engine: sa.Engine, tables: Tables, *, apply: bool = True) -> tuple[int, int]:
    """Bring the schema to :data:`SCHEMA_VERSION`; return the versions before and after.

    Parameters:
      engine: The engine (its ``begin`` takes SQLite's write lock; see ``engine.py``).
      tables: The tables of the backend's prefix.
      apply: ``False`` only checks: a schema behind this code raises instead of being migrated.

    Raises:
      SchemaVersionError: the database's schema is newer than this code, or behind it and ``apply`` is false.
    """
    import sqlalchemy as sa

    with engine.begin() as connection:
        _lock(connection, tables)
        before = read_version(connection, tables)
        if before > SCHEMA_VERSION:
            raise SchemaVersionError(
                f"The result tables {tables.results.name!r} have schema version {before}, newer than the "
                f"{SCHEMA_VERSION} this dramatiq-ray knows: upgrade dramatiq-ray on this host to the version the "
                "other hosts run."
            )
        if before == SCHEMA_VERSION:
            return before, before
        if not apply:
            raise SchemaVersionError(
                f"The result tables {tables.results.name!r} have schema version {before}, this dramatiq-ray needs "
                f"{SCHEMA_VERSION}: run SQLBackend(...).migrate() once (or construct it with migrate=True)."
            )
        if before == 0:
            tables.version.create(connection, checkfirst=True)
        for step in MIGRATIONS[before:]:
            step(connection, tables)
        values: dict[str, Any] = {"version": SCHEMA_VERSION, "applied_at": time.time()}
        if before == 0:
            connection.execute(sa.insert(tables.version).values(id=1, **values))
        else:
            connection.execute(sa.update(tables.version).where(tables.version.c.id == 1).values(**values))
        return before, SCHEMA_VERSION
