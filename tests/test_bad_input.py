"""Hostile and malformed input: pointers, settings, results, exceptions, actor options and messages.

Each gets the library's own clear error, the worker keeps running, and no data of another result is ever
returned. Property-based with hypothesis where the input space is open.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import dramatiq
import pytest
from dramatiq.results import ResultFailure
from dramatiq.results.backends import StubBackend
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dramatiq_ray import (
    BlobIntegrityError,
    ConfigurationError,
    FilesystemStore,
    ForeignPointerError,
    InvalidPointerError,
    RayExecutionMiddleware,
    Results,
    S3Store,
    SpillingBackend,
    load_settings,
)
from dramatiq_ray.payloads.pointers import blob_name, digest_of, parse_pointer
from tests._services import free_port

RESULT_TIMEOUT_MS = 120_000
HEX = "ab" * 32
FUNCTION_SCOPED = [HealthCheck.function_scoped_fixture]


def encoded(value: Any) -> bytes:
    return StubBackend().encoder.encode(value)


@pytest.fixture
def spilling(tmp_path: Path) -> SpillingBackend:
    return SpillingBackend(StubBackend(), store=FilesystemStore(tmp_path / "blobs"), max_inline_bytes=0)


# --- pointers ------------------------------------------------------------------------------------------------


@given(st.text(max_size=300) | st.binary(max_size=100) | st.integers() | st.none())
def test_parse_pointer_refuses_anything_off_the_grammar_with_its_own_error_only(raw: Any) -> None:
    try:
        pointer = parse_pointer(raw)
    except InvalidPointerError as error:
        assert "pointer" in str(error)
    else:
        assert pointer.raw == raw and len(pointer.digest) == 64


@pytest.mark.parametrize(
    "raw",
    [
        f"resultfs://sha256/{HEX}?rel=../../etc/{HEX}.json&bytes=1",
        f"resultfs://sha256/{HEX}?rel=/etc/passwd&bytes=1",
        f"resultfs://sha256/{HEX}?rel=ab/ab/%2e%2e/{HEX}.json&bytes=1",
        f"s3://bucket/../../ab/ab/{HEX}.json?bytes=1",
        f"gs://bucket/./ab/ab/{HEX}.json?bytes=1",
        f"resultfs://sha256/{HEX}?rel=ab/ab/{HEX}.json&bytes=1&rel=../x",
    ],
)
def test_traversal_pointer_is_refused_before_any_read(spilling: SpillingBackend, raw: str) -> None:
    with pytest.raises(InvalidPointerError):
        spilling.read_pointer(raw)


def test_pointer_to_a_foreign_bucket_is_refused_without_any_request() -> None:
    # Given an S3 store whose endpoint answers nothing (any request would fail with a connection error instead)
    store = S3Store("ours", endpoint_url=f"http://127.0.0.1:{free_port()}", region="us-east-1")
    backend = SpillingBackend(StubBackend(), store=store, max_inline_bytes=0)
    # When a pointer names another bucket, then it is refused as foreign
    with pytest.raises(ForeignPointerError):
        backend.read_pointer(f"s3://theirs/dramatiq-ray/results/ab/ab/{HEX}.json?bytes=10")


@settings(max_examples=40, suppress_health_check=FUNCTION_SCOPED, deadline=None)
@given(first=st.text(min_size=1, max_size=50), second=st.text(min_size=1, max_size=50))
def test_pointer_with_a_wrong_digest_never_returns_another_results_data(
    spilling: SpillingBackend, first: str, second: str
) -> None:
    # Given two stored results, and the blob of the first replaced by the second's bytes (a mix-up, an attack)
    if first == second:
        return
    pointer = spilling.plan(0).apply(first).pointer
    data = encoded(second)
    assert spilling.store is not None
    target = Path(spilling.store.path) / blob_name(digest_of(encoded(first)))  # type: ignore[attr-defined]
    target.write_bytes(data)
    # When the first pointer is read, then the second's data is refused, never returned
    with pytest.raises(BlobIntegrityError):
        spilling.read_pointer(pointer)
    target.write_bytes(encoded(first))
    assert spilling.read_pointer(pointer) == first


@pytest.mark.parametrize("size", [0, 1, 10**17, 999_999_999_999_999_999])
def test_pointer_with_a_wrong_or_huge_size_is_refused_without_returning_the_data(spilling, size: int) -> None:
    pointer = spilling.plan(0).apply("value").pointer
    lying = pointer.rsplit("bytes=", 1)[0] + f"bytes={size}"
    with pytest.raises(BlobIntegrityError):
        spilling.read_pointer(lying)


def test_pointer_with_a_size_beyond_the_grammar_is_refused(spilling) -> None:
    with pytest.raises(InvalidPointerError):
        spilling.read_pointer(f"resultfs://sha256/{HEX}?rel={blob_name(HEX)}&bytes={10**30}")


# --- settings ------------------------------------------------------------------------------------------------


@settings(max_examples=60)
@given(
    name=st.sampled_from(
        ["DEFAULT_CONCURRENCY", "MAX_TASK_ATTEMPTS", "RETRY_BACKOFF_SECONDS", "MAX_RESULT_SIZE_BYTES", "RUNNER"]
    ),
    value=st.text(max_size=20) | st.integers(max_value=-1) | st.floats(allow_nan=True) | st.lists(st.integers()),
)
def test_malformed_setting_is_refused_with_a_configuration_error_naming_it(name: str, value: Any) -> None:
    try:
        load_settings({name: value}, environ={})
    except ConfigurationError as error:
        assert name in str(error)


@pytest.mark.parametrize(
    "environ",
    [
        {"DRAMATIQ_RAY_DEFAULT_CONCURRENCY": "ten"},
        {"DRAMATIQ_RAY_RAY_RUNTIME_ENV": "{not json"},
        {"DRAMATIQ_RAY_RESULT_STORAGE_BACKEND": "tape"},
        {"DRAMATIQ_RAY_MAX_TASK_ATTEMPTS": "0"},
    ],
)
def test_malformed_environment_setting_is_refused_with_a_configuration_error(environ: dict[str, str]) -> None:
    with pytest.raises(ConfigurationError) as caught:
        load_settings(environ=environ)
    assert caught.value.problems


# --- a worker given bad results, bad exceptions, unknown actors ----------------------------------------------


@pytest.fixture
def ray_broker(stub_broker, ray_local) -> Any:
    stub_broker.add_middleware(Results(backend=StubBackend()))
    stub_broker.add_middleware(RayExecutionMiddleware())
    return stub_broker


def test_result_that_cannot_be_encoded_fails_the_message_promptly_and_the_worker_keeps_running(
    ray_broker, start_worker
) -> None:
    @dramatiq.actor(broker=ray_broker, store_results=True, max_retries=0)
    def returns_a_set(value: int) -> Any:
        return {value}

    @dramatiq.actor(broker=ray_broker, store_results=True, max_retries=0)
    def double(value: int) -> int:
        return value * 2

    start_worker(ray_broker, threads=2)
    bad = returns_a_set.send(1)
    with pytest.raises(ResultFailure, match="cannot be encoded"):
        bad.get_result(block=True, timeout=RESULT_TIMEOUT_MS)
    assert double.send(21).get_result(block=True, timeout=RESULT_TIMEOUT_MS) == 42


class HoldsALock(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.lock = threading.Lock()


def test_exception_that_cannot_be_pickled_is_stored_as_a_failure_and_the_worker_keeps_running(
    ray_broker, start_worker
) -> None:
    @dramatiq.actor(broker=ray_broker, store_results=True, max_retries=0)
    def raises_unpicklable() -> None:
        raise HoldsALock("nope")

    @dramatiq.actor(broker=ray_broker, store_results=True, max_retries=0)
    def double(value: int) -> int:
        return value * 2

    start_worker(ray_broker, threads=2)
    with pytest.raises(ResultFailure) as caught:
        raises_unpicklable.send().get_result(block=True, timeout=RESULT_TIMEOUT_MS)
    assert "HoldsALock" in str(caught.value)
    assert double.send(4).get_result(block=True, timeout=RESULT_TIMEOUT_MS) == 8


def test_message_for_an_unknown_actor_is_dropped_and_the_worker_keeps_running(ray_broker, start_worker) -> None:
    @dramatiq.actor(broker=ray_broker, store_results=True)
    def double(value: int) -> int:
        return value * 2

    start_worker(ray_broker, threads=2)
    ray_broker.enqueue(
        dramatiq.Message(queue_name=double.queue_name, actor_name="no_such_actor", args=(), kwargs={}, options={})
    )
    assert double.send(5).get_result(block=True, timeout=RESULT_TIMEOUT_MS) == 10


@pytest.mark.parametrize(
    "options",
    [
        {"ray": "yes"},
        {"ray_options": "num_cpus=2"},
        {"ray_options": {"num_cpus": "two"}},
        {"ray_options": {"no_such_option": 1}},
    ],
)
def test_actor_option_of_the_wrong_type_is_refused_at_declaration(ray_broker, options: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):

        @dramatiq.actor(broker=ray_broker, **options)
        def anything() -> None: ...


def test_invalid_max_inline_bytes_option_is_refused_at_declaration_naming_the_option(ray_broker) -> None:
    # Given a spill threshold that is not a number of bytes, Then the actor's declaration fails naming the option
    with pytest.raises(ConfigurationError, match="max_inline_bytes"):

        @dramatiq.actor(broker=ray_broker, store_results=True, max_retries=0, max_inline_bytes="big")
        def answer() -> int:
            return 42


@pytest.mark.parametrize("cloud", ["s3", "gcs"])
def test_cloud_pointer_with_a_huge_size_is_refused_without_returning_the_data(request, cloud: str) -> None:
    from dramatiq_ray import GCSStore

    server = request.getfixturevalue(f"{cloud}_server")
    bucket = request.getfixturevalue(f"{cloud}_bucket")
    store: Any = (
        S3Store(bucket, endpoint_url=server.endpoint_url, region="us-east-1")
        if cloud == "s3"
        else GCSStore(bucket, endpoint_url=server.endpoint_url, retry_timeout=1.0)
    )
    backend = SpillingBackend(StubBackend(), store=store, max_inline_bytes=0)
    pointer = backend.plan(0).apply("value").pointer
    lying = pointer.rsplit("bytes=", 1)[0] + f"bytes={10**17}"
    with pytest.raises(BlobIntegrityError):
        backend.read_pointer(lying)
    assert backend.read_pointer(pointer) == "value"


def test_misspelled_ray_option_is_refused_at_declaration_with_a_suggestion(ray_broker) -> None:
    from dramatiq_ray import RayOptionsError

    with pytest.raises(RayOptionsError) as refused:

        @dramatiq.actor(broker=ray_broker, ray_options={"num_cpu": 2})
        def anything() -> None: ...

    # The public error type itself (nothing private in the traceback), a suggestion, and only public options listed
    assert type(refused.value) is RayOptionsError
    assert "did you mean 'num_cpus'?" in str(refused.value)
    assert "_labels" not in str(refused.value)


# --- the same bad pointer gets the same error from every entry -----------------------------------------------

NOT_POINTERS = [12345, None, b"resultfs://sha256/x", ["s3://bucket/key"], "resultfs://sha256/nothing-else"]


def _store(request: pytest.FixtureRequest, kind: str) -> Any:
    from dramatiq_ray import DigestStore, GCSStore

    if kind == "filesystem":
        return FilesystemStore(request.getfixturevalue("tmp_path") / "blobs")
    if kind == "digest":
        return DigestStore()
    server = request.getfixturevalue(f"{kind}_server")
    bucket = request.getfixturevalue(f"{kind}_bucket")
    if kind == "s3":
        return S3Store(bucket, endpoint_url=server.endpoint_url, region="us-east-1")
    return GCSStore(bucket, endpoint_url=server.endpoint_url, retry_timeout=1.0)


@pytest.mark.parametrize("raw", NOT_POINTERS)
@pytest.mark.parametrize("kind", ["filesystem", "digest", "s3", "gcs"])
def test_every_pointer_entry_refuses_a_non_pointer_with_invalid_pointer_error(
    request: pytest.FixtureRequest, kind: str, raw: Any
) -> None:
    from dramatiq_ray.payloads.reading import read_value
    from dramatiq_ray.payloads.stores.integrity import verify_blob

    store = _store(request, kind)
    backend = SpillingBackend(StubBackend(), store=store, max_inline_bytes=0)
    entries = {
        "SpillingBackend.read_pointer": lambda: backend.read_pointer(raw),
        "read_value": lambda: read_value(store, backend.encoder, raw),
        "store.get": lambda: store.get(raw),
        "store.presign": lambda: store.presign(raw),
        "verify_blob": lambda: verify_blob(raw, b""),
    }
    for name, entry in entries.items():
        with pytest.raises(InvalidPointerError, match="pointer"):
            entry()
        assert name  # each entry raised the library's error, not AttributeError or TypeError


def test_get_pointer_refuses_a_stored_malformed_pointer_as_reading_it_does(spilling: SpillingBackend) -> None:
    from dramatiq_ray import get_pointer

    # Given a backend holding a string that starts like a pointer but is not one (written by hand, truncated)
    message = dramatiq.Message(queue_name="default", actor_name="render", args=(), kwargs={}, options={})
    spilling.backend.store_result(message, "resultfs://sha256/truncated", 60_000)
    # When its pointer is asked for, then the error is the one reading the result gives
    with pytest.raises(InvalidPointerError):
        get_pointer(message, backend=spilling)
    with pytest.raises(InvalidPointerError):
        spilling.get_result(message)
