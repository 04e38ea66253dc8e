"""Compression of result payloads: round trips, the 10% rule, corrupt input and the decompression-bomb guard."""

from __future__ import annotations

import os

import pytest

from dramatiq_ray.errors import BlobIntegrityError, ConfigurationError
from dramatiq_ray.payloads.compression import COMPRESSIONS, check_compression, compress, decompress

TEXT = b"".join(b"row %d: the quick brown fox jumps over the lazy dog\n" % index for index in range(5000))


@pytest.mark.parametrize("method", COMPRESSIONS)
def test_compress_round_trips_with_each_method(method: str) -> None:
    used, packed = compress(TEXT, method)
    assert used == method
    assert len(packed) < len(TEXT) * 0.9
    assert decompress(used, packed) == TEXT


@pytest.mark.parametrize("method", COMPRESSIONS)
def test_compress_accepts_a_memoryview_and_an_explicit_level(method: str) -> None:
    used, packed = compress(memoryview(TEXT), method, level=1)
    assert decompress(used, memoryview(packed)) == TEXT


@pytest.mark.parametrize("method", COMPRESSIONS)
def test_compress_returns_incompressible_data_uncompressed(method: str) -> None:
    data = os.urandom(64 * 1024)
    used, packed = compress(data, method)
    assert used is None
    assert packed is data


def test_compress_without_method_returns_the_data_itself() -> None:
    assert compress(TEXT, None) == (None, TEXT)


def test_decompress_without_method_returns_bytes() -> None:
    assert decompress(None, memoryview(b"abc")) == b"abc"


@pytest.mark.parametrize("method", COMPRESSIONS)
def test_decompress_rejects_truncated_input(method: str) -> None:
    _, packed = compress(TEXT, method)
    with pytest.raises(BlobIntegrityError):
        decompress(method, bytes(packed)[: len(packed) // 2])


@pytest.mark.parametrize("method", COMPRESSIONS)
def test_decompress_rejects_input_missing_its_last_bytes(method: str) -> None:
    _, packed = compress(TEXT, method)
    with pytest.raises(BlobIntegrityError):
        decompress(method, bytes(packed)[:-3])


@pytest.mark.parametrize("method", COMPRESSIONS)
def test_decompress_rejects_altered_input(method: str) -> None:
    _, packed = compress(TEXT, method)
    altered = bytearray(packed)
    altered[len(altered) // 2] ^= 0x55
    with pytest.raises(BlobIntegrityError):
        decompress(method, bytes(altered))


@pytest.mark.parametrize("method", COMPRESSIONS)
def test_decompress_rejects_garbage(method: str) -> None:
    with pytest.raises(BlobIntegrityError):
        decompress(method, b"this was never compressed")


@pytest.mark.parametrize("method", COMPRESSIONS)
def test_decompress_refuses_to_inflate_beyond_max_size(method: str) -> None:
    bomb = b"\x00" * (8 * 1024 * 1024)
    _, packed = compress(bomb, method)
    assert len(packed) < 64 * 1024
    with pytest.raises(BlobIntegrityError, match="max_size"):
        decompress(method, packed, max_size=1024 * 1024)


@pytest.mark.parametrize("method", COMPRESSIONS)
def test_decompress_accepts_output_of_exactly_max_size(method: str) -> None:
    _, packed = compress(TEXT, method)
    assert decompress(method, packed, max_size=len(TEXT)) == TEXT


def test_decompress_bounds_zstd_frames_without_a_content_size() -> None:
    import zstandard

    packed = zstandard.ZstdCompressor(write_content_size=False).compress(b"\x00" * 4_000_000)
    with pytest.raises(BlobIntegrityError):
        decompress("zstd", packed, max_size=1000)
    assert decompress("zstd", packed) == b"\x00" * 4_000_000


def test_decompress_rejects_an_unknown_method() -> None:
    with pytest.raises(BlobIntegrityError, match="'brotli'"):
        decompress("brotli", b"x")


@pytest.mark.parametrize("method,level", [(None, None), ("zstd", 19), ("zstd", None), ("gzip", 9), ("lzma", 0)])
def test_check_compression_accepts_valid_settings(method: str | None, level: int | None) -> None:
    check_compression(method, level, "Results(compression=...)")


@pytest.mark.parametrize(
    "method,level,fragment",
    [
        ("snappy", None, "'snappy'"),
        ("gzip", 10, "between 1 and 9"),
        ("zstd", 23, "between -7 and 22"),
        ("gzip", "9", "integer"),
        ("gzip", True, "integer"),
        (None, 3, "without a compression method"),
    ],
)
def test_check_compression_rejects_bad_settings_naming_where(method: object, level: object, fragment: str) -> None:
    with pytest.raises(ConfigurationError, match=fragment) as caught:
        check_compression(method, level, "Results(compression=...)")
    assert "Results(compression=...)" in str(caught.value)
