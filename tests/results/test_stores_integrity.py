"""Self-healing blobs: storing a payload again over a corrupt blob of the filesystem, S3 (moto's server) or GCS
(the emulator) replaces it, so the pointer reads back; an intact blob is only refreshed. And the integrity error
says exactly what was wrong."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from dramatiq.encoder import JSONEncoder

from dramatiq_ray import S3Store, SpillingBackend, get_pointer
from dramatiq_ray.errors import BlobIntegrityError
from dramatiq_ray.payloads.plan import read_value
from dramatiq_ray.payloads.pointers import digest_of, parse_pointer
from dramatiq_ray.payloads.stores import verify_blob
from tests.results.conftest import make_message

TTL = 60_000
VALUE = {"frames": list(range(200))}
DATA = JSONEncoder().encode(VALUE)
STORES_LOGGER = "dramatiq_ray.payloads.stores"


def flip_one_byte(data: bytes) -> bytes:
    flipped = bytearray(data)
    flipped[len(flipped) // 2] ^= 0x01
    return bytes(flipped)


#: Ways a stored blob goes bad: the same size with another digest, and sizes shorter or longer than its pointer's.
CORRUPTIONS: dict[str, Callable[[bytes], bytes]] = {
    "flipped-byte": flip_one_byte,
    "truncated": lambda data: data[: len(data) // 2],
    "emptied": lambda data: b"",
    "overlong": lambda data: data + b" ",
}


class RawBlobs:
    """Reaches a store's blobs directly, bypassing the store, as a disk fault or another tool would."""

    def __init__(self, kind: str, store: Any, server: Any) -> None:
        self.kind = kind
        self.store = store
        self.server = server

    def read(self, location: str) -> bytes:
        if self.kind == "filesystem":
            return (Path(self.store.path) / location).read_bytes()
        if self.kind == "s3":
            return bytes(self.server.client().get_object(Bucket=self.store.bucket, Key=location)["Body"].read())
        return bytes(self.server.client().bucket(self.store.bucket).blob(location).download_as_bytes())

    def write(self, location: str, data: bytes) -> None:
        if self.kind == "filesystem":
            (Path(self.store.path) / location).write_bytes(data)
        elif self.kind == "s3":
            self.server.client().put_object(Bucket=self.store.bucket, Key=location, Body=data)
        else:
            self.server.client().bucket(self.store.bucket).blob(location).upload_from_string(data)

    def corrupt(self, location: str, how: str) -> None:
        self.write(location, CORRUPTIONS[how](self.read(location)))


@pytest.fixture(params=["filesystem", "s3", "gcs"])
def store_and_raw(request: pytest.FixtureRequest) -> tuple[Any, RawBlobs]:
    """Each test using this runs on a real directory, on moto's S3 server and on the GCS emulator."""
    kind = request.param
    if kind == "filesystem":
        store = request.getfixturevalue("fs_store")
        return store, RawBlobs(kind, store, None)
    server = request.getfixturevalue(f"{kind}_server")
    store = request.getfixturevalue(f"{kind}_store")
    return store, RawBlobs(kind, store, server)


def repairs_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "corrupt" in r.getMessage()]


# --- self-healing --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", sorted(CORRUPTIONS))
def test_store_put_replaces_a_corrupt_blob_so_its_pointer_reads_back(store_and_raw, how: str) -> None:
    # Given a stored blob gone bad: its pointer no longer reads
    store, raw = store_and_raw
    pointer = parse_pointer(store.put(digest_of(DATA), DATA))
    raw.corrupt(pointer.location, how)
    with pytest.raises(BlobIntegrityError):
        read_value(store, JSONEncoder(), pointer)
    # When the same payload is stored again
    assert store.put(digest_of(DATA), DATA) == pointer.raw
    # Then the pointer reads back the value
    assert read_value(store, JSONEncoder(), pointer) == VALUE


def test_store_put_logs_a_warning_naming_the_store_and_the_blob_it_replaced(store_and_raw, caplog) -> None:
    store, raw = store_and_raw
    pointer = parse_pointer(store.put(digest_of(DATA), DATA))
    raw.corrupt(pointer.location, "flipped-byte")
    with caplog.at_level(logging.WARNING, logger=STORES_LOGGER):
        store.put(digest_of(DATA), DATA)
    [message] = repairs_logged(caplog)
    assert store.describe() in message
    assert pointer.location in message


