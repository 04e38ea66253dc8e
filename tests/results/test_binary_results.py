"""Results of every type Ray produces: bytes, numpy arrays and pickled values, inline or spilled, compressed and
encrypted, through a worker on Ray and through pipelines."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import dramatiq
import numpy as np
import pytest
from dramatiq.results import ResultFailure
from dramatiq.results.backends import StubBackend

from dramatiq_ray import (
    BlobIntegrityError,
    ConfigurationError,
    EncryptionKeys,
    FilesystemStore,
    RayExecutionMiddleware,
    Results,
    SpillingBackend,
    get_pointer,
)
from dramatiq_ray.errors import DecryptionError, InvalidPointerError, PickleNotAllowedError
from dramatiq_ray.payloads.pointers import parse_pointer

RESULT_TIMEOUT_MS = 120_000
KEY_A = bytes(range(32))
KEY_B = bytes(range(1, 33))


class Point:
    """A value JSON cannot carry: only pickle can."""

    def __init__(self, x: int) -> None:
        self.x = x


@pytest.fixture
def store(tmp_path: Path) -> FilesystemStore:
    return FilesystemStore(tmp_path / "blobs")


def on_ray(broker: dramatiq.Broker, **results: Any) -> Results:
    middleware = Results(backend=StubBackend(), **results)
    broker.add_middleware(middleware)
    broker.add_middleware(RayExecutionMiddleware())
    return middleware


def test_readme_opening_example_returns_the_bytes_it_rendered(stub_broker, ray_local, store, start_worker) -> None:
    # Given the README's opening example with its body filled in
    on_ray(stub_broker, store=store)

    @dramatiq.actor(store_results=True, ray_options={"num_cpus": 1})
    def render(frame: int) -> bytes:
        return bytes([frame % 256]) * (2 * 1024 * 1024)

    start_worker(stub_broker)
    # Then the caller gets the bytes back, spilled as raw bytes (no JSON on the way)
    message = render.send(1)
    assert message.get_result(block=True, timeout=RESULT_TIMEOUT_MS) == b"\x01" * (2 * 1024 * 1024)
    assert parse_pointer(get_pointer(message)).codec == "raw"


def test_small_bytes_stay_inline_and_come_back_as_bytes(stub_broker, store, start_worker) -> None:
    stub_broker.add_middleware(Results(backend=StubBackend(), store=store))

    @dramatiq.actor(store_results=True)
    def small() -> bytes:
        return b"\x00\xffbinary"

    start_worker(stub_broker)
    message = small.send()
    assert message.get_result(block=True, timeout=RESULT_TIMEOUT_MS) == b"\x00\xffbinary"
    assert get_pointer(message) is None
    assert not list((Path(store.path)).rglob("*.json"))


def test_numpy_array_spilled_in_the_ray_task_comes_back_with_its_dtype_and_shape(
    stub_broker, ray_local, store, start_worker
) -> None:
    on_ray(stub_broker, store=store, max_inline_bytes=1024)

    @dramatiq.actor(store_results=True)
    def grid(n: int) -> Any:
        import numpy

        return numpy.arange(n * n, dtype=numpy.float32).reshape(n, n)

    start_worker(stub_broker)
    message = grid.send(64)
    value = message.get_result(block=True, timeout=RESULT_TIMEOUT_MS)
    assert isinstance(value, np.ndarray) and value.dtype == np.float32 and value.shape == (64, 64)
    assert np.array_equal(value, np.arange(64 * 64, dtype=np.float32).reshape(64, 64))
    assert parse_pointer(get_pointer(message)).codec == "npy"


def test_piped_numpy_array_arrives_as_an_array(stub_broker, ray_local, store, start_worker) -> None:
    on_ray(stub_broker, store=store, max_inline_bytes=1024)

    @dramatiq.actor
    def produce(n: int) -> Any:
        import numpy

        return numpy.ones(n, dtype=numpy.int64)

    @dramatiq.actor(store_results=True)
    def describe(value: Any) -> list[Any]:
        return [type(value).__name__, str(value.dtype), int(value.sum())]

    start_worker(stub_broker)
    for n in (10, 100_000):  # inline, then spilled
        pipe = dramatiq.pipeline([produce.message(n), describe.message()]).run()
        assert pipe.get_result(block=True, timeout=RESULT_TIMEOUT_MS) == ["ndarray", "int64", n]


def test_object_dtype_array_without_pickle_fails_the_result_naming_the_option(stub_broker, store, start_worker) -> None:
    stub_broker.add_middleware(Results(backend=StubBackend(), store=store))

    @dramatiq.actor(store_results=True, max_retries=0)
    def objects() -> Any:
        return np.array([object()], dtype=object)

    start_worker(stub_broker)
    with pytest.raises(ResultFailure, match="allow_pickle"):
        objects.send().get_result(block=True, timeout=RESULT_TIMEOUT_MS)


def test_pickle_is_used_only_where_allowed_and_read_only_by_a_reader_that_allows_it(
    stub_broker, store, start_worker
) -> None:
    results = Results(backend=StubBackend(), store=store, max_inline_bytes=0)
    stub_broker.add_middleware(results)

    @dramatiq.actor(store_results=True, max_retries=0)
    def refused() -> Any:
        return Point(1)

    @dramatiq.actor(store_results=True, allow_pickle=True)
    def allowed() -> Any:
        return {"point": Point(2), "payload": np.zeros(1000)}

    start_worker(stub_broker)
    with pytest.raises(ResultFailure, match="allow_pickle"):
        refused.send().get_result(block=True, timeout=RESULT_TIMEOUT_MS)
    message = allowed.send()
    stub_broker.join(allowed.queue_name)
    assert parse_pointer(get_pointer(message, block=True, timeout=RESULT_TIMEOUT_MS)).codec == "pickle"
    # The reader does not allow pickle: a pointer cannot make it unpickle
    with pytest.raises(PickleNotAllowedError, match="allow_pickle"):
        message.get_result()
    # A reader that allows it gets the value
    reader = SpillingBackend(StubBackend(), store=store, allow_pickle=True)
    assert reader.read_pointer(get_pointer(message)).get("point").x == 2


def test_compressed_spill_names_its_compression_and_reads_back(stub_broker, store, start_worker) -> None:
    stub_broker.add_middleware(Results(backend=StubBackend(), store=store, max_inline_bytes=0, compression="gzip"))

    @dramatiq.actor(store_results=True)
    def text(n: int) -> str:
        return "compressible " * n

    @dramatiq.actor(store_results=True)
    def noise(n: int) -> bytes:
        return os.urandom(n)

    start_worker(stub_broker)
    compressible, random_bytes = text.send(10_000), noise.send(100_000)
    assert compressible.get_result(block=True, timeout=RESULT_TIMEOUT_MS) == "compressible " * 10_000
    assert parse_pointer(get_pointer(compressible)).compression == "gzip"
    assert len(random_bytes.get_result(block=True, timeout=RESULT_TIMEOUT_MS)) == 100_000
    assert parse_pointer(get_pointer(random_bytes)).compression is None  # did not shrink by 10%


def test_encrypted_spill_names_its_key_and_needs_it_to_read(stub_broker, store, start_worker) -> None:
    keys = EncryptionKeys({"2026-11": KEY_A}, current="2026-11")
    stub_broker.add_middleware(Results(backend=StubBackend(), store=store, max_inline_bytes=0, encryption=keys))

    @dramatiq.actor(store_results=True)
    def secret() -> bytes:
        return b"secret payload" * 100

    start_worker(stub_broker)
    message = secret.send()
    assert message.get_result(block=True, timeout=RESULT_TIMEOUT_MS) == b"secret payload" * 100
    pointer = get_pointer(message)
    assert parse_pointer(pointer).key_id == "2026-11"
    stored = (Path(store.path) / parse_pointer(pointer).location).read_bytes()
    assert b"secret payload" not in stored
    with pytest.raises(DecryptionError, match="2026-11"):
        SpillingBackend(StubBackend(), store=store).read_pointer(pointer)
    rotated = EncryptionKeys({"2026-11": KEY_A, "2026-12": KEY_B}, current="2026-12")
    assert SpillingBackend(StubBackend(), store=store, encryption=rotated).read_pointer(pointer) == message.get_result()


def test_altered_compressed_or_encrypted_blob_is_an_integrity_error(store) -> None:
    keys = EncryptionKeys({"a": KEY_A}, current="a")
    backend = SpillingBackend(StubBackend(), store=store, max_inline_bytes=0, compression="gzip", encryption=keys)
    marker = backend.plan(0).apply(b"abc" * 10_000)
    blob = Path(store.path) / parse_pointer(marker.pointer).location
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    with pytest.raises(BlobIntegrityError):
        backend.read_pointer(marker.pointer)


def test_unknown_codec_or_compression_in_a_pointer_is_refused_naming_it(store) -> None:
    pointer = SpillingBackend(StubBackend(), store=store, max_inline_bytes=0).plan(0).apply(b"x" * 100).pointer
    with pytest.raises(InvalidPointerError, match="'parquet'"):
        parse_pointer(pointer.replace("codec=raw", "codec=parquet"))
    with pytest.raises(InvalidPointerError, match="'brotli'"):
        parse_pointer(pointer + "&z=brotli")


def test_invalid_codec_options_are_refused_at_declaration(stub_broker, store) -> None:
    stub_broker.add_middleware(Results(backend=StubBackend(), store=store))
    with pytest.raises(ConfigurationError, match="compression"):

        @dramatiq.actor(compression="rar")
        def compressed() -> None: ...

    with pytest.raises(ConfigurationError, match="allow_pickle"):

        @dramatiq.actor(allow_pickle="yes")
        def pickled() -> None: ...


def test_dataframe_and_arrow_table_results_come_back_as_themselves(stub_broker, ray_local, store, start_worker) -> None:
    import pandas as pd
    import pyarrow as pa

    on_ray(stub_broker, store=store, max_inline_bytes=256)

    @dramatiq.actor(store_results=True)
    def frame(n: int) -> Any:
        import pandas

        return pandas.DataFrame(
            {"x": range(n), "y": [float(i) / 2 for i in range(n)]}, index=[f"r{i}" for i in range(n)]
        )

    @dramatiq.actor(store_results=True)
    def table(n: int) -> Any:
        import pyarrow

        return pyarrow.table({"id": list(range(n))})

    start_worker(stub_broker)
    df, tb = frame.send(1000), table.send(1000)
    expected = pd.DataFrame({"x": range(1000), "y": [i / 2 for i in range(1000)]}, index=[f"r{i}" for i in range(1000)])
    pd.testing.assert_frame_equal(df.get_result(block=True, timeout=RESULT_TIMEOUT_MS), expected)
    assert tb.get_result(block=True, timeout=RESULT_TIMEOUT_MS).equals(pa.table({"id": list(range(1000))}))
    assert parse_pointer(get_pointer(df)).codec == parse_pointer(get_pointer(tb)).codec == "arrow"
