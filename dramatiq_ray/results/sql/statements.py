"""The SQL of :class:`~dramatiq_ray.SQLBackend`'s writes, reads and queries (the schema's is in ``schema.py``,
expiry's in ``gc.py``).

Writes are upserts (``INSERT ... ON CONFLICT DO UPDATE``, which SQLite and PostgreSQL both have), so that a
message's outcome and its lifecycle events land on its one row: an event never overwrites a stored outcome, and an
outcome keeps the attempt count the worker recorded when it started the message. On PostgreSQL an outcome's upsert
also notifies the waiters, in the same statement.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import sqlalchemy as sa

    from .schema import Tables

__all__ = ["Statements", "select_record", "select_records"]


class Statements:
    """The statements of one backend's writes and reads, each built once per purpose and set of columns: SQLAlchemy
    then compiles it once too. ``kind`` is the database's (``"sqlite"`` or ``"postgresql"``), ``channel`` the one
    PostgreSQL notifies."""

    def __init__(self, tables: Tables, kind: str, channel: str) -> None:
        self.tables = tables
        self.kind = kind
        self.channel = channel
        self._built: dict[tuple[str, frozenset[str]], Any] = {}

    def outcome(self, names: frozenset[str]) -> Any:
        """The upsert of an outcome's columns ``names`` (and on PostgreSQL the bind parameter ``notify_data``)."""
        return self._cached("outcome", names, self._build_outcome)

    def event(self, event: str, names: frozenset[str]) -> Any:
        """The upsert of lifecycle event ``event``'s columns ``names``."""
        return self._cached(f"event-{event}", names, self._build_event)

    def read(self) -> Any:
        """The stored outcome of the bind parameter ``key``, unless it expired before ``now``."""
        return self._cached("read", frozenset(), self._build_read)

    def _cached(self, purpose: str, names: frozenset[str], build: Callable[[frozenset[str]], Any]) -> Any:
        key = (purpose, names)
        statement = self._built.get(key)
        if statement is None:
            statement = self._built[key] = build(names)
        return statement

    def _upsert(self, names: frozenset[str]) -> Any:
        """``INSERT`` of the columns ``names``, each a bind parameter of its name."""
        import sqlalchemy as sa
        from sqlalchemy.dialects import postgresql, sqlite

        insert = postgresql.insert if self.kind == "postgresql" else sqlite.insert
        return insert(self.tables.results).values({name: sa.bindparam(name) for name in sorted(names)})

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
        if self.kind != "postgresql":
            return statement
        # One statement, one round trip: the row is written and waiters are notified when it commits; a small
        # result travels in the notification, so a woken waiter needs no read (see waiting.py).
        stored = statement.returning(table.c.key).cte("stored")
        payload = sa.func.concat(stored.c.key, " ", sa.bindparam("notify_data", type_=sa.String))
        return sa.select(sa.func.pg_notify(self.channel, payload)).select_from(stored)

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

    def _build_read(self, _: frozenset[str]) -> Any:
        import sqlalchemy as sa

        table = self.tables.results
        return sa.select(table.c.result).where(
            table.c.key == sa.bindparam("key"), table.c.result.is_not(None), table.c.expires_at > sa.bindparam("now")
        )


def select_records(
    table: sa.Table,
    *,
    actor: str | None,
    statuses: tuple[str, ...],
    after: float | None,
    limit: int,
    now: float,
) -> Any:
    """The rows not expired at ``now`` that match every filter given, newest change first, at most ``limit``."""
    import sqlalchemy as sa

    statement = sa.select(table).where(table.c.expires_at > now)
    if actor is not None:
        statement = statement.where(table.c.actor_name == actor)
    if statuses:
        statement = statement.where(table.c.status.in_(statuses))
    if after is not None:
        statement = statement.where(table.c.updated_at >= after)
    return statement.order_by(table.c.updated_at.desc()).limit(limit)


def select_record(table: sa.Table, key: str, now: float) -> Any:
    """The row of ``key``, unless it expired before ``now``."""
    import sqlalchemy as sa

    return sa.select(table).where(table.c.key == key, table.c.expires_at > now)
