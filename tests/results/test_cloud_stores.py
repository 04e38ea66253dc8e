"""S3Store (moto's server over HTTP) and GCSStore (the GCS emulator over HTTP) behind a SpillingBackend."""

from __future__ import annotations

import logging
import pickle
import subprocess
import sys
from typing import Any

import pytest
from dramatiq.results import ResultFailure

from dramatiq_ray import GCSStore, S3Store, SpillingBackend, get_pointer
from dramatiq_ray.errors import (
    BlobIntegrityError,
    BlobNotFoundError,
    BlobReadError,
    DigestOnlyResultError,
    ForeignPointerError,
    MissingDependencyError,
)
from dramatiq_ray.payloads.pointers import digest_of, parse_pointer
from tests._services import free_port
from tests.results.conftest import make_message

TTL = 60_000
VALUE = {"frames": list(range(200))}


@pytest.fixture(params=["s3", "gcs"])
def cloud(request: pytest.FixtureRequest) -> tuple[Any, Any]:
    """(store, server) for S3 and for GCS."""
    server = request.getfixturevalue(f"{request.param}_server")
    return request.getfixturevalue(f"{request.param}_store"), server


def test_cloud_store_round_trips_a_spilled_result(cloud, stub_backend) -> None:
    store, _ = cloud
    backend = SpillingBackend(stub_backend, store=store, max_inline_bytes=10)
    message = make_message()
    backend.store_result(message, VALUE, TTL)
    pointer = parse_pointer(get_pointer(message, backend=backend))
    assert (pointer.scheme, pointer.bucket, pointer.prefix) == (store.scheme, store.bucket, "dramatiq-ray/results")
    assert backend.get_result(message) == VALUE


def test_cloud_store_stores_identical_payloads_once(cloud, stub_backend) -> None:
    store, _ = cloud
    backend = SpillingBackend(stub_backend, store=store, max_inline_bytes=0)
    first, second = make_message(), make_message()
    backend.store_result(first, VALUE, TTL)
    backend.store_result(second, VALUE, TTL)
    assert get_pointer(first, backend=backend) == get_pointer(second, backend=backend)
    assert len(list(store.list_blobs())) == 1
    assert backend.get_result(second) == VALUE


@pytest.mark.parametrize("mutation", ["bucket", "prefix"])
def test_cloud_store_refuses_another_bucket_or_prefix_without_any_request(cloud, stub_backend, mutation) -> None:
    # Given a store configured against an endpoint where nothing listens: any request would fail differently
    store, _ = cloud
    dead = f"http://127.0.0.1:{free_port()}"
    offline = (S3Store if store.scheme == "s3" else GCSStore)(store.bucket, endpoint_url=dead)
    other = "another-bucket" if mutation == "bucket" else store.bucket
    prefix = "dramatiq-ray/results" if mutation == "bucket" else "elsewhere"
    raw = f"{store.scheme}://{other}/{prefix}/ab/cd/{'abcd' + '0' * 60}.json?bytes=3"
    with pytest.raises(ForeignPointerError, match="Refusing pointer"):
        SpillingBackend(stub_backend, store=offline).read_pointer(raw)


def test_cloud_store_raises_not_found_for_a_deleted_object(cloud, stub_backend) -> None:
    store, _ = cloud
    backend = SpillingBackend(stub_backend, store=store, max_inline_bytes=0)
    message = make_message()
    backend.store_result(message, VALUE, TTL)
    [blob] = list(store.list_blobs())
    assert store.delete_blob(blob, cutoff=float("inf"))
    with pytest.raises(BlobNotFoundError):
        backend.get_result(message)


def test_s3_store_raises_integrity_error_for_a_replaced_object(s3_server, s3_store, stub_backend) -> None:
    backend = SpillingBackend(stub_backend, store=s3_store, max_inline_bytes=0)
    message = make_message()
    backend.store_result(message, "original", TTL)
    key = parse_pointer(get_pointer(message, backend=backend)).location
    s3_server.client().put_object(Bucket=s3_store.bucket, Key=key, Body=b'"tampered"')
    with pytest.raises(BlobIntegrityError):
        backend.get_result(message)


def test_gcs_store_raises_integrity_error_for_a_replaced_object(gcs_server, gcs_store, stub_backend) -> None:
    backend = SpillingBackend(stub_backend, store=gcs_store, max_inline_bytes=0)
    message = make_message()
    backend.store_result(message, "original", TTL)
    key = parse_pointer(get_pointer(message, backend=backend)).location
    gcs_server.client().bucket(gcs_store.bucket).blob(key).upload_from_string(b'"tampered"')
    with pytest.raises(BlobIntegrityError):
        backend.get_result(message)


def test_s3_store_uploads_a_large_payload_in_parts(s3_server, s3_bucket, stub_backend) -> None:
    mib = 1024 * 1024
    store = S3Store(s3_bucket, endpoint_url=s3_server.endpoint_url, multipart_threshold=5 * mib, part_size=5 * mib)
    backend = SpillingBackend(stub_backend, store=store)
    message = make_message()
    value = "m" * (6 * mib)
    backend.store_result(message, value, TTL)
    key = parse_pointer(get_pointer(message, backend=backend)).location
    head = s3_server.client().head_object(Bucket=s3_bucket, Key=key)
    assert head["ETag"].strip('"').endswith("-2")  # a multipart ETag names its part count
    assert backend.get_result(message) == value


