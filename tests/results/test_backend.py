"""SpillingBackend on its own, over the Redis and Stub result backends and a filesystem store."""

from __future__ import annotations

import json
import logging
import os
import pickle
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from dramatiq.results import ResultFailure, ResultMissing, ResultTimeout

from dramatiq_ray import DigestStore, FilesystemStore, SpilledResult, SpillingBackend, get_pointer
from dramatiq_ray.errors import (
    BlobIntegrityError,
    BlobNotFoundError,
    BlobReadError,
    ConfigurationError,
    DigestOnlyResultError,
    ForeignPointerError,
    InvalidPointerError,
)
from dramatiq_ray.payloads.pointers import digest_of, parse_pointer
from tests.results.conftest import make_message

TTL = 60_000


def payload_of_size(size: int) -> str:
    """A string whose JSON encoding is exactly ``size`` bytes (two quotes around it)."""
    return "x" * (size - 2)


def blob_files(store: FilesystemStore) -> list[Path]:
    return sorted(p for p in Path(store.path).rglob("*.json"))


def test_spilling_backend_keeps_a_result_of_exactly_max_inline_bytes_inline(any_backend, fs_store) -> None:
    backend = SpillingBackend(any_backend, store=fs_store, max_inline_bytes=100)
    message = make_message()
    backend.store_result(message, payload_of_size(100), TTL)
    assert get_pointer(message, backend=backend) is None
    assert backend.get_result(message) == payload_of_size(100)
    assert blob_files(fs_store) == []


def test_spilling_backend_spills_a_result_one_byte_over_and_returns_the_original(any_backend, fs_store) -> None:
    backend = SpillingBackend(any_backend, store=fs_store, max_inline_bytes=100)
    message = make_message()
    backend.store_result(message, payload_of_size(101), TTL)
    pointer = get_pointer(message, backend=backend)
    assert pointer is not None and pointer.startswith("resultfs://sha256/") and pointer.endswith("&bytes=101")
    assert backend.get_result(message) == payload_of_size(101)
    assert backend.get_result(message, block=True, timeout=5_000) == payload_of_size(101)


def test_spilling_backend_measures_the_bytes_the_encoder_produces(stub_backend, fs_store) -> None:
    # Dramatiq's JSON encoder escapes "é" as "\u00e9": 6 bytes each, so 16 of them plus quotes is 98 bytes.
    backend = SpillingBackend(stub_backend, store=fs_store, max_inline_bytes=98)
    inline, spilled = make_message(), make_message()
    backend.store_result(inline, "é" * 16, TTL)
    backend.store_result(spilled, "é" * 16 + "x", TTL)
    assert get_pointer(inline, backend=backend) is None
    assert get_pointer(spilled, backend=backend).endswith("&bytes=99")
    assert backend.get_result(spilled) == "é" * 16 + "x"


def test_spilling_backend_writes_a_content_addressed_file_with_the_encoded_payload(stub_backend, fs_store) -> None:
    backend = SpillingBackend(stub_backend, store=fs_store, max_inline_bytes=0)
    value = {"frame": 7, "pixels": [1, 2, 3]}
    backend.store_result(make_message(), value, TTL)
    data = json.dumps(value, separators=(",", ":")).encode()
    digest = digest_of(data)
    assert blob_files(fs_store) == [Path(fs_store.path) / digest[:2] / digest[2:4] / f"{digest}.json"]
    assert blob_files(fs_store)[0].read_bytes() == data


@pytest.mark.parametrize(
    "value", ["s3://bucket/k?bytes=3", f"resultfs://sha256/{'a' * 64}?rel=x&bytes=1", {"__dramatiq_ray_literal__": 1}]
)
def test_spilling_backend_round_trips_a_users_value_that_looks_like_a_pointer(any_backend, fs_store, value) -> None:
    backend = SpillingBackend(any_backend, store=fs_store)
    message = make_message()
    backend.store_result(message, value, TTL)
    assert backend.get_result(message) == value
    assert get_pointer(message, backend=backend) is None


def test_spilling_backend_stores_identical_payloads_once(stub_backend, fs_store) -> None:
    backend = SpillingBackend(stub_backend, store=fs_store, max_inline_bytes=0)
    first, second = make_message(), make_message()
    backend.store_result(first, "same", TTL)
    backend.store_result(second, "same", TTL)
    assert get_pointer(first, backend=backend) == get_pointer(second, backend=backend)
    assert len(blob_files(fs_store)) == 1


