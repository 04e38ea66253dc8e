"""The one spill rule, and the one reader of spilled values: a small, picklable plan that runs wherever an actor
body runs (the worker thread, a Ray task, a Ray job), and that sends big arguments by reference where a message
is sent.

When a message is sent, :meth:`SpillPlan.offload` replaces its arguments over ``max_inline_arg_bytes`` with
references to the store (see :mod:`.arguments` for their reference counting). Before the body,
:meth:`SpillPlan.read_inputs` replaces spilled-value markers among the arguments (piped results) with their
values; after it, :meth:`SpillPlan.apply` writes an oversized result to the store and returns a
:class:`~dramatiq_ray.results.SpilledResult` marker, which travels instead of the value: back from Ray, into a
pipeline's next message or an ``on_success`` callback, and into the result backend, which stores its pointer.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dramatiq.encoder import Encoder

from .. import _otel
from ..errors import BlobNotFoundError, BlobWriteError, MissingArgumentError, UnsupportedResultError
from ._safe import describe_error, shorten
from .arguments import reference_name
from .codecs import encode_parts
from .compression import seal
from .marker import (
    InlineValue,
    SpilledResult,
    StoredArgument,
    is_argument_shape,
    is_inline_shape,
    is_spilled_shape,
)
from .options import (
    CODEC_OPTIONS,
    DEFAULT_MAX_INLINE_BYTES,
    MAX_INLINE_BYTES_OPTION,
    ON_STORE_ERROR,
    byte_threshold_problem,
    check_codec_options,
    check_on_store_error,
    check_threshold,
    on_store_error_problem,
    require_blob_store,
)
from .pointers import Pointer, blob_extension, digest_pointer, with_reading
from .reading import read_inline, read_value
from .stores._payload import Payload, join_parts, parts_of, size_of
from .stores.base import ARGS_CHILD, BlobStore, payload_digest, put_payload

__all__ = [
    "ARGUMENTS_NEED",
    "CODEC_OPTIONS",
    "DEFAULT_MAX_INLINE_BYTES",
    "MAX_INLINE_BYTES_OPTION",
    "ON_STORE_ERROR",
    "SpillPlan",
    "byte_threshold_problem",
    "check_codec_options",
    "check_on_store_error",
    "check_threshold",
    "encode_for_transport",
    "on_store_error_problem",
    "read_argument",
    "read_value",
    "require_blob_store",
]

logger = logging.getLogger(__name__)

#: What needs a store that keeps blobs, when arguments are sent by reference (see :func:`require_blob_store`).
ARGUMENTS_NEED = "max_inline_arg_bytes sends big arguments through the result store"


@dataclass(frozen=True)
class SpillPlan:
    """How one message's values are spilled and read back, in any process: its result, and its arguments sent by
    reference (one plan for both, so they are serialized, compressed and encrypted alike).

    Serialize (the codec: JSON through ``encoder``, or raw bytes, ``.npy``, Arrow IPC, opt-in pickle), then, for
    a value that goes to the store, compress and encrypt; the pointer names each step, so a reader needs no
    configuration beyond keys and permission to unpickle.

    Parameters:
      store: where oversized values go and spilled ones are read from (``None``: nowhere; nothing spills, and a
        spilled input cannot be read).
      encoder: turns JSON values into bytes and back (the result backend's encoder).
      max_inline_bytes: the largest serialized result that stays inline, in bytes; ``None`` when the result is
        not forwarded anywhere (not stored, not piped, no ``on_success``), so it is left as it is.
      on_store_error: what a store that cannot take an oversized result does: ``"fail"`` raises
        :class:`~dramatiq_ray.BlobWriteError` (the message fails, and the retry policy decides), ``"digest"``
        keeps only the digest, with a WARNING.
      allow_pickle: whether a value no other codec takes is pickled, and whether a pickled value may be read.
      compression: ``"zstd"``, ``"gzip"``, ``"lzma"`` or ``None``, for values that go to the store.
      compression_level: the compressor's level (``None``: its default).
      encryption: an :class:`~dramatiq_ray.EncryptionKeys` for values that go to the store, or ``None``.
      max_inline_arg_bytes: the largest serialized argument sent inline, in bytes, by :meth:`offload` (``None``:
        every argument is sent inline); larger ones go to the store's ``args`` child under a reference held by the
        message.
    """

    store: BlobStore | None
    encoder: Encoder
    max_inline_bytes: int | None
    on_store_error: str = "fail"
    allow_pickle: bool = False
    compression: str | None = None
    compression_level: int | None = None
    encryption: Any = None
    max_inline_arg_bytes: int | None = None

    def apply(self, value: Any) -> Any:
        """Return ``value`` (JSON, small enough), an :class:`InlineValue` (another codec, small enough, or no
        store), or a :class:`SpilledResult` marker once it is in the store.

        A value no codec takes is returned unchanged: the result backend then stores the failure, naming
        ``allow_pickle``.

        Raises:
          BlobWriteError: the store cannot be written and ``on_store_error`` is ``"fail"``.
          MissingDependencyError: the value needs an extra that is not installed (a DataFrame without pyarrow).
        """
        if self.max_inline_bytes is None or value is None or isinstance(value, SpilledResult | InlineValue):
            return value
        limit = None if self.store is None else self.max_inline_bytes
        carried, big = encode_for_transport(value, self.encoder, allow_pickle=self.allow_pickle, limit=limit)
        if big is None or self.store is None:
            return carried
        return self._spill(self.store, *big)

    def _spill(self, store: BlobStore, codec: str, payload: tuple[memoryview, ...]) -> SpilledResult:
        """Compress and encrypt (each makes one new buffer), then hand the payload to the store as it is: the
        store hashes it (the digest names the bytes as stored, and is checked before anything is decrypted or
        decoded) and writes it without a copy."""
        stored: Payload
        stored, compression, key_id = seal(payload, self.compression, self.compression_level, self.encryption)
        size = size_of(parts_of(stored))
        try:
            with _otel.span("spill write", attributes=_otel.payload_attributes(store, size, codec)):
                pointer = put_payload(store, stored, extension=blob_extension(codec, compression, key_id))
        except Exception as error:
            if self.on_store_error != "digest":
                raise BlobWriteError(
                    f"{store.describe()} could not store a {size}-byte result ({describe_error(error)}); the "
                    "message failed and the retry policy decides. Fix the store, or set "
                    "on_store_error='digest' to keep only the digest of results the store cannot take."
                ) from error
            logger.warning(
                "%s could not store a %d-byte result (%s); the result backend will keep only its digest "
                "(on_store_error='digest').",
                store.describe(),
                size,
                describe_error(error),
            )
            pointer = digest_pointer(payload_digest(stored), size)
        return SpilledResult(with_reading(pointer, codec=codec, compression=compression, key_id=key_id))

    def read_inputs(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Replace spilled-value markers, arguments sent by reference and inline values among an actor's
        arguments with their values.

        Raises:
          MissingArgumentError: an argument sent by reference is no longer in the store.
        """
        if not any(map(_carried, args)) and not any(map(_carried, kwargs.values())):
            return args, kwargs
        return (
            tuple(self._input(value, f"args[{index}]") for index, value in enumerate(args)),
            {key: self._input(value, f"kwargs[{key!r}]") for key, value in kwargs.items()},
        )

    def _read_spilled(self, pointer: Pointer | str) -> Any:
        """Read, verify and decode the value a piped marker's pointer names (see :func:`read_value`)."""
        return read_value(self.store, self.encoder, pointer, allow_pickle=self.allow_pickle, encryption=self.encryption)

    def _input(self, value: Any, where: str) -> Any:
        if is_spilled_shape(value):
            return self._read_spilled(next(iter(value.values())))
        if is_argument_shape(value):
            store = self.store.child(ARGS_CHILD) if self.store is not None and self.store.persistent else None
            return read_argument(store, value, where, self._read_from)
        if is_inline_shape(value):
            return read_inline(value, self.encoder, allow_pickle=self.allow_pickle)
        return value

    def _read_from(self, store: BlobStore | None, pointer: str) -> Any:
        return read_value(store, self.encoder, pointer, allow_pickle=self.allow_pickle, encryption=self.encryption)

    # --- arguments by reference, where a message is sent ----------------------------------------------------

    def offload(self, data: dict[str, Any]) -> dict[str, Any]:
        """The message dict ``data`` (``Message.asdict()``) with its arguments over ``max_inline_arg_bytes``
        replaced by references (``data`` itself when the threshold is ``None``).

        Raises:
          ConfigurationError: an argument is over the threshold and the store keeps no blobs.
          BlobWriteError: the store could not be written: the send fails and nothing is enqueued.
        """
        if self.max_inline_arg_bytes is None:
            return data
        message_id = data["message_id"]
        args = [self._offload_one(value, message_id) for value in data.get("args") or ()]
        kwargs = {key: self._offload_one(value, message_id) for key, value in (data.get("kwargs") or {}).items()}
        return {**data, "args": args, "kwargs": kwargs}

    def _offload_one(self, value: Any, message_id: str) -> Any:
        if value is None or _carried(value):
            return value
        # A value no codec takes travels as it is: the broker's encoder raises its own error, as without offloading.
        carried, big = encode_for_transport(
            value, self.encoder, allow_pickle=self.allow_pickle, limit=self.max_inline_arg_bytes
        )
        if big is None:
            return carried
        store = require_blob_store(self.store, ARGUMENTS_NEED).child(ARGS_CHILD)
        codec, payload = big
        stored, compression, key_id = seal(payload, self.compression, self.compression_level, self.encryption)
        digest = payload_digest(stored)
        attributes = _otel.payload_attributes(store, size_of(parts_of(stored)), codec)
        with _otel.span("argument offload", attributes={**attributes, "messaging.message.id": message_id}):
            # The reference first: a message finishing meanwhile then sees it and leaves the blob in place.
            store.put_named(reference_name(digest, message_id), b"")
            pointer = with_reading(
                put_payload(store, stored, digest, extension=blob_extension(codec, compression, key_id)),
                codec=codec,
                compression=compression,
                key_id=key_id,
            )
        return StoredArgument(pointer)


def _carried(value: Any) -> bool:
    return is_spilled_shape(value) or is_inline_shape(value) or is_argument_shape(value)


def encode_for_transport(
    value: Any, encoder: Encoder, *, allow_pickle: bool, limit: int | None
) -> tuple[Any, tuple[str, tuple[memoryview, ...]] | None]:
    """How a value travels in a message or a result backend: ``(value, None)`` for JSON at most ``limit`` bytes
    (``None``: no limit), or for a value no codec takes (the encoder downstream then reports it);
    ``(InlineValue, None)`` for another codec's payload at most ``limit`` bytes; ``(None, (codec, payload))`` for a
    payload over ``limit``, which goes to a store. Serves results (:meth:`SpillPlan.apply`) and arguments sent by
    reference alike.

    Raises:
      MissingDependencyError: the value needs an optional dependency that is not installed (a DataFrame without
        pyarrow): the error names the extra to install.
      Exception: whatever pickling the value raised (``allow_pickle``), which says what does not pickle.
    """
    try:
        codec, parts = encode_parts(value, encoder, allow_pickle=allow_pickle)
    except UnsupportedResultError:
        # Only "no codec takes it": every other error says what to do, and reaches the user as it is.
        return value, None
    payload = parts_of(parts)
    if limit is not None and size_of(payload) > limit:
        return None, (codec, payload)
    if codec == "json":
        return value, None
    return InlineValue(codec, base64.b64encode(join_parts(payload)).decode("ascii")), None


def read_argument(store: BlobStore | None, value: Any, where: str, read: Callable[[BlobStore | None, str], Any]) -> Any:
    """The value a :class:`StoredArgument` stands for, read with ``read(store, pointer)``.

    Raises:
      MissingArgumentError: its blob is gone (the message can never run; it names the argument).
    """
    pointer = value[next(iter(value))]
    try:
        return read(store, pointer)
    except BlobNotFoundError as error:
        raise MissingArgumentError(
            f"Argument {where} of this message was sent by reference ({shorten(repr(pointer))}) and its blob is "
            "gone: it was deleted (by hand, a lifecycle rule, or 'dramatiq-ray gc' with --older-than shorter than "
            "the time the message waited). The message cannot run; send it again.",
            pointer=pointer,
            argument=where,
        ) from error
