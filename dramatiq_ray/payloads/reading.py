"""Reading values back: from a pointer (read, verify, decrypt, decompress, decode) or from an inline value."""

from __future__ import annotations

import base64
from typing import Any

from dramatiq.encoder import Encoder

from .. import _otel
from ..errors import (
    BlobIntegrityError,
    BlobReadError,
    DecryptionError,
    DigestOnlyResultError,
    ForeignPointerError,
    PickleNotAllowedError,
    SpilledResultError,
)
from ._safe import describe_error, shorten
from .codecs import decode_value, undecodable
from .compression import decompress
from .marker import VALUE_KEY
from .pointers import Pointer, as_pointer
from .stores.base import BlobStore
from .stores.integrity import verify_blob

__all__ = ["read_inline", "read_value"]

#: The codecs whose values can use the payload's memory as their own.
_ARRAY_CODECS = ("npy", "pickle")


def read_value(
    store: BlobStore | None,
    encoder: Encoder,
    pointer: Pointer | str,
    *,
    allow_pickle: bool = False,
    encryption: Any = None,
) -> Any:
    """Read the bytes a pointer names from ``store``, check their size and SHA-256, then decrypt, decompress and
    decode them as the pointer says.

    Raises:
      InvalidPointerError: the pointer is malformed.
      DigestOnlyResultError: only the digest was kept.
      ForeignPointerError: ``store`` cannot read it (another store, or none).
      BlobNotFoundError, BlobIntegrityError, BlobReadError: the blob is missing, corrupt or unreadable.
      DecryptionError: it is encrypted and the key is missing or wrong.
      PickleNotAllowedError: it was pickled and ``allow_pickle`` is false.
    """
    pointer = as_pointer(pointer)
    if pointer.scheme == "oversize":
        why = (
            f"{store.describe()} could not take it when it was produced and on_store_error='digest' "
            "(RESULT_ON_STORE_ERROR=digest) kept only its digest: the value is lost; run the message again to "
            "produce it. With on_store_error='fail' (RESULT_ON_STORE_ERROR=fail, the default) a store failure "
            "fails the message and its retry stores the value"
            if store is not None and store.persistent
            else "only its digest was kept: the store is a DigestStore (RESULT_STORAGE_BACKEND='digest', the "
            "default), which keeps no values, so the value is lost. To keep large results set "
            "RESULT_STORAGE_BACKEND to filesystem, s3 or gcs (a FilesystemStore, S3Store or GCSStore passed to "
            "Results as store=), or raise MAX_RESULT_SIZE_BYTES (max_inline_bytes)"
        )
        raise DigestOnlyResultError(
            f"The result ({pointer.size} bytes, SHA-256 {pointer.digest}) was larger than max_inline_bytes, and {why}.",
            digest=pointer.digest,
            size=pointer.size,
            pointer=pointer.raw,
        )
    if store is None or not store.persistent:
        raise ForeignPointerError(
            f"The result was spilled to {pointer.raw!r} but this backend has no store that can read it; "
            "configure the store that wrote it."
        )
    # A payload decoded straight from the blob into arrays (npy, pickle) is read into a buffer of its own, which
    # the arrays then use as their memory: no copy after the read.
    owned = store.zero_copy and pointer.codec in _ARRAY_CODECS and pointer.compression is None and not pointer.key_id
    try:
        with _otel.span("spill read", attributes=_otel.payload_attributes(store, pointer.size, pointer.codec)):
            stored = store.get(pointer, writable=True) if owned else store.get(pointer)  # type: ignore[call-arg]
    except SpilledResultError:
        raise
    except Exception as error:
        raise BlobReadError(
            f"{store.describe()} could not read {pointer.raw!r}: {describe_error(error)}", pointer=pointer.raw
        ) from error
    verify_blob(pointer, stored)
    data: bytes | memoryview = stored if isinstance(stored, bytes) else memoryview(stored)
    if pointer.key_id is not None:
        if encryption is None:
            raise DecryptionError(
                f"The result {pointer.raw!r} is encrypted with key {pointer.key_id!r} and no encryption keys are "
                "configured here: pass encryption=EncryptionKeys(...) to Results (or the SpillingBackend).",
                key_id=pointer.key_id,
            )
        data = encryption.decrypt(pointer.key_id, data)
    if pointer.compression is not None:
        data = decompress(pointer.compression, data, pointer=pointer.raw)
    try:
        return decode_value(pointer.codec, data, encoder, allow_pickle=allow_pickle, pointer=pointer.raw, owned=owned)
    except (PickleNotAllowedError, SpilledResultError):
        raise
    except Exception as error:
        # Not chained: a decoder's error may quote the payload, and tracebacks are logged.
        raise undecodable(pointer.codec, data, error, pointer.raw) from None


def read_inline(value: Any, encoder: Encoder, *, allow_pickle: bool = False) -> Any:
    """The value an inline envelope (``{"__dramatiq_ray_value__": {"codec": ..., "data": <base64>}}``) carries.

    Raises:
      PickleNotAllowedError: it was pickled and ``allow_pickle`` is false.
      InvalidPointerError: it names an unknown codec.
      BlobIntegrityError, BlobReadError: its data is not base64, or does not decode as its codec.
    """
    inner = value[VALUE_KEY]
    codec = inner["codec"]
    try:
        data = base64.b64decode(inner["data"], validate=True)
    except ValueError as error:
        raise BlobIntegrityError(
            f"An inline {shorten(codec)} value ({len(inner['data'])} characters) is not valid base64 "
            f"({describe_error(error)}); it was altered on its way.",
            pointer="",
        ) from None
    try:
        return decode_value(codec, data, encoder, allow_pickle=allow_pickle)
    except (PickleNotAllowedError, SpilledResultError):
        raise
    except Exception as error:
        raise undecodable(codec, data, error, "") from None