def test_spilling_backend_never_spills_without_a_store(stub_backend) -> None:
    backend = SpillingBackend(stub_backend, max_inline_bytes=0)
    message = make_message()
    backend.store_result(message, "big enough", TTL)
    assert get_pointer(message, backend=backend) is None
    assert backend.get_result(message) == "big enough"


def test_digest_store_result_raises_an_error_carrying_digest_and_size(any_backend) -> None:
    backend = SpillingBackend(any_backend, store=DigestStore(), max_inline_bytes=4)
    message = make_message()
    backend.store_result(message, "too large", TTL)
    with pytest.raises(DigestOnlyResultError) as caught:
        backend.get_result(message)
    data = b'"too large"'
    assert (caught.value.digest, caught.value.size) == (digest_of(data), len(data))
    assert caught.value.pointer == f"oversize://sha256/{digest_of(data)}?bytes={len(data)}"
    assert "FilesystemStore" in str(caught.value)


def test_spilling_backend_raises_integrity_error_for_a_corrupted_blob(stub_backend, fs_store) -> None:
    backend = SpillingBackend(stub_backend, store=fs_store, max_inline_bytes=0)
    message = make_message()
    backend.store_result(message, "original", TTL)
    [path] = blob_files(fs_store)
    path.write_bytes(b'"tampered"')  # same size, another digest
    with pytest.raises(BlobIntegrityError, match="corrupt"):
        backend.get_result(message)


def test_spilling_backend_raises_integrity_error_for_a_truncated_blob(stub_backend, fs_store) -> None:
    backend = SpillingBackend(stub_backend, store=fs_store, max_inline_bytes=0)
    message = make_message()
    backend.store_result(message, "original", TTL)
    [path] = blob_files(fs_store)
    path.write_bytes(b'"orig')
    with pytest.raises(BlobIntegrityError):
        backend.get_result(message)


def test_spilling_backend_raises_not_found_not_result_missing_for_a_deleted_blob(any_backend, fs_store) -> None:
    backend = SpillingBackend(any_backend, store=fs_store, max_inline_bytes=0)
    message = make_message()
    backend.store_result(message, "gone soon", TTL)
    [path] = blob_files(fs_store)
    path.unlink()
    with pytest.raises(BlobNotFoundError) as caught:
        backend.get_result(message)
    assert not isinstance(caught.value, ResultMissing)


def test_spilling_backend_read_error_clears_once_the_store_recovers(stub_backend, fs_store) -> None:
    # Given a spilled result whose blob cannot be read for a while (its path is briefly a directory: the
    # filesystem answers with an I/O error, as a flaky volume would; S3 and GCS outages are tested on servers)
    backend = SpillingBackend(stub_backend, store=fs_store, max_inline_bytes=0)
    message = make_message()
    backend.store_result(message, "value", TTL)
    [path] = blob_files(fs_store)
    data = path.read_bytes()
    path.unlink()
    path.mkdir()
    # When reading during the outage, then a BlobReadError (neither "not found" nor ResultMissing) is raised
    with pytest.raises(BlobReadError) as caught:
        backend.get_result(message)
    assert not isinstance(caught.value, (BlobNotFoundError, ResultMissing))
    # And after the recovery the value is returned
    path.rmdir()
    path.write_bytes(data)
    assert backend.get_result(message) == "value"


def test_spilling_backend_refuses_a_pointer_escaping_the_root_through_a_symlink(stub_backend, tmp_path) -> None:
    # Given a blob written outside the store root, and a symlink inside the root leading to it
    outside = FilesystemStore(tmp_path / "outside")
    inside = FilesystemStore(tmp_path / "inside")
    pointer = outside.put(digest_of(b'"secret"'), b'"secret"')
    rel = parse_pointer(pointer).location
    (tmp_path / "inside").mkdir()
    os.symlink(tmp_path / "outside" / rel.split("/")[0], tmp_path / "inside" / rel.split("/")[0])
    backend = SpillingBackend(stub_backend, store=inside)
    # When reading the pointer through the inside store, then it is refused
    with pytest.raises(ForeignPointerError, match="outside the store root"):
        backend.read_pointer(pointer)


def test_spilling_backend_refuses_a_pointer_of_another_scheme(stub_backend, fs_store) -> None:
    backend = SpillingBackend(stub_backend, store=fs_store)
    with pytest.raises(ForeignPointerError):
        backend.read_pointer(f"s3://bucket/p/ab/cd/{'abcd' + '0' * 60}.json?bytes=3")


