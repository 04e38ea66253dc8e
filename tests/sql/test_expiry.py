"""Rows expire at result_ttl; collect_expired and ``dramatiq-ray gc`` delete them in batches, and the blobs that
only they pointed to."""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

import pytest
from dramatiq.results import ResultMissing

from dramatiq_ray import ConfigurationError, FilesystemStore, SpillingBackend, SQLBackend
from dramatiq_ray.cli import EXIT_OK, main
from dramatiq_ray.payloads.pointers import parse_pointer
from tests.sql.conftest import Database, make_message

HOUR = 3600.0


def test_expired_result_is_never_read(backend: SQLBackend) -> None:
    message = make_message()
    backend.store_result(message, "stale", 0)  # expires as it is stored

    with pytest.raises(ResultMissing):
        backend.get_result(message)


def test_collect_expired_deletes_expired_rows_in_batches_and_keeps_live_ones(backend: SQLBackend) -> None:
    expired = [make_message() for _ in range(25)]
    live = [make_message() for _ in range(5)]
    for message in expired:
        backend.store_result(message, "old", 0)
    for message in live:
        backend.store_result(message, "new", 60_000)

    report = backend.collect_expired(batch_size=10)

    assert (report.rows_deleted, report.batches) == (25, 3)
    assert [backend.get_result(message) for message in live] == ["new"] * 5
    assert backend.collect_expired(batch_size=10).rows_deleted == 0


@pytest.fixture
def spilling(backend: SQLBackend, tmp_path: Path) -> SpillingBackend:
    return SpillingBackend(backend, store=FilesystemStore(tmp_path / "blobs"), max_inline_bytes=16)


def blobs(tmp_path: Path) -> set[str]:
    return {path.name for path in (tmp_path / "blobs").rglob("*.json")}


def test_collect_expired_deletes_blobs_only_expired_rows_pointed_to(
    backend: SQLBackend, spilling: SpillingBackend, tmp_path: Path
) -> None:
    # Given an expired result with a blob of its own, and an expired one whose blob a live result shares
    alone, shared_expired, shared_live = make_message(), make_message(), make_message()
    spilling.store_result(alone, "a" * 100, 0)
    spilling.store_result(shared_expired, "b" * 100, 0)
    spilling.store_result(shared_live, "b" * 100, int(3 * HOUR * 1000))
    live = backend.record(shared_live)
    assert live is not None and live.pointer is not None
    assert len(blobs(tmp_path)) == 2

    # When expired rows are collected an hour from now, for blobs unwritten for a minute
    report = backend.collect_expired(store=spilling.store, older_than=60, now=time.time() + HOUR)

    # Then both expired rows are gone, and only the blob no live row points to
    assert report.rows_deleted == 2
    assert len(report.blobs_deleted) == 1 and report.blobs_deleted[0] != live.pointer
    assert blobs(tmp_path) == {parse_pointer(live.pointer).location.split("/")[-1]}
    assert spilling.get_result(shared_live) == "b" * 100


def test_collect_expired_keeps_a_blob_written_again_since_the_cutoff(
    backend: SQLBackend, spilling: SpillingBackend, tmp_path: Path
) -> None:
    message = make_message()
    spilling.store_result(message, "c" * 100, 0)

    # The blob was written just now: within a day, the default bound (a piped message may still carry it)
    report = backend.collect_expired(store=spilling.store)

    assert (report.rows_deleted, report.blobs_deleted, report.blobs_kept) == (1, [], 1)
    assert len(blobs(tmp_path)) == 1


def test_collect_expired_dry_run_deletes_nothing(
    backend: SQLBackend, spilling: SpillingBackend, tmp_path: Path
) -> None:
    messages = [make_message() for _ in range(3)]
    for index, message in enumerate(messages):
        spilling.store_result(message, str(index) * 100, 0)

    report = backend.collect_expired(store=spilling.store, older_than=60, now=time.time() + HOUR, dry_run=True)

    assert (report.dry_run, report.rows_deleted, len(report.blobs_deleted)) == (True, 3, 3)
    assert len(blobs(tmp_path)) == 3
    assert backend.collect_expired().rows_deleted == 3


@pytest.mark.parametrize(
    ("arguments", "problem"), [({"batch_size": 0}, "batch_size"), ({"older_than": 0}, "older_than")]
)
def test_collect_expired_with_bad_arguments_says_what_to_pass(
    backend: SQLBackend, arguments: dict[str, Any], problem: str
) -> None:
    with pytest.raises(ConfigurationError, match=problem):
        backend.collect_expired(**arguments)


def test_gc_command_deletes_the_expired_rows_of_the_settings_sql_backend(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the settings name an SQL result backend (and no blob store)
    monkeypatch.setenv("DRAMATIQ_RAY_RESULT_BACKEND", "sql")
    monkeypatch.setenv("DRAMATIQ_RAY_RESULT_BACKEND_URL", database.url)
    monkeypatch.delenv("DRAMATIQ_RAY_RESULT_STORAGE_BACKEND", raising=False)
    backend = SQLBackend(url=database.url)
    try:
        expired, live = make_message(), make_message()
        backend.store_result(expired, 1, 0)
        backend.store_result(live, 2, 60_000)

        # When gc runs, first as a dry run
        out = io.StringIO()
        assert main(["gc", "--dry-run", "--batch-size", "5"], out=out) == EXIT_OK
        assert "would delete 1 expired row(s) in 1 batch(es)" in out.getvalue()
        out = io.StringIO()
        assert main(["gc"], out=out) == EXIT_OK

        # Then the expired row is gone and the live one stays
        assert "deleted 1 expired row(s)" in out.getvalue()
        assert backend.collect_expired().rows_deleted == 0
        assert backend.get_result(live) == 2
    finally:
        backend.close()
        if database.kind == "postgresql":
            from tests.sql.conftest import drop_tables

            drop_tables(database.url, "dramatiq_ray_")
