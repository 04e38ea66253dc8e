"""Fixtures of the SQL result backend's tests: a database of each kind, owned by one test.

SQLite: a file in the test's temporary directory. PostgreSQL: the server ``postgres_url`` finds, with a table
prefix no other test uses; the test's tables are dropped afterwards.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dramatiq
import pytest
from sqlalchemy import make_url

from dramatiq_ray import SQLBackend
from tests.sql._proxy import CuttableProxy


@dataclass(frozen=True)
class Database:
    """A database for one test: its URL, the table prefix the test owns, and its kind."""

    kind: str
    url: str
    prefix: str


def unique_prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}_"


def drop_tables(url: str, prefix: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(f'DROP TABLE IF EXISTS "{prefix}results", "{prefix}schema_version", "{prefix}steering"')


def make_message(actor_name: str = "render", *args: Any, queue_name: str = "default", **options: Any) -> Any:
    return dramatiq.Message(queue_name=queue_name, actor_name=actor_name, args=args, kwargs={}, options=options)


@pytest.fixture
def sqlite_database(tmp_path: Path) -> Database:
    return Database("sqlite", f"sqlite:///{tmp_path / 'results.db'}", unique_prefix())


@pytest.fixture
def postgres_database(postgres_url: str) -> Iterator[Database]:
    database = Database("postgresql", postgres_url, unique_prefix())
    yield database
    drop_tables(postgres_url, database.prefix)


@pytest.fixture
def proxy(postgres_database: Database) -> Iterator[CuttableProxy]:
    """A TCP proxy in front of the test's PostgreSQL, that the test cuts and restores."""
    url = make_url(postgres_database.url)
    found = CuttableProxy((url.host or "127.0.0.1", url.port or 5432))
    yield found
    found.close()


def through(proxy: CuttableProxy, database: Database) -> str:
    return make_url(database.url).set(port=proxy.port).render_as_string(hide_password=False)


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest) -> Database:
    """Each test using this runs once on SQLite and once on PostgreSQL."""
    found: Database = request.getfixturevalue(f"{request.param}_database")
    return found


@pytest.fixture
def new_backend(database: Database) -> Iterator[Callable[..., SQLBackend]]:
    """Build ``SQLBackend``s on the test's database (and prefix); each is closed afterwards."""
    built: list[SQLBackend] = []

    def build(**options: Any) -> SQLBackend:
        backend = SQLBackend(url=database.url, table_prefix=database.prefix, **options)
        built.append(backend)
        return backend

    yield build
    for backend in built:
        backend.close()


@pytest.fixture
def backend(new_backend: Callable[..., SQLBackend]) -> SQLBackend:
    return new_backend()
