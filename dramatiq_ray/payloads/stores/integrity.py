"""Checking blobs: what is wrong with a stored blob before it is written again (and the WARNING when it is
repaired), verifying what a pointer reads back, and probing a store at worker boot."""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from collections.abc import Callable
from typing import TypeVar

from ...errors import BlobIntegrityError
from ..pointers import Pointer, as_pointer, digest_of, parse_pointer
from .base import BlobInfo, BlobStore

__all__ = ["log_repair", "probe", "stored_blob_problem", "verify_blob"]

logger = logging.getLogger(__name__)

_B = TypeVar("_B", bound=bytes | bytearray | memoryview)


def stored_blob_problem(digest: str, size: int, stored_size: int, hash_stored: Callable[[], str]) -> str | None:
    """Say what is wrong with a stored blob that should hold ``size`` bytes whose SHA-256 is ``digest``, or return
    ``None`` when it is intact.

    The size is compared first; ``hash_stored`` (which reads the stored bytes and returns their SHA-256) is only
    called when the sizes match, so a truncated or overlong blob is never read.
    """
    if stored_size != size:
        return f"it holds {stored_size} bytes instead of {size}"
    found = hash_stored()
    if found != digest:
        return f"it holds the expected {size} bytes but their SHA-256 is {found} instead of {digest}"
    return None


def log_repair(store: BlobStore, name: str, problem: str) -> None:
    """Log the WARNING of a store that replaced the corrupt blob ``name`` while storing its payload again."""
    logger.warning(
        "%s found the blob %s corrupt (%s) and replaced it with the payload being stored; results pointing to it "
        "read back again.",
        store.describe(),
        name,
        problem,
    )


def verify_blob(pointer: Pointer, data: _B) -> _B:
    """Return ``data`` when its size and SHA-256 match ``pointer``.

    ``data`` may hold at most one byte more than the pointer's size (stores read no further), so a longer blob is
    reported as "more than" the expected size. The digest is only computed when the size matches.

    Raises:
      BlobIntegrityError: they do not match; the data is never returned. The message says the sizes when the
        size is wrong, and the digests when only the contents are.
    """
    pointer = as_pointer(pointer)
    if len(data) != pointer.size:
        found = f"more than {pointer.size}" if len(data) > pointer.size else str(len(data))
        problem = f"expected {pointer.size} bytes, found {found} bytes"
    elif (actual := hashlib.sha256(data).hexdigest()) != pointer.digest:
        problem = f"it has the expected {pointer.size} bytes but their SHA-256 is {actual} instead of {pointer.digest}"
    else:
        return data
    raise BlobIntegrityError(
        f"The blob for {pointer.raw!r} is corrupt: {problem}. Its contents were not used; re-run the message: "
        "storing the same result again replaces the corrupt blob.",
        pointer=pointer.raw,
    )


def probe(store: BlobStore) -> None:
    """Write a small, unique probe blob to ``store``, read it back (checking size and SHA-256) and delete it.

    Raises:
      Exception: whatever the store raised (``BlobWriteError``, ``BlobReadError``, a client error), or
        ``BlobIntegrityError`` when what came back is not what was written.
    """
    data = b'{"dramatiq-ray-probe":"' + uuid.uuid4().hex.encode() + b'"}'
    pointer = parse_pointer(store.put(digest_of(data), data))
    verify_blob(pointer, store.get(pointer))
    store.delete_blob(BlobInfo(pointer.location, pointer.size, 0.0), cutoff=time.time() + 3600)
