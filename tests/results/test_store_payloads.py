"""Stores take payloads as buffers and write them in one pass: bytes, bytearray, memoryview or a sequence of parts
(an ``.npy`` header and the array's memory) go to the filesystem, S3 (moto's server) and GCS (the emulator)
without a copy, hashed once; and a value read back into arrays uses the buffer it was read into."""

from __future__ import annotations

import hashlib
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy
import pytest

from dramatiq_ray import BlobStore, FilesystemStore, SpillingBackend
from dramatiq_ray.errors import BlobWriteError, ConfigurationError
from dramatiq_ray.payloads.pointers import Pointer, digest_of, parse_pointer, resultfs_pointer
from dramatiq_ray.payloads.stores._payload import PartsReader
from tests.results.conftest import make_message

MIB = 1024 * 1024
TTL = 60_000
DATA = bytes(range(256)) * 4096  # 1 MiB: hashed in a helper thread while it is written


@pytest.fixture(params=["filesystem", "s3", "gcs"])
def any_store(request: pytest.FixtureRequest) -> Any:
    """Each test using this runs on a real directory, on moto's S3 server and on the GCS emulator."""
    return request.getfixturevalue({"filesystem": "fs_store", "s3": "s3_store", "gcs": "gcs_store"}[request.param])


PAYLOADS: dict[str, Callable[[], Any]] = {
    "bytes": lambda: DATA,
    "bytearray": lambda: bytearray(DATA),
    "memoryview": lambda: memoryview(DATA),
    "memoryview-of-a-slice": lambda: memoryview(b"x" + DATA)[1:],
    "parts": lambda: (memoryview(DATA)[:1000], DATA[1000:]),
}


@contextmanager
def traced_peak() -> Iterator[list[int]]:
    """The peak of Python-traced memory (bytes, bytearrays, numpy arrays) allocated inside the block."""
    peak: list[int] = []
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        yield peak
        peak.append(tracemalloc.get_traced_memory()[1] - base)
    finally:
        tracemalloc.stop()


# --- put takes buffers ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(PAYLOADS))
def test_store_put_takes_any_bytes_like_payload_and_computes_its_digest(any_store, kind: str) -> None:
    pointer = parse_pointer(any_store.put(None, PAYLOADS[kind]()))
    assert (pointer.digest, pointer.size) == (digest_of(DATA), len(DATA))
    assert any_store.get(pointer) == DATA


def test_store_put_with_a_digest_returns_the_same_pointer_as_without(any_store) -> None:
    assert any_store.put(digest_of(DATA), memoryview(DATA)) == any_store.put(None, DATA)


def test_store_get_writable_returns_a_bytearray_the_caller_owns(any_store) -> None:
    pointer = parse_pointer(any_store.put(None, DATA))
    data = any_store.get(pointer, writable=True)
    assert type(data) is bytearray
    assert data == DATA


# --- the filesystem store hashes while writing ---------------------------------------------------------------


def test_filesystem_store_hashes_while_writing_and_refuses_a_mismatching_digest(fs_store) -> None:
    with pytest.raises(BlobWriteError, match=f"its SHA-256 is {digest_of(DATA)}, not the digest {'0' * 64}"):
        fs_store.put("0" * 64, DATA)
    assert [path for path in Path(fs_store.path).rglob("*") if path.is_file()] == []  # nothing, not even a temporary


def test_filesystem_store_put_writes_a_memoryview_without_copying_it(fs_store) -> None:
    payload = memoryview(bytearray(16 * MIB))
    with traced_peak() as peak:
        fs_store.put(None, payload)
    assert peak[0] < MIB


def test_filesystem_store_get_writable_reads_into_one_buffer(fs_store) -> None:
    pointer = parse_pointer(fs_store.put(None, bytes(16 * MIB)))
    with traced_peak() as peak:
        data = fs_store.get(pointer, writable=True)
    assert len(data) == 16 * MIB
    assert peak[0] < 17 * MIB


def test_filesystem_store_put_leaves_no_temporary_file_beside_the_blob(fs_store) -> None:
    pointer = parse_pointer(fs_store.put(None, DATA))
    files = sorted(str(path.relative_to(fs_store.path)) for path in Path(fs_store.path).rglob("*") if path.is_file())
    assert files == [pointer.location]


