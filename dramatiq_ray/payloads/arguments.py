"""Big inputs by reference: arguments over ``max_inline_arg_bytes`` go to the store when a message is sent, are
read where the body runs, and are deleted when the message is done for good.

The message's arguments are offloaded by the broker's encoder (:mod:`dramatiq_ray.results.encoding`), which
calls :meth:`ArgumentPlan.offload` on the messages ``Results`` marks.

Sharing and deletion: **reference counting** with one empty marker object per message and blob
(``refs/<digest>/<message id>``, a named object of the ``args`` child store). A producer writes its marker
before it writes (or refreshes) the blob; a message done for good deletes its marker, lists the blob's markers,
and, when none is left, deletes the blob unless it was written again since it looked (the store's conditional
delete: a rename aside on a filesystem, a metageneration check on GCS, a HEAD before DELETE on S3).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from dramatiq.encoder import Encoder

from .. import _otel
from ..errors import ConfigurationError
from ._safe import describe_error, shorten
from .compression import seal
from .marker import ARGUMENT_KEY, StoredArgument, is_argument_shape, is_inline_shape, is_spilled_shape
from .plan import byte_threshold_problem, encode_for_transport
from .pointers import blob_extension, parse_pointer, with_reading
from .stores._payload import parts_of, size_of
from .stores.base import BlobInfo, BlobStore, payload_digest, put_payload

__all__ = [
    "MAX_INLINE_ARG_BYTES_OPTION",
    "ArgumentPlan",
    "check_arg_threshold",
    "held_pointers",
    "release",
]

logger = logging.getLogger(__name__)

#: The Results, actor and message option: arguments whose encoded size is over this many bytes are sent by
#: reference (``None``, the default: never).
MAX_INLINE_ARG_BYTES_OPTION = "max_inline_arg_bytes"
_REFS = "refs"


def check_arg_threshold(value: object, where: str) -> int | None:
    """Return ``value`` when it is ``None`` or an ``int`` >= 0.

    Raises:
      ConfigurationError: it is not.
    """
    if value is None:
        return None
    problem = byte_threshold_problem(value)
    if problem:
        raise ConfigurationError(
            f"{where} max_inline_arg_bytes must be None (send arguments inline) or an integer number of bytes >= 0 "
            f"(arguments whose encoded size is over it are sent by reference), not {value!r}."
        )
    assert isinstance(value, int)
    return value


def _reference_name(digest: str, message_id: str) -> str:
    return f"{_REFS}/{digest}/{message_id}"


@dataclass(frozen=True)
class ArgumentPlan:
    """How one message's arguments are sent: over ``max_inline_arg_bytes``, serialized with the result codecs
    (bytes, ``.npy``, Arrow IPC, JSON, opt-in pickle), compressed and encrypted as results are, and written to
    ``store`` (the ``args`` child of the result store) under a reference held by the message.

    Parameters:
      store: where argument blobs go.
      encoder: the broker's encoder, for JSON arguments.
      max_inline_arg_bytes: the largest serialized argument sent inline, in bytes.
      allow_pickle, compression, compression_level, encryption: as for results.
    """

    store: BlobStore
    encoder: Encoder
    max_inline_arg_bytes: int
    allow_pickle: bool = False
    compression: str | None = None
    compression_level: int | None = None
    encryption: Any = None

    def offload(self, data: dict[str, Any]) -> dict[str, Any]:
        """The message dict ``data`` (``Message.asdict()``) with its big arguments replaced by references.

        Raises:
          BlobWriteError: the store could not be written: the send fails and nothing is enqueued.
        """
        message_id = data["message_id"]
        args = [self._one(value, message_id) for value in data.get("args") or ()]
        kwargs = {key: self._one(value, message_id) for key, value in (data.get("kwargs") or {}).items()}
        return {**data, "args": args, "kwargs": kwargs}

    def _one(self, value: Any, message_id: str) -> Any:
        if value is None or is_argument_shape(value) or is_spilled_shape(value) or is_inline_shape(value):
            return value
        # A value no codec takes travels as it is: the broker's encoder raises its own error, as without offloading.
        carried, big = encode_for_transport(
            value, self.encoder, allow_pickle=self.allow_pickle, limit=self.max_inline_arg_bytes
        )
        if big is None:
            return carried
        codec, payload = big
        stored, compression, key_id = seal(payload, self.compression, self.compression_level, self.encryption)
        digest = payload_digest(stored)
        attributes = _otel.payload_attributes(self.store, size_of(parts_of(stored)), codec)
        with _otel.span("argument offload", attributes={**attributes, "messaging.message.id": message_id}):
            # The reference first: a message finishing meanwhile then sees it and leaves the blob in place.
            self.store.put_named(_reference_name(digest, message_id), b"")
            pointer = with_reading(
                put_payload(self.store, stored, digest, extension=blob_extension(codec, compression, key_id)),
                codec=codec,
                compression=compression,
                key_id=key_id,
            )
        return StoredArgument(pointer)


def held_pointers(args: Any, kwargs: Any) -> list[str]:
    """The pointers of the arguments a message carries by reference (what it holds references to)."""
    values = [*(args or ()), *(kwargs or {}).values()]
    return sorted({value[ARGUMENT_KEY] for value in values if is_argument_shape(value)})


def release(store: BlobStore, message_id: str, pointers: list[str]) -> None:
    """Drop ``message_id``'s references to its argument blobs, deleting each blob no other message refers to.

    A failure is logged (WARNING) and left to ``dramatiq-ray gc``, which collects unreferenced blobs by age.
    """
    for raw in pointers:
        try:
            pointer = parse_pointer(raw)
            store.delete_named(_reference_name(pointer.digest, message_id))
            looked = time.time()
            if store.list_named(f"{_REFS}/{pointer.digest}"):
                continue  # another message still needs it
            store.delete_blob(BlobInfo(pointer.location, pointer.size, 0.0), cutoff=looked)
        except Exception as error:
            logger.warning(
                "Could not release argument blob %s of message %s (%s); 'dramatiq-ray gc' collects it once "
                "unreferenced and old.",
                shorten(repr(raw)),
                message_id,
                describe_error(error),
            )


def collectable(store: BlobStore, cutoff: float) -> Iterator[tuple[BlobInfo, bool]]:
    """The ``args`` child's entries, each with whether it may be collected at ``cutoff`` (a POSIX time).

    A reference older than the cutoff is an orphan (a producer that failed after writing it, a message lost):
    collectable. A blob is collectable when it is older than the cutoff and no younger reference names it.
    """
    entries = list(store.list_blobs())
    references = [info for info in entries if _reference_digest(info.name) is not None]
    held = {_reference_digest(info.name) for info in references if info.modified >= cutoff}
    for info in entries:
        if info in references:
            yield info, info.modified < cutoff
        else:
            digest = info.name.rsplit("/", 1)[-1].partition(".")[0]
            yield info, info.modified < cutoff and digest not in held


def _reference_digest(name: str) -> str | None:
    parts = name.split("/")
    if len(parts) >= 3 and parts[-3] == _REFS:
        return parts[-2]
    return None


# --- the encoder -------------------------------------------------------------------------------------------------
