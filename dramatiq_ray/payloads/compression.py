"""Compression of result payloads: zstd, gzip or lzma (xz).

``compress`` keeps the compressed form only when it is at least 10% smaller than the input; otherwise it returns
``(None, data)`` and the payload is stored as is. Every format written carries a checksum of the uncompressed data
(zstd frame checksum, gzip CRC-32, xz CRC-64), so ``decompress`` detects altered data as well as truncated data.

``decompress`` never returns partial output: corrupt or truncated input, or output larger than ``max_size``
(a guard against decompression bombs), raises ``BlobIntegrityError``.

zstd needs ``pip install "dramatiq-ray[zstd]"`` and is imported only when used; gzip and lzma come with Python.
"""

from __future__ import annotations

import lzma
import zlib
from collections.abc import Sequence
from typing import Any

from ..errors import BlobIntegrityError, ConfigurationError, MissingDependencyError
from ._safe import describe_error, shorten

__all__ = ["COMPRESSIONS", "check_compression", "compress", "decompress", "seal"]

COMPRESSIONS: tuple[str, ...] = ("zstd", "gzip", "lzma")

#: Accepted levels per method (inclusive) and the level used when none is given.
LEVELS: dict[str, tuple[int, int]] = {"zstd": (-7, 22), "gzip": (1, 9), "lzma": (0, 9)}
DEFAULT_LEVELS: dict[str, int] = {"zstd": 3, "gzip": 6, "lzma": 6}

#: The compressed form is kept only when it is at most this fraction of the input size.
MAX_RATIO = 0.9

_GZIP_WBITS = 31  # zlib's gzip container


def check_compression(method: object, level: object, where: str) -> None:
    """Check a compression method and level given in ``where`` (e.g. ``"Results(compression=...)"``).

    ``method`` is ``None`` (no compression) or one of ``COMPRESSIONS``; ``level`` is ``None`` (the method's default)
    or an integer in the method's range. Raises ``ConfigurationError`` listing every problem.
    """
    problems: list[str] = []
    if method is not None and method not in COMPRESSIONS:
        problems.append(
            f"{where}: compression must be None or one of {', '.join(repr(name) for name in COMPRESSIONS)}, "
            f"not {shorten(repr(method))}."
        )
    if level is not None:
        if isinstance(level, bool) or not isinstance(level, int):
            problems.append(f"{where}: compression level must be None or an integer, not {shorten(repr(level))}.")
        elif method is None:
            problems.append(f"{where}: a compression level ({level}) was given without a compression method.")
        elif isinstance(method, str) and method in LEVELS:
            low, high = LEVELS[method]
            if not low <= level <= high:
                problems.append(f"{where}: {method} compression level must be between {low} and {high}, not {level}.")
    if problems:
        raise ConfigurationError(" ".join(problems), problems)


def _zstandard(feature: str) -> Any:
    try:
        import zstandard
    except ImportError:
        raise MissingDependencyError(feature, "zstd", "zstandard") from None
    return zstandard


def _size(data: bytes | memoryview) -> int:
    return data.nbytes if isinstance(data, memoryview) else len(data)


def seal(
    parts: Sequence[memoryview], method: str | None, level: int | None, encryption: Any
) -> tuple[Sequence[memoryview] | bytes | memoryview, str | None, str | None]:
    """What goes to the store for a serialized payload: compressed with ``method`` (when it saves 10%), then
    encrypted with ``encryption`` (an ``EncryptionKeys``, or ``None``). Returns (payload, compression used, key
    id); with neither step asked for, ``parts`` themselves, uncopied.
    """
    if method is None and encryption is None:
        return parts, None, None
    joined = parts[0] if len(parts) == 1 else b"".join(parts)
    compression, data = compress(joined, method, level)
    key_id = None
    if encryption is not None:
        key_id, data = encryption.encrypt(data)
    return data, compression, key_id