def test_filesystem_store_without_fsync_stores_and_reads_back(tmp_path) -> None:
    store = FilesystemStore(tmp_path / "blobs", fsync=False)
    pointer = parse_pointer(store.put(None, DATA))
    assert store.get(pointer) == DATA


def test_filesystem_store_refuses_an_fsync_that_is_not_a_bool(tmp_path) -> None:
    with pytest.raises(ConfigurationError, match="fsync must be True or False"):
        FilesystemStore(tmp_path, fsync="no")  # type: ignore[arg-type]


# --- S3 and GCS ----------------------------------------------------------------------------------------------


def test_s3_store_creates_a_new_object_with_one_request(s3_store) -> None:
    calls: list[str] = []
    s3_store._client().meta.events.register("before-call.s3", lambda model, **_: calls.append(model.name))
    s3_store.put(None, DATA)
    assert calls == ["PutObject"]


def test_s3_store_hands_bytes_to_boto3_as_they_are_and_other_buffers_as_views(s3_store) -> None:
    bodies: list[Any] = []
    s3_store._client().meta.events.register(
        "before-parameter-build.s3.PutObject", lambda params, **_: bodies.append(params["Body"])
    )
    array = numpy.arange(MIB // 8, dtype=numpy.float64)
    s3_store.put(None, DATA)
    s3_store.put(None, (b"header", memoryview(array).cast("B")))
    assert bodies[0] is DATA
    assert isinstance(bodies[1], PartsReader)
    assert numpy.shares_memory(numpy.asarray(bodies[1]._parts[1]), array)


# --- through the plan: spilling and reading back arrays ------------------------------------------------------


def test_spilling_a_numpy_array_to_the_filesystem_copies_none_of_it(fs_store, stub_backend) -> None:
    backend = SpillingBackend(stub_backend, store=fs_store, max_inline_bytes=0)
    array = numpy.random.default_rng(0).standard_normal(2 * MIB)  # 16 MiB
    message = make_message()
    with traced_peak() as peak:
        backend.store_result(message, array, TTL)
    assert peak[0] < MIB


def test_reading_a_spilled_numpy_array_from_the_filesystem_copies_none_of_it(fs_store, stub_backend) -> None:
    backend = SpillingBackend(stub_backend, store=fs_store, max_inline_bytes=0)
    array = numpy.arange(2 * MIB, dtype=numpy.float64)  # 16 MiB
    message = make_message()
    backend.store_result(message, array, TTL)
    with traced_peak() as peak:
        value = backend.get_result(message)
    numpy.testing.assert_array_equal(value, array)
    assert peak[0] < 17 * MIB  # the array's own memory (the buffer it was read into), and no second copy


def test_reading_a_spilled_numpy_array_gives_a_writable_array(any_store, stub_backend) -> None:
    backend = SpillingBackend(stub_backend, store=any_store, max_inline_bytes=0)
    array = numpy.arange(1000, dtype=numpy.float64).reshape(10, 100)
    message = make_message()
    backend.store_result(message, array, TTL)
    value = backend.get_result(message)
    numpy.testing.assert_array_equal(value, array)
    value[0, 0] = -1.0
    assert value[0, 0] == -1.0


# --- stores of your own keep the old contract ----------------------------------------------------------------


class DictStore(BlobStore):
    """A store written against the old contract: ``put(digest, bytes)`` and ``get(pointer)`` only."""

    scheme = "resultfs"

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}

    def put(self, digest: str, data: bytes) -> str:  # type: ignore[override]
        assert isinstance(digest, str) and type(data) is bytes
        assert hashlib.sha256(data).hexdigest() == digest
        self.blobs[digest] = data
        return resultfs_pointer(digest, len(data))

    def get(self, pointer: Pointer) -> bytes:
        return self.blobs[pointer.digest]


def test_a_store_without_zero_copy_is_handed_bytes_with_their_digest_and_read_as_before(stub_backend) -> None:
    store = DictStore()
    backend = SpillingBackend(stub_backend, store=store, max_inline_bytes=0)
    array = numpy.arange(100, dtype=numpy.int16)
    message = make_message()
    backend.store_result(message, array, TTL)
    [data] = store.blobs.values()
    assert data.startswith(b"\x93NUMPY")
    value = backend.get_result(message)
    numpy.testing.assert_array_equal(value, array)
    assert value.flags.writeable
