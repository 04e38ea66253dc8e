"""Blob lifecycle: gc_blobs deletes old unreferenced blobs and never one a live result points to."""

from __future__ import annotations

import os
import time
from datetime import timedelta
from pathlib import Path

import pytest

from dramatiq_ray import DigestStore, FilesystemStore, SpillingBackend, gc_blobs, get_pointer
from dramatiq_ray.errors import BlobNotFoundError, ConfigurationError
from dramatiq_ray.payloads.pointers import digest_of
from tests.results.conftest import make_message

TTL_MS = 600_000
HOUR = 3600.0


def age(path: Path, seconds: float) -> None:
    past = time.time() - seconds
    os.utime(path, (past, past))


def only_blob(store: FilesystemStore) -> Path:
    [path] = list(Path(store.path).rglob("*.json"))
    return path


def test_gc_blobs_deletes_a_blob_older_than_the_bound(stub_backend, fs_store) -> None:
    # Given a spilled result whose blob was last written two hours ago (its result has long expired)
    backend = SpillingBackend(stub_backend, store=fs_store, max_inline_bytes=0)
    message = make_message()
    backend.store_result(message, "old", TTL_MS)
    age(only_blob(fs_store), 2 * HOUR)
    # When collecting blobs older than an hour
    report = gc_blobs(fs_store, older_than=timedelta(hours=1))
    # Then it is gone
    assert (report.scanned, len(report.deleted), report.kept, report.bytes_freed) == (1, 1, 0, len(b'"old"'))
    assert not list(Path(fs_store.path).rglob("*.json"))
    with pytest.raises(BlobNotFoundError):
        backend.get_result(message)


def test_gc_blobs_keeps_a_blob_a_live_result_points_to(stub_backend, fs_store) -> None:
    # Given an old blob that a new result references again (identical payload)
    backend = SpillingBackend(stub_backend, store=fs_store, max_inline_bytes=0)
    backend.store_result(make_message(), "shared", TTL_MS)
    age(only_blob(fs_store), 2 * HOUR)
    live = make_message()
    backend.store_result(live, "shared", TTL_MS)
    # When collecting with a bound longer than the result TTL
    report = gc_blobs(fs_store, older_than=HOUR)
    # Then the blob is kept and the live result reads back
    assert (report.deleted, report.kept) == ([], 1)
    assert backend.get_result(live) == "shared"


def test_gc_blobs_dry_run_deletes_nothing(stub_backend, fs_store) -> None:
    backend = SpillingBackend(stub_backend, store=fs_store, max_inline_bytes=0)
    backend.store_result(make_message(), "old", TTL_MS)
    age(only_blob(fs_store), 2 * HOUR)
    seen: list[str] = []
    report = gc_blobs(fs_store, older_than=HOUR, dry_run=True, progress=lambda info, outcome: seen.append(outcome))
    assert report.dry_run and len(report.deleted) == 1
    assert seen == ["would delete"]
    assert only_blob(fs_store).exists()


def test_filesystem_delete_keeps_a_blob_referenced_after_it_was_listed(fs_store) -> None:
    # Given a blob listed as old by a collector
    data = b'"racing"'
    fs_store.put(digest_of(data), data)
    age(only_blob(fs_store), 2 * HOUR)
    [info] = list(fs_store.list_blobs())
    # When a writer stores the same payload before the collector deletes it
    fs_store.put(digest_of(data), data)
    # Then the delete is skipped and the blob stays
    assert not fs_store.delete_blob(info, cutoff=time.time() - HOUR)
    assert only_blob(fs_store).read_bytes() == data


def test_gc_blobs_removes_temporary_files_left_by_a_dead_writer(fs_store) -> None:
    fs_store.put(digest_of(b"[]"), b"[]")
    leftover = only_blob(fs_store).with_name("x.json.tmp-dead")
    leftover.write_bytes(b"[")
    age(leftover, 2 * HOUR)
    report = gc_blobs(fs_store, older_than=HOUR)
    assert report.deleted == [str(leftover.relative_to(fs_store.path))]
    assert only_blob(fs_store).exists()


def test_gc_blobs_on_s3_deletes_only_old_objects(s3_store, stub_backend) -> None:
    # S3 timestamps cannot be set back, so "now" is moved forward instead.
    backend = SpillingBackend(stub_backend, store=s3_store, max_inline_bytes=0)
    message = make_message()
    backend.store_result(message, "old", TTL_MS)
    assert gc_blobs(s3_store, older_than=HOUR).deleted == []
    report = gc_blobs(s3_store, older_than=HOUR, now=time.time() + 2 * HOUR)
    assert len(report.deleted) == 1
    assert list(s3_store.list_blobs()) == []


def test_gc_blobs_on_gcs_deletes_only_old_objects(gcs_store, stub_backend) -> None:
    backend = SpillingBackend(stub_backend, store=gcs_store, max_inline_bytes=0)
    message = make_message()
    backend.store_result(message, "old", TTL_MS)
    assert gc_blobs(gcs_store, older_than=HOUR).deleted == []
    report = gc_blobs(gcs_store, older_than=HOUR, now=time.time() + 2 * HOUR)
    assert len(report.deleted) == 1
    assert get_pointer(message, backend=backend) is not None
    with pytest.raises(BlobNotFoundError):
        backend.get_result(message)


def test_gc_blobs_has_nothing_to_do_for_a_digest_store() -> None:
    assert gc_blobs(DigestStore(), older_than=HOUR).scanned == 0


@pytest.mark.parametrize("bad", [0, -5, timedelta(0), "1h", True])
def test_gc_blobs_rejects_a_bound_that_is_not_positive(fs_store, bad) -> None:
    with pytest.raises(ConfigurationError, match="older_than must be a positive"):
        gc_blobs(fs_store, older_than=bad)