def test_cloud_store_outage_while_storing_fails_the_result_naming_the_store(cloud, stub_backend, caplog) -> None:
    store, server = cloud
    backend = SpillingBackend(stub_backend, store=store, max_inline_bytes=0)
    message = make_message()
    server.stop()
    try:
        with caplog.at_level(logging.ERROR, logger="dramatiq_ray.results.backend"):
            backend.store_result(message, VALUE, TTL)
    finally:
        server.start()
    # Never quietly reduced to a digest: the result is a failure that names the store and what to do
    with pytest.raises(ResultFailure, match="on_store_error"):
        backend.get_result(message)
    assert any(store.describe() in r.getMessage() for r in caplog.records if r.levelno == logging.ERROR)


def test_cloud_store_outage_while_storing_falls_back_to_a_digest_when_asked(cloud, stub_backend, caplog) -> None:
    store, server = cloud
    backend = SpillingBackend(stub_backend, store=store, max_inline_bytes=0, on_store_error="digest")
    message = make_message()
    server.stop()
    try:
        with caplog.at_level(logging.WARNING, logger="dramatiq_ray.results.backend"):
            backend.store_result(message, VALUE, TTL)
    finally:
        server.start()
    assert get_pointer(message, backend=backend).startswith("oversize://")
    assert any(store.describe() in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    with pytest.raises(DigestOnlyResultError):
        backend.get_result(message)


def test_cloud_store_outage_while_reading_raises_then_recovers(cloud, stub_backend) -> None:
    store, server = cloud
    backend = SpillingBackend(stub_backend, store=store, max_inline_bytes=0)
    message = make_message()
    backend.store_result(message, VALUE, TTL)
    server.stop()
    try:
        with pytest.raises(BlobReadError) as caught:
            backend.get_result(message)
        assert not isinstance(caught.value, BlobNotFoundError)
    finally:
        server.start()
    assert backend.get_result(message) == VALUE


def test_cloud_store_pickles_without_its_client_and_works_in_another_process(
    cloud, stub_backend, python_subprocess_env
) -> None:
    # Given a store with a cached client, pickled as a Ray task would receive it
    store, _ = cloud
    store._client()
    data = pickle.dumps(store)
    assert b"_cached_client" not in data
    # When another interpreter writes a blob through it
    script = "import pickle, sys; s = pickle.loads(sys.stdin.buffer.read()); print(s.put('ab' * 32, b'[1]'))"
    result = subprocess.run(
        [sys.executable, "-c", script], input=data, env=python_subprocess_env, capture_output=True, timeout=60
    )
    # Then its pointer does not verify (the digest is made up) but the bytes were written where this store reads
    assert result.returncode == 0, result.stderr
    assert store.get(parse_pointer(result.stdout.decode().strip())) == b"[1]"


def test_cloud_stores_name_the_extra_to_install_when_their_client_is_missing(monkeypatch) -> None:
    # Simulated: the clients are installed here, so their import is blocked for this test only.
    import builtins

    real_import = builtins.__import__

    def blocked(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.split(".")[0] in ("boto3", "google"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", blocked)
    with pytest.raises(MissingDependencyError, match=r"dramatiq-ray\[s3\]"):
        S3Store("bucket")
    with pytest.raises(MissingDependencyError, match=r"dramatiq-ray\[gcs\]"):
        GCSStore("bucket")


@pytest.mark.parametrize("bucket, prefix", [("Bad_Bucket", "p"), ("bucket", "../up"), ("bucket", "a//b")])
def test_cloud_stores_reject_invalid_locations(bucket: str, prefix: str) -> None:
    with pytest.raises(ValueError, match="Invalid bucket"):
        S3Store(bucket, prefix, client=object())


def test_gcs_store_reaches_the_emulator_named_by_storage_emulator_host(gcs_server, gcs_bucket, monkeypatch) -> None:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_server.endpoint_url)
    store = GCSStore(gcs_bucket)
    pointer = parse_pointer(store.put("ab" * 32, b"[7]"))
    assert gcs_server.client().bucket(gcs_bucket).blob(pointer.location).download_as_bytes() == b"[7]"


def test_s3_store_handles_concurrent_writers_of_same_and_different_payloads(s3_store, stub_backend) -> None:
    import threading

    backend = SpillingBackend(stub_backend, store=s3_store, max_inline_bytes=0)
    start = threading.Barrier(8)
    stored: list[tuple[Any, Any]] = []
    lock = threading.Lock()

    def work(n: int) -> None:
        start.wait()
        for value in ("shared", f"own-{n}"):
            message = make_message()
            backend.store_result(message, value, TTL)
            with lock:
                stored.append((message, value))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(stored) == 16
    assert all(get_pointer(message, backend=backend).startswith("s3://") for message, _ in stored)
    assert all(backend.get_result(message) == value for message, value in stored)
    assert len(list(s3_store.list_blobs())) == 9


def test_s3_store_refreshes_an_existing_object_when_its_payload_is_stored_again(s3_server, s3_store) -> None:
    # Given an object already stored
    data = b'"again"'
    pointer = parse_pointer(s3_store.put(digest_of(data), data))
    head = s3_server.client().head_object(Bucket=s3_store.bucket, Key=pointer.location)
    assert "dramatiq-ray-referenced" not in head["Metadata"]
    # When the same payload is stored again, then the object is kept (create-only) and marked as referenced,
    # which moves its LastModified forward for lifecycle rules and gc_blobs
    assert s3_store.put(pointer.digest, data) == pointer.raw
    head = s3_server.client().head_object(Bucket=s3_store.bucket, Key=pointer.location)
    assert "dramatiq-ray-referenced" in head["Metadata"]
    assert s3_store.get(pointer) == data
