"""Payloads as buffers: what a store is handed to write, without copying it.

A payload is one bytes-like object (``bytes``, ``bytearray``, ``memoryview``) or a sequence of them written back
to back (an ``.npy`` header, then the array's own memory). The helpers here look at it as flat byte views, hash it
while it is written, and hand it to clients that want a file (boto3, google-cloud-storage) without joining it.
"""

from __future__ import annotations

import hashlib
import io
import threading
from collections.abc import Callable, Sequence
from typing import TypeAlias, cast

__all__ = [
    "Buffer",
    "PartsReader",
    "Payload",
    "body_of",
    "digest_parts",
    "join_parts",
    "parts_of",
    "read_into",
    "size_of",
    "slice_parts",
    "whole",
    "write_hashing",
]

Buffer: TypeAlias = bytes | bytearray | memoryview
#: One bytes-like object, or several written back to back.
Payload: TypeAlias = Buffer | Sequence[Buffer]

#: Payloads from this size on are hashed in a helper thread while the caller writes them: hashlib and file or
#: socket writes release the GIL, so the two run side by side. Below it, a thread costs more than it saves.
THREAD_MIN_BYTES = 1024 * 1024


def _flat(buffer: Buffer) -> memoryview:
    view = buffer if isinstance(buffer, memoryview) else memoryview(buffer)
    if view.ndim == 1 and view.format == "B" and view.c_contiguous:
        return view
    if view.c_contiguous:
        try:
            return view.cast("B")
        except TypeError:  # formats cast() refuses (e.g. "c" in an unusual layout): copy them
            pass
    return memoryview(view.tobytes())


def parts_of(payload: Payload) -> tuple[memoryview, ...]:
    """The payload as flat byte views (format ``B``, one dimension), in order. Contiguous buffers are not copied;
    a strided ``memoryview`` is copied once.

    Raises:
      TypeError: ``payload`` is neither a bytes-like object nor a sequence of them.
    """
    if isinstance(payload, bytes | bytearray | memoryview):
        return (_flat(payload),)
    if isinstance(payload, str) or not isinstance(payload, Sequence):
        raise TypeError(f"A payload is a bytes-like object or a sequence of them, not {type(payload).__name__}.")
    return tuple(_flat(part) for part in cast("Sequence[Buffer]", payload))


def size_of(parts: Sequence[memoryview]) -> int:
    """The payload's size in bytes."""
    return sum(part.nbytes for part in parts)


def digest_parts(parts: Sequence[memoryview]) -> str:
    """The SHA-256 (hex) of the parts back to back, computed in one pass without joining them."""
    hasher = hashlib.sha256()
    for part in parts:
        hasher.update(part)
    return hasher.hexdigest()


def join_parts(parts: Sequence[memoryview]) -> bytes | memoryview:
    """One bytes-like object: the only part itself (no copy), or the parts joined (one copy)."""
    return parts[0] if len(parts) == 1 else b"".join(parts)


def whole(view: memoryview) -> bytes | bytearray | memoryview:
    """The ``bytes`` or ``bytearray`` a flat view covers entirely (clients accept those and not views), else the
    view itself."""
    owner = view.obj
    if isinstance(owner, bytes | bytearray) and len(owner) == view.nbytes:
        return owner
    return view


def write_hashing(
    parts: Sequence[memoryview], write: Callable[[memoryview], object], then: Callable[[], object] = lambda: None
) -> str:
    """Pass each part to ``write`` while hashing the payload, then call ``then`` (an fsync), and return the
    payload's SHA-256 (hex): one pass over the bytes. From :data:`THREAD_MIN_BYTES` on, the hashing runs in a
    helper thread beside the writes and ``then``.

    Raises:
      Exception: whatever ``write`` or ``then`` raised (the helper thread is joined first).
    """
    hasher = hashlib.sha256()
    if size_of(parts) < THREAD_MIN_BYTES:
        for part in parts:
            hasher.update(part)
            write(part)
        then()
        return hasher.hexdigest()
    failures: list[BaseException] = []

    def hash_all() -> None:
        try:
            for part in parts:
                hasher.update(part)
        except BaseException as error:  # pragma: no cover - hashing memory does not fail
            failures.append(error)

    helper = threading.Thread(target=hash_all, name="dramatiq-ray-sha256", daemon=True)
    helper.start()
    try:
        for part in parts:
            write(part)
        then()
    finally:
        helper.join()
    if failures:  # pragma: no cover
        raise failures[0]
    return hasher.hexdigest()


def slice_parts(parts: Sequence[memoryview], start: int, end: int) -> list[memoryview]:
    """Views of the bytes from ``start`` to ``end`` (exclusive) of the parts back to back, without copying."""
    pieces = []
    offset = 0
    for part in parts:
        low, high = max(start, offset), min(end, offset + part.nbytes)
        if low < high:
            pieces.append(part[low - offset : high - offset])
        offset += part.nbytes
    return pieces


def body_of(parts: Sequence[memoryview]) -> bytes | bytearray | PartsReader:
    """What to hand a client as a request body: the ``bytes`` or ``bytearray`` itself when the payload is one
    whole object (clients send those as they are), else a :class:`PartsReader` over the parts."""
    if len(parts) == 1:
        owner = whole(parts[0])
        if not isinstance(owner, memoryview):
            return owner
    return PartsReader(parts)


def read_into(readinto: Callable[[memoryview], int | None], limit: int, chunk: int) -> bytearray:
    """Read up to ``limit`` bytes with ``readinto`` (a file's or a response's), at most ``chunk`` at a time, into
    a new ``bytearray`` the caller owns: no intermediate copy of the whole payload."""
    buffer = bytearray(limit)
    filled = 0
    with memoryview(buffer) as view:
        while filled < limit:
            count = readinto(view[filled : min(limit, filled + chunk)])
            if not count:
                break
            filled += count
    del buffer[filled:]
    return buffer


class PartsReader(io.RawIOBase):
    """A seekable, read-only file over the parts of a payload, for clients that take a file (boto3's ``Body``,
    google-cloud-storage's ``upload_from_file``). Reading copies only what is read; a read that covers a whole
    ``bytes`` part returns that object itself."""

    def __init__(self, parts: Sequence[memoryview]) -> None:
        super().__init__()
        self._parts = tuple(parts)
        self._size = size_of(self._parts)
        self._position = 0

    def __len__(self) -> int:
        return self._size

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise ValueError("negative seek position")
        self._position = base + offset
        return self._position

    def _pieces(self, start: int, end: int) -> list[memoryview]:
        return slice_parts(self._parts, start, end)

    def read(self, size: int | None = -1) -> bytes:
        end = self._size if size is None or size < 0 else min(self._size, self._position + size)
        pieces = self._pieces(self._position, end)
        self._position = max(self._position, end)
        if len(pieces) == 1 and isinstance(pieces[0].obj, bytes) and len(pieces[0].obj) == pieces[0].nbytes:
            return pieces[0].obj
        return b"".join(pieces)

    def readall(self) -> bytes:
        return self.read(-1)

    def readinto(self, buffer: Buffer) -> int:  # type: ignore[override]
        target = _flat(buffer) if not isinstance(buffer, memoryview) else buffer.cast("B")
        end = min(self._size, self._position + target.nbytes)
        written = 0
        for piece in slice_parts(self._parts, self._position, end):
            target[written : written + piece.nbytes] = piece
            written += piece.nbytes
        self._position += written
        return written