def test_spilling_backend_raises_invalid_pointer_for_a_malformed_stored_pointer(stub_backend, fs_store) -> None:
    # Given something else wrote a malformed pointer-like string into the backend, bypassing the escape
    backend = SpillingBackend(stub_backend, store=fs_store)
    message = make_message()
    stub_backend.store_result(message, "resultfs://sha256/../../etc/passwd?bytes=1", TTL)
    with pytest.raises(InvalidPointerError):
        backend.get_result(message)


def test_spilling_backend_stores_an_unencodable_result_as_a_failure(any_backend, fs_store) -> None:
    backend = SpillingBackend(any_backend, store=fs_store)
    message = make_message()
    backend.store_result(message, {"when": object()}, TTL)
    with pytest.raises(ResultFailure, match="cannot be encoded by JSONEncoder") as caught:
        backend.get_result(message, block=True, timeout=5_000)
    assert caught.value.orig_exc_type == "TypeError"


def test_spilling_backend_keeps_stored_exceptions_as_result_failures(any_backend, fs_store) -> None:
    backend = SpillingBackend(any_backend, store=fs_store, max_inline_bytes=0)
    message = make_message()
    backend.store_exception(message, ValueError("boom"), TTL)
    with pytest.raises(ResultFailure, match="actor raised ValueError: boom"):
        backend.get_result(message)


def test_spilling_backend_keeps_missing_and_timeout_semantics(any_backend, fs_store) -> None:
    backend = SpillingBackend(any_backend, store=fs_store, max_inline_bytes=0)
    with pytest.raises(ResultMissing):
        backend.get_result(make_message())
    with pytest.raises(ResultTimeout):
        backend.get_result(make_message(), block=True, timeout=1_000)


def test_spilling_backend_falls_back_to_a_digest_and_warns_when_the_store_fails(stub_backend, tmp_path, caplog):
    # Given a filesystem store whose root is a regular file, so no blob can be written
    (tmp_path / "not-a-dir").write_text("")
    store = FilesystemStore(tmp_path / "not-a-dir")
    backend = SpillingBackend(stub_backend, store=store, max_inline_bytes=0, on_store_error="digest")
    message = make_message()
    # When a result is stored
    with caplog.at_level(logging.WARNING, logger="dramatiq_ray.results"):
        backend.store_result(message, "value", TTL)
    # Then it is kept as a digest; where the value was produced a warning names the store and the error, and the
    # result backend warns that only the digest is kept
    assert get_pointer(message, backend=backend).startswith("oversize://sha256/")
    produced, stored = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "not-a-dir" in produced and "BlobWriteError" in produced
    assert "not-a-dir" in stored and "keeping only its digest" in stored
    with pytest.raises(DigestOnlyResultError):
        backend.get_result(message)


def test_spilling_backend_stores_a_marker_as_its_pointer_without_spilling_again(stub_backend, fs_store) -> None:
    backend = SpillingBackend(stub_backend, store=fs_store, max_inline_bytes=0)
    pointer = fs_store.put(digest_of(b'"v"'), b'"v"')
    message = make_message()
    backend.store_result(message, SpilledResult(pointer), TTL)
    assert get_pointer(message, backend=backend) == pointer
    assert backend.get_result(message) == "v"
    assert len(blob_files(fs_store)) == 1


@pytest.mark.parametrize("bad", [-1, 1.5, "1024", True])
def test_spilling_backend_rejects_an_invalid_threshold(stub_backend, bad) -> None:
    with pytest.raises(ConfigurationError, match="max_inline_bytes must be an integer"):
        SpillingBackend(stub_backend, max_inline_bytes=bad)


def test_spilling_backend_rejects_something_that_is_not_a_backend_or_store(stub_backend) -> None:
    with pytest.raises(ConfigurationError, match="wraps a Dramatiq result backend"):
        SpillingBackend(object())  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="store must be a BlobStore"):
        SpillingBackend(stub_backend, store="/tmp/results")  # type: ignore[arg-type]