def test_store_put_leaves_an_intact_blob_in_place_without_a_warning(store_and_raw, caplog) -> None:
    store, raw = store_and_raw
    pointer = parse_pointer(store.put(digest_of(DATA), DATA))
    with caplog.at_level(logging.WARNING, logger=STORES_LOGGER):
        assert store.put(digest_of(DATA), DATA) == pointer.raw
    assert repairs_logged(caplog) == []
    assert raw.read(pointer.location) == DATA


def test_spilling_backend_result_reads_back_once_its_message_runs_again_over_a_corrupt_blob(
    store_and_raw, stub_backend
) -> None:
    # Given a spilled result whose blob was corrupted: reading it asks to re-run the message
    store, raw = store_and_raw
    backend = SpillingBackend(stub_backend, store=store, max_inline_bytes=0)
    message = make_message()
    backend.store_result(message, VALUE, TTL)
    raw.corrupt(parse_pointer(get_pointer(message, backend=backend)).location, "flipped-byte")
    with pytest.raises(BlobIntegrityError, match="re-run the message"):
        backend.get_result(message)
    # When the message runs again and stores the same result
    backend.store_result(message, VALUE, TTL)
    # Then its result reads back
    assert backend.get_result(message) == VALUE


def test_filesystem_store_put_refreshes_the_mtime_of_an_intact_blob_without_replacing_it(fs_store) -> None:
    # Given a blob last written two hours ago
    pointer = parse_pointer(fs_store.put(digest_of(DATA), DATA))
    path = Path(fs_store.path) / pointer.location
    two_hours_ago = time.time() - 7200
    os.utime(path, (two_hours_ago, two_hours_ago))
    inode = path.stat().st_ino
    # When the same payload is stored again
    fs_store.put(digest_of(DATA), DATA)
    # Then it is the same file, with a fresh mtime (what gc_blobs reads)
    assert path.stat().st_ino == inode
    assert path.stat().st_mtime > two_hours_ago + 3600


def test_filesystem_store_put_replaces_a_corrupt_blob_with_a_new_file_and_leaves_no_temporary(fs_store) -> None:
    pointer = parse_pointer(fs_store.put(digest_of(DATA), DATA))
    path = Path(fs_store.path) / pointer.location
    inode = path.stat().st_ino
    path.write_bytes(flip_one_byte(DATA))
    fs_store.put(digest_of(DATA), DATA)
    # os.replace put a new file in place (readers never see a half-written one) and cleaned up after itself
    assert path.stat().st_ino != inode
    files = [p for p in Path(fs_store.path).rglob("*") if p.is_file()]
    assert files == [path]


def test_filesystem_store_put_replaces_a_symlink_at_a_blob_address_without_touching_its_target(
    fs_store, tmp_path
) -> None:
    # Given a blob address that holds a symlink to a file outside the store, with the same bytes
    pointer = parse_pointer(fs_store.put(digest_of(DATA), DATA))
    path = Path(fs_store.path) / pointer.location
    outside = tmp_path / "outside.json"
    outside.write_bytes(DATA)
    path.unlink()
    path.symlink_to(outside)
    # When the payload is stored again, then the symlink is replaced by a regular file and the target is untouched
    fs_store.put(digest_of(DATA), DATA)
    assert not path.is_symlink() and path.read_bytes() == DATA
    assert outside.read_bytes() == DATA


def test_s3_store_put_refreshes_an_intact_object_without_replacing_it(s3_server, s3_store) -> None:
    pointer = parse_pointer(s3_store.put(digest_of(DATA), DATA))
    s3_store.put(digest_of(DATA), DATA)
    head = s3_server.client().head_object(Bucket=s3_store.bucket, Key=pointer.location)
    assert "dramatiq-ray-referenced" in head["Metadata"]  # the copy onto itself that moves LastModified


