"""The SQL steering table's expired rows (``<prefix>steering``, cancel marks, states and progress of an
``SQLBackend``) are deleted by later writes, at most once per ``sweep_every`` per table per process, on a real
PostgreSQL."""

from __future__ import annotations

import pickle
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from dramatiq_ray import SQLBackend
from dramatiq_ray.results.sql.steering import SQLChannel
from tests.sql.conftest import Database

HOUR_MS = 3_600_000


@pytest.fixture
def sql_backend(postgres_database: Database) -> Iterator[SQLBackend]:
    backend = SQLBackend(url=postgres_database.url, table_prefix=postgres_database.prefix)
    yield backend
    backend.close()


def channel(backend: SQLBackend, *, ttl: int = HOUR_MS, sweep_every: int = HOUR_MS) -> SQLChannel:
    return SQLChannel(backend.database, table_prefix=backend.table_prefix, ttl=ttl, sweep_every=sweep_every)


def rows(backend: SQLBackend) -> set[str]:
    engine = sa.create_engine(backend.database.url)
    try:
        with engine.connect() as connection:
            found = connection.execute(sa.text(f'SELECT message_id FROM "{backend.table_prefix}steering"'))
            return {row.message_id for row in found}
    finally:
        engine.dispose()


def test_steering_sweep_writes_within_the_cadence_keep_expired_rows_and_a_due_write_deletes_them(
    sql_backend: SQLBackend,
) -> None:
    # Given a live row, written first (this process's first write to the table sweeps, and starts the cadence)
    live = channel(sql_backend)
    live.set_state("live", "running")
    # and rows that expired a minute ago, written within the cadence
    expired = channel(sql_backend, ttl=-60_000)
    expired.set_state("old-1", "queued")
    expired.mark_cancelled("old-2")
    assert rows(sql_backend) == {"live", "old-1", "old-2"}
    assert expired.state("old-1") is None  # expired rows are ignored by reads meanwhile

    # When a write comes after the cadence ran out (a sweep_every of 0: always due)
    channel(sql_backend, sweep_every=0).set_state("live-2", "queued")

    # Then the expired rows are gone, and the live ones stay
    assert rows(sql_backend) == {"live", "live-2"}
    live.close()
    expired.close()


def test_steering_sweep_cadence_is_kept_per_process_not_per_channel(sql_backend: SQLBackend) -> None:
    # Given this process swept the table once
    first = channel(sql_backend)
    first.set_state("live", "running")
    expired = channel(sql_backend, ttl=-60_000)
    expired.set_state("old", "queued")

    # When a copy of the channel, as a call carries it to Ray, writes within the cadence
    copy = pickle.loads(pickle.dumps(first))
    copy.set_state("another", "running")

    # Then it does not sweep again
    assert rows(sql_backend) == {"live", "old", "another"}
    for each in (first, expired, copy):
        each.close()
