"""The schema: created at the first operation, versioned in a table of its own, migrated forward at start."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa

from dramatiq_ray import SchemaVersionError, SQLBackend
from dramatiq_ray.results.sql import schema
from tests.sql.conftest import make_message


def versions(backend: SQLBackend) -> list[tuple[int, int]]:
    reader, _ = backend._connections()
    with reader.connect() as connection:
        return [(row.id, row.version) for row in connection.execute(backend.tables.version.select())]


def set_version(backend: SQLBackend, version: int) -> None:
    _, writer = backend._connections()
    with writer.begin() as connection:
        connection.execute(sa.update(backend.tables.version).values(version=version))


def test_first_operation_creates_the_tables_their_indexes_and_records_the_version(backend: SQLBackend) -> None:
    backend.store_result(make_message(), 1, 60_000)

    assert versions(backend) == [(1, schema.SCHEMA_VERSION)]
    reader, _ = backend._connections()
    with reader.connect() as connection:
        indexes = {index["name"] for index in sa.inspect(connection).get_indexes(backend.tables.results.name)}
    prefix = backend.table_prefix
    assert indexes >= {
        f"{prefix}results_actor_status_updated",
        f"{prefix}results_status_updated",
        f"{prefix}results_updated",
        f"{prefix}results_expires",
        f"{prefix}results_blob_digest",
        f"{prefix}results_message_id",
    }


def test_schema_newer_than_this_code_is_refused_with_what_to_do(
    backend: SQLBackend, new_backend: Callable[..., SQLBackend]
) -> None:
    backend.migrate()
    set_version(backend, schema.SCHEMA_VERSION + 1)

    with pytest.raises(SchemaVersionError, match="newer than the 1 this dramatiq-ray knows: upgrade dramatiq-ray"):
        new_backend().store_result(make_message(), 1, 60_000)


def test_migrate_false_refuses_a_schema_behind_this_code(new_backend: Callable[..., SQLBackend]) -> None:
    backend = new_backend(migrate=False)

    with pytest.raises(SchemaVersionError, match=r"run SQLBackend\(...\).migrate\(\) once"):
        backend.get_result(make_message())
    assert backend.migrate() == schema.SCHEMA_VERSION
    backend.store_result(message := make_message(), "now it works", 60_000)
    assert backend.get_result(message) == "now it works"


def test_a_new_version_migrates_an_existing_schema_forward_keeping_its_rows(
    backend: SQLBackend, new_backend: Callable[..., SQLBackend], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a database at the current version holding a result
    message = make_message()
    backend.store_result(message, "kept", 60_000)

    # When a later version adds a column (one more migration step)
    def add_note(connection: Any, tables: schema.Tables) -> None:
        connection.execute(sa.text(f"ALTER TABLE {tables.results.name} ADD COLUMN note VARCHAR(50)"))

    monkeypatch.setattr(schema, "MIGRATIONS", [*schema.MIGRATIONS, add_note])
    monkeypatch.setattr(schema, "SCHEMA_VERSION", schema.SCHEMA_VERSION + 1)
    upgraded = new_backend()

    # Then starting it applies that step once, records the version, and the rows are still there
    assert upgraded.migrate() == schema.SCHEMA_VERSION
    assert upgraded.migrate() == schema.SCHEMA_VERSION
    assert versions(upgraded) == [(1, schema.SCHEMA_VERSION)]
    reader, _ = upgraded._connections()
    with reader.connect() as connection:
        columns = {column["name"] for column in sa.inspect(connection).get_columns(upgraded.tables.results.name)}
    assert "note" in columns
    assert upgraded.get_result(message) == "kept"