def test_s3_store_put_looks_again_when_the_object_changes_while_it_is_checked(s3_server, s3_bucket, caplog) -> None:
    # Given a corrupt object, and another writer that repairs it just before this store reads it to hash it
    client = s3_server.client()

    class RacedS3Store(S3Store):
        reads = 0

        def _sha256(self, key: str, etag: str) -> str:
            self.reads += 1
            if self.reads == 1:
                client.put_object(Bucket=self.bucket, Key=key, Body=DATA)
            return super()._sha256(key, etag)

    store = RacedS3Store(s3_bucket, endpoint_url=s3_server.endpoint_url, region="us-east-1")
    pointer = parse_pointer(store.put(digest_of(DATA), DATA))
    client.put_object(Bucket=s3_bucket, Key=pointer.location, Body=flip_one_byte(DATA))
    # When the payload is stored again
    with caplog.at_level(logging.WARNING, logger=STORES_LOGGER):
        store.put(digest_of(DATA), DATA)
    # Then the read of the ETag it had checked was refused (If-Match), it looked again, found the object intact
    # and kept it
    assert store.reads == 2
    assert repairs_logged(caplog) == []
    assert read_value(store, JSONEncoder(), pointer) == VALUE


def test_s3_store_put_replaces_a_corrupt_object_uploaded_in_parts(s3_server, s3_bucket) -> None:
    mib = 1024 * 1024
    store = S3Store(s3_bucket, endpoint_url=s3_server.endpoint_url, multipart_threshold=5 * mib, part_size=5 * mib)
    data = JSONEncoder().encode("m" * (6 * mib))
    pointer = parse_pointer(store.put(digest_of(data), data))
    s3_server.client().put_object(Bucket=s3_bucket, Key=pointer.location, Body=flip_one_byte(data))
    store.put(digest_of(data), data)
    assert read_value(store, JSONEncoder(), pointer) == "m" * (6 * mib)


def test_gcs_store_put_refreshes_an_intact_object_without_replacing_it(gcs_server, gcs_store) -> None:
    pointer = parse_pointer(gcs_store.put(digest_of(DATA), DATA))
    bucket = gcs_server.client().bucket(gcs_store.bucket)
    generation = bucket.get_blob(pointer.location).generation
    gcs_store.put(digest_of(DATA), DATA)
    blob = bucket.get_blob(pointer.location)
    assert blob.generation == generation  # the same object, not uploaded again
    assert "dramatiq-ray-referenced" in (blob.metadata or {})  # the metadata patch that moves ``updated``


# --- the integrity error says what was wrong ------------------------------------------------------------------


def test_verify_blob_names_the_sizes_when_the_size_is_wrong() -> None:
    pointer = parse_pointer(f"oversize://sha256/{digest_of(DATA)}?bytes={len(DATA)}")
    with pytest.raises(BlobIntegrityError) as caught:
        verify_blob(pointer, DATA[:5])
    assert f"expected {len(DATA)} bytes, found 5 bytes" in str(caught.value)
    assert "SHA-256" not in str(caught.value)


def test_verify_blob_says_more_than_the_expected_size_for_a_longer_blob() -> None:
    # Stores read at most one byte past the pointer's size, so only "more than" is known
    pointer = parse_pointer(f"oversize://sha256/{digest_of(DATA)}?bytes={len(DATA)}")
    with pytest.raises(BlobIntegrityError, match=f"expected {len(DATA)} bytes, found more than {len(DATA)} bytes"):
        verify_blob(pointer, DATA + b" ")


def test_verify_blob_names_the_digests_when_only_the_contents_are_wrong() -> None:
    pointer = parse_pointer(f"oversize://sha256/{digest_of(DATA)}?bytes={len(DATA)}")
    flipped = flip_one_byte(DATA)
    with pytest.raises(BlobIntegrityError) as caught:
        verify_blob(pointer, flipped)
    assert f"SHA-256 is {digest_of(flipped)} instead of {digest_of(DATA)}" in str(caught.value)
    assert f"the expected {len(DATA)} bytes" in str(caught.value)


def test_reading_a_truncated_blob_names_the_sizes_it_found(fs_store) -> None:
    pointer = parse_pointer(fs_store.put(digest_of(DATA), DATA))
    (Path(fs_store.path) / pointer.location).write_bytes(DATA[:7])
    with pytest.raises(BlobIntegrityError, match=f"expected {len(DATA)} bytes, found 7 bytes"):
        read_value(fs_store, JSONEncoder(), pointer)
