"""Information rows of the spill case (no targets): how fast results are compressed and encrypted in memory.

  - compression: zstd and gzip (their default levels) of a compressible payload (JSON-like text of records):
    the compression ratio and MB/s (10^6 bytes of the uncompressed payload per second) to compress and to
    decompress, with ``dramatiq_ray.payloads.compression``;
  - encryption: AES-256-GCM (``dramatiq_ray.EncryptionKeys``) MB/s to encrypt and to decrypt random bytes.

Each time is the median of a few runs in the producer process, no store involved.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from ._harness import MIB, CaseReport, NotAvailable, measure_variant

METHODS = ("zstd", "gzip")


def compressible_text(size: int) -> bytes:
    """``size`` bytes of JSON-like text: records with repeating keys, ids, names and a few numbers."""
    chunks = []
    total = 0
    index = 0
    while total < size:
        record = {
            "id": index,
            "user": f"user-{index % 5000:05d}",
            "status": ("ok", "retry", "failed")[index % 3],
            "score": round((index * 37 % 1000) / 10, 1),
            "tags": ["alpha", "beta"] if index % 2 else ["gamma"],
        }
        chunk = (json.dumps(record, separators=(",", ":")) + "\n").encode()
        chunks.append(chunk)
        total += len(chunk)
        index += 1
    return b"".join(chunks)[:size]


def _median_seconds(operation: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """The median wall time of ``operation()`` over ``repeats`` runs, and its last result."""
    times = []
    result = None
    for _ in range(repeats):
        started = time.perf_counter()
        result = operation()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def _mb_per_s(size: int, seconds: float) -> float:
    return size / 1e6 / seconds if seconds > 0 else float("nan")


def measure_compression(method: str, data: bytes, repeats: int) -> dict[str, float]:
    try:
        from dramatiq_ray.payloads.compression import compress, decompress
    except Exception as error:
        raise NotAvailable(f"dramatiq_ray.payloads.compression does not import: {error}") from error
    compress_s, (used, packed) = _median_seconds(lambda: compress(data, method), repeats)
    if used is None:
        raise NotAvailable(f"{method} did not shrink the payload by 10%, so it was stored uncompressed")
    decompress_s, unpacked = _median_seconds(lambda: decompress(used, packed), repeats)
    if unpacked != data:
        raise AssertionError(f"{method} did not round-trip the payload")
    packed_size = packed.nbytes if isinstance(packed, memoryview) else len(packed)
    return {
        "payload_bytes": float(len(data)),
        "compressed_bytes": float(packed_size),
        "compression_ratio": len(data) / packed_size,
        "compress_mb_s": _mb_per_s(len(data), compress_s),
        "decompress_mb_s": _mb_per_s(len(data), decompress_s),
    }


def measure_encryption(data: bytes, repeats: int) -> dict[str, float]:
    try:
        from dramatiq_ray import EncryptionKeys
    except Exception as error:
        raise NotAvailable(f"dramatiq_ray.EncryptionKeys does not import: {error}") from error
    keys = EncryptionKeys({"bench": os.urandom(32)}, current="bench")
    encrypt_s, (key_id, sealed) = _median_seconds(lambda: keys.encrypt(data), repeats)
    decrypt_s, opened = _median_seconds(lambda: keys.decrypt(key_id, sealed), repeats)
    if opened != data:
        raise AssertionError("AES-GCM did not round-trip the payload")
    return {
        "payload_bytes": float(len(data)),
        "encrypt_mb_s": _mb_per_s(len(data), encrypt_s),
        "decrypt_mb_s": _mb_per_s(len(data), decrypt_s),
    }


def add_codec_rows(report: CaseReport, *, quick: bool) -> None:
    """Measure compression and encryption and add their rows (variants and notes, no targets) to ``report``."""
    size = MIB if quick else 64 * MIB
    repeats = 1 if quick else 3
    label = f"{size // MIB} MiB"
    text = compressible_text(size)
    for method in METHODS:
        name = f"{method} (default level), {label} of JSON-like text"
        numbers = measure_variant(report, name, partial(measure_compression, method, text, repeats))
        if numbers:
            report.notes.append(
                f"{name}: ratio {numbers['compression_ratio']:.1f}x "
                f"({numbers['compressed_bytes'] / MIB:.2f} MiB), compress {numbers['compress_mb_s']:.0f} MB/s, "
                f"decompress {numbers['decompress_mb_s']:.0f} MB/s (information, no target)."
            )
    del text
    name = f"AES-256-GCM, {label} of random bytes"
    random_bytes = os.urandom(size)
    numbers = measure_variant(report, name, lambda: measure_encryption(random_bytes, repeats))
    if numbers:
        report.notes.append(
            f"{name}: encrypt {numbers['encrypt_mb_s']:.0f} MB/s, decrypt {numbers['decrypt_mb_s']:.0f} MB/s "
            "(information, no target)."
        )
