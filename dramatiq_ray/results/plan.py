"""The one spill rule, and the one reader of spilled values: a small, picklable plan that runs wherever an actor
body runs (the worker thread, a Ray task, a Ray job).

Before the body, :meth:`SpillPlan.read_inputs` replaces spilled-value markers among the arguments (piped
results) with their values; after it, :meth:`SpillPlan.apply` writes an oversized result to the store and returns
a :class:`~dramatiq_ray.results.SpilledResult` marker, which travels instead of the value: back from Ray, into a
pipeline's next message or an ``on_success`` callback, and into the result backend, which stores its pointer.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from dramatiq.encoder import Encoder

from ..errors import (
    BlobReadError,
    BlobWriteError,
    ConfigurationError,
    DigestOnlyResultError,
    ForeignPointerError,
    SpilledResultError,
)
from .marker import SpilledResult, is_spilled_shape
from .pointers import Pointer, digest_of, digest_pointer, parse_pointer
from .stores.base import BlobStore, verify_blob

__all__ = [
    "DEFAULT_MAX_INLINE_BYTES",
    "MAX_INLINE_BYTES_OPTION",
    "ON_STORE_ERROR",
    "SpillPlan",
    "check_on_store_error",
    "check_threshold",
    "read_value",
]

logger = logging.getLogger(__name__)

#: Results whose encoded size is at most this many bytes stay in the result backend (1 MiB).
DEFAULT_MAX_INLINE_BYTES = 1024 * 1024
#: The actor (and message) option overriding the threshold.
MAX_INLINE_BYTES_OPTION = "max_inline_bytes"


#: What a store failure does to a result: ``"fail"`` fails the message (retryably); ``"digest"`` keeps only the
#: result's digest (reading it raises DigestOnlyResultError).
ON_STORE_ERROR = ("fail", "digest")


def check_on_store_error(value: object, where: str) -> str:
    """Return ``value`` when it is one of :data:`ON_STORE_ERROR`.

    Raises:
      ConfigurationError: it is not.
    """
    if value not in ON_STORE_ERROR:
        raise ConfigurationError(f"{where} on_store_error must be 'fail' or 'digest', got {value!r}.")
    return str(value)


def check_threshold(value: object, where: str) -> int:
    """Return ``value`` when it is a valid threshold (an ``int`` >= 0).

    Raises:
      ConfigurationError: it is not.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigurationError(
            f"{where} max_inline_bytes must be an integer number of bytes >= 0 (0 spills every result), got {value!r}."
        )
    return value


@dataclass(frozen=True)
class SpillPlan:
    """How one message's values are spilled and read back, in any process.

    Parameters:
      store: where oversized values go and spilled ones are read from (``None``: nowhere; nothing spills, and a
        spilled input cannot be read).
      encoder: turns values into bytes and back (the result backend's encoder).
      max_inline_bytes: the largest encoded result that stays inline, in bytes; ``None`` when the result is not
        forwarded anywhere (not stored, not piped, no ``on_success``), so it is never spilled.
      on_store_error: what a store that cannot take an oversized result does: ``"fail"`` raises
        :class:`~dramatiq_ray.BlobWriteError` (the message fails, and the retry policy decides), ``"digest"``
        keeps only the digest, with a WARNING.
    """

    store: BlobStore | None
    encoder: Encoder
    max_inline_bytes: int | None
    on_store_error: str = "fail"

    def apply(self, value: Any) -> Any:
        """Return ``value``, or a :class:`SpilledResult` marker when its encoded size is over the threshold.

        A value that does not encode is returned unchanged (the result backend then stores the failure).

        Raises:
          BlobWriteError: the store cannot be written and ``on_store_error`` is ``"fail"``.
        """
        if self.max_inline_bytes is None or self.store is None or value is None or isinstance(value, SpilledResult):
            return value
        try:
            data = self.encoder.encode(value)
        except Exception:
            return value
        if len(data) <= self.max_inline_bytes:
            return value
        digest = digest_of(data)
        try:
            return SpilledResult(self.store.put(digest, data))
        except Exception as error:
            if self.on_store_error != "digest":
                raise BlobWriteError(
                    f"{self.store.describe()} could not store a {len(data)}-byte result ({type(error).__name__}: "
                    f"{error}); the message failed and the retry policy decides. Fix the store, or set "
                    "on_store_error='digest' to keep only the digest of results the store cannot take."
                ) from error
            logger.warning(
                "%s could not store a %d-byte result (%s: %s); the result backend will keep only its digest "
                "(on_store_error='digest').",
                self.store.describe(),
                len(data),
                type(error).__name__,
                error,
            )
            return SpilledResult(digest_pointer(digest, len(data)))

    def read(self, pointer: Pointer | str) -> Any:
        """Read, verify and decode the value a pointer names (see :func:`read_value`)."""
        return read_value(self.store, self.encoder, pointer)

    def read_inputs(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Replace spilled-value markers among an actor's arguments with their values."""
        if not any(map(is_spilled_shape, args)) and not any(map(is_spilled_shape, kwargs.values())):
            return args, kwargs
        return (
            tuple(self._input(value) for value in args),
            {key: self._input(value) for key, value in kwargs.items()},
        )

    def _input(self, value: Any) -> Any:
        return self.read(next(iter(value.values()))) if is_spilled_shape(value) else value


def read_value(store: BlobStore | None, encoder: Encoder, pointer: Pointer | str) -> Any:
    """Read the bytes a pointer names from ``store``, check their size and SHA-256, and decode them.

    Raises:
      InvalidPointerError: the pointer is malformed.
      DigestOnlyResultError: only the digest was kept.
      ForeignPointerError: ``store`` cannot read it (another store, or none).
      BlobNotFoundError, BlobIntegrityError, BlobReadError: the blob is missing, corrupt or unreadable.
    """
    if isinstance(pointer, str):
        pointer = parse_pointer(pointer)
    if pointer.scheme == "oversize":
        why = (
            f"{store.describe()} could not take it when it was produced and on_store_error='digest' kept only its "
            "digest: the value is lost; run the message again to produce it"
            if store is not None and store.persistent
            else "only its digest was kept (a DigestStore). Configure a FilesystemStore, S3Store or GCSStore to "
            "keep large results"
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
    try:
        data = store.get(pointer)
    except SpilledResultError:
        raise
    except Exception as error:
        raise BlobReadError(
            f"{store.describe()} could not read {pointer.raw!r}: {error}", pointer=pointer.raw
        ) from error
    data = verify_blob(pointer, data)
    try:
        return encoder.decode(data)
    except Exception as error:
        raise BlobReadError(
            f"The blob for {pointer.raw!r} is intact but {type(encoder).__name__} cannot decode it ({error}); read it "
            "with the encoder that wrote it.",
            pointer=pointer.raw,
        ) from error