def test_spilling_backend_stores_concurrent_same_and_different_payloads(redis_backend, fs_store) -> None:
    # Given 16 threads, each storing 8 results: half the same payload, half its own
    backend = SpillingBackend(redis_backend, store=fs_store, max_inline_bytes=0)
    stored: list[tuple[Any, Any]] = []
    lock = threading.Lock()
    start = threading.Barrier(16)

    def work(n: int) -> None:
        start.wait()
        for i in range(8):
            message = make_message()
            value = "shared" * 100 if i % 2 else f"own-{n}-{i}"
            backend.store_result(message, value, TTL)
            with lock:
                stored.append((message, value))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    # Then every result reads back and each distinct payload is one file
    assert len(stored) == 128
    assert all(backend.get_result(message) == value for message, value in stored)
    assert len(blob_files(fs_store)) == 1 + 16 * 4
    assert not list(Path(fs_store.path).rglob("*.tmp-*"))


def test_spill_plan_spills_only_oversized_values(stub_backend, fs_store) -> None:
    backend = SpillingBackend(stub_backend, store=fs_store, max_inline_bytes=10)
    plan = backend.plan(10)
    assert plan.apply("small") == "small"
    marker = plan.apply("large enough to spill")
    assert isinstance(marker, SpilledResult)
    assert backend.read_pointer(marker.pointer) == "large enough to spill"
    assert plan.apply(marker) is marker


def test_spill_plan_without_a_threshold_never_spills(stub_backend, fs_store) -> None:
    # A result that goes nowhere (not stored, piped or called back) is never written to the store
    plan = SpillingBackend(stub_backend, store=fs_store, max_inline_bytes=0).plan(None)
    assert plan.apply("x" * 1000) == "x" * 1000
    assert not blob_files(fs_store)


def test_spill_plan_with_a_digest_store_keeps_only_the_digest(stub_backend) -> None:
    plan = SpillingBackend(stub_backend, store=DigestStore(), max_inline_bytes=0).plan(0)
    marker = plan.apply("value")
    assert isinstance(marker, SpilledResult)
    assert parse_pointer(marker.pointer).scheme == "oversize"


def test_store_result_follows_the_message_option(stub_backend, fs_store) -> None:
    # Given a backend spilling over 10 bytes, and a message allowing 1000
    backend = SpillingBackend(stub_backend, store=fs_store, max_inline_bytes=10)
    message = make_message(max_inline_bytes=1000)
    # When a 30-byte result is stored
    backend.store_result(message, "a value of about thirty bytes", 60_000)
    # Then it stays inline
    assert get_pointer(message, backend=backend) is None
    assert backend.get_result(message) == "a value of about thirty bytes"


def test_spill_plan_runs_in_another_process(stub_backend, fs_store, python_subprocess_env) -> None:
    # Given a plan pickled as a Ray task would receive it
    plan = SpillingBackend(stub_backend, store=fs_store, max_inline_bytes=0).plan(0)
    script = "import pickle, sys; plan = pickle.loads(sys.stdin.buffer.read()); print(plan.apply([1, 2, 3]).pointer)"
    # When another interpreter applies it
    result = subprocess.run(
        [sys.executable, "-c", script],
        input=pickle.dumps(plan),
        env=python_subprocess_env,
        capture_output=True,
        timeout=60,
    )
    # Then the blob it wrote reads back here
    assert result.returncode == 0, result.stderr
    assert SpillingBackend(stub_backend, store=fs_store).read_pointer(result.stdout.decode().strip()) == [1, 2, 3]


def test_filesystem_store_replaces_a_truncated_blob_when_the_payload_is_stored_again(stub_backend, fs_store) -> None:
    # Given a blob truncated on disk
    backend = SpillingBackend(stub_backend, store=fs_store, max_inline_bytes=0)
    backend.store_result(make_message(), "complete", TTL)
    only = blob_files(fs_store)[0]
    only.write_bytes(b'"comp')
    # When the same payload is stored again, then the new result reads back whole
    again = make_message()
    backend.store_result(again, "complete", TTL)
    assert backend.get_result(again) == "complete"
    assert blob_files(fs_store) == [only]


def test_spilling_backend_blocking_wait_outlasts_the_redis_client_socket_timeout(redis_url, redis_namespace) -> None:
    # Given a Redis client whose socket timeout (3 s) is shorter than the wait asked for (4 s)
    import redis
    from dramatiq.results import ResultTimeout
    from dramatiq.results.backends import RedisBackend

    from dramatiq_ray import SpillingBackend

    client = redis.Redis.from_url(redis_url, socket_timeout=3)
    backend = SpillingBackend(RedisBackend(client=client, namespace=redis_namespace))
    # When nothing arrives, then the wait ends with Dramatiq's ResultTimeout, not the client's socket error
    with pytest.raises(ResultTimeout):
        backend.get_result(make_message(), block=True, timeout=4_000)
    client.close()