def compress(
    data: bytes | memoryview, method: str | None, level: int | None = None
) -> tuple[str | None, bytes | memoryview]:
    """Compress ``data`` with ``method``; return (method, compressed) or (None, data) when ``method`` is None or the
    compressed form is not at least 10% smaller.

    Raises:
      ConfigurationError: the method or level is not valid.
      MissingDependencyError: ``method`` is ``"zstd"`` and zstandard is not installed.
    """
    if method is None:
        return None, data
    check_compression(method, level, "compress()")
    chosen = DEFAULT_LEVELS[method] if level is None else level
    if method == "zstd":
        zstandard = _zstandard("zstd compression of results")
        compressor = zstandard.ZstdCompressor(level=chosen, write_checksum=True, write_content_size=True)
        compressed: bytes = compressor.compress(data)
    elif method == "gzip":
        packer = zlib.compressobj(chosen, zlib.DEFLATED, _GZIP_WBITS)
        compressed = packer.compress(data) + packer.flush()
    else:
        compressed = lzma.compress(data, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC64, preset=chosen)
    if len(compressed) > _size(data) * MAX_RATIO:
        return None, data
    return method, compressed


def decompress(
    method: str | None, data: bytes | memoryview, *, max_size: int | None = None, pointer: str = ""
) -> bytes:
    """Inflate ``data`` compressed by ``compress`` with ``method`` (``None``: returned as bytes, as is).

    ``max_size`` bounds the inflated size; ``pointer`` only names the blob in error messages.

    Raises:
      BlobIntegrityError: the input is corrupt or truncated, inflates beyond ``max_size``, or ``method`` is not
        one of ``COMPRESSIONS``.
      MissingDependencyError: ``method`` is ``"zstd"`` and zstandard is not installed.
    """
    if method is None:
        if max_size is not None and _size(data) > max_size:
            raise _too_large(None, max_size, pointer)
        return bytes(data)
    if method == "zstd":
        output = _inflate_zstd(data, max_size, pointer)
    elif method == "gzip":
        output = _inflate_stream(method, zlib.decompressobj(_GZIP_WBITS), data, max_size, pointer, zlib.error)
    elif method == "lzma":
        output = _inflate_stream(
            method, lzma.LZMADecompressor(format=lzma.FORMAT_XZ), data, max_size, pointer, lzma.LZMAError
        )
    else:
        raise BlobIntegrityError(
            f"Unknown compression {shorten(repr(method))}: expected one of {', '.join(COMPRESSIONS)}.", pointer=pointer
        )
    return output


def _too_large(method: str | None, max_size: int, pointer: str) -> BlobIntegrityError:
    what = f"{method}-compressed payload" if method else "payload"
    return BlobIntegrityError(
        f"The {what} inflates to more than max_size={max_size} bytes; it was not decompressed.", pointer=pointer
    )


def _corrupt(method: str, problem: str, pointer: str) -> BlobIntegrityError:
    return BlobIntegrityError(f"The {method}-compressed payload is corrupt or truncated: {problem}.", pointer=pointer)


def _inflate_stream(
    method: str,
    inflater: Any,
    data: bytes | memoryview,
    max_size: int | None,
    pointer: str,
    error_type: type[Exception],
) -> bytes:
    try:
        # One byte past max_size is enough to know the output is too large.
        output: bytes = inflater.decompress(data) if max_size is None else inflater.decompress(data, max_size + 1)
    except error_type as error:
        raise _corrupt(method, describe_error(error), pointer) from None
    if max_size is not None and len(output) > max_size:
        raise _too_large(method, max_size, pointer)
    if not inflater.eof:
        raise _corrupt(method, "the stream ends before its end marker", pointer)
    if inflater.unused_data:
        raise _corrupt(method, f"{len(inflater.unused_data)} unexpected bytes follow the stream", pointer)
    return output


def _inflate_zstd(data: bytes | memoryview, max_size: int | None, pointer: str) -> bytes:
    zstandard = _zstandard("zstd decompression of results")
    try:
        declared = zstandard.frame_content_size(data)
    except zstandard.ZstdError as error:
        raise _corrupt("zstd", describe_error(error), pointer) from None
    if declared >= 0 and max_size is not None and declared > max_size:
        raise _too_large("zstd", max_size, pointer)
    decompressor = zstandard.ZstdDecompressor()
    try:
        if declared >= 0:
            output: bytes = decompressor.decompress(data)
        elif max_size is not None:
            # Unknown content size: bounded output buffer (0 would mean "no bound" to zstandard).
            output = decompressor.decompress(data, max_output_size=max(max_size, 1))
        else:
            inflater = decompressor.decompressobj()
            output = inflater.decompress(data)
            if not inflater.eof:
                raise _corrupt("zstd", "the frame ends early", pointer)
    except zstandard.ZstdError as error:
        raise _corrupt("zstd", describe_error(error), pointer) from None
    if max_size is not None and len(output) > max_size:
        raise _too_large("zstd", max_size, pointer)
    return output
