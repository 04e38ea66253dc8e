"""Big inputs by reference: arguments over ``max_inline_arg_bytes`` go to the store when a message is sent, are
read where the body runs, and are deleted when the message is done for good.

The message's arguments are offloaded by the broker's encoder (:mod:`dramatiq_ray.results.encoding`), which
calls :meth:`~dramatiq_ray.payloads.plan.SpillPlan.offload` (the same plan that spills results) on the messages
``Results`` marks.

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
from typing import Any

from ._safe import describe_error, shorten
from .marker import ARGUMENT_KEY, is_argument_shape
from .options import MAX_INLINE_ARG_BYTES_OPTION, check_arg_threshold
from .pointers import parse_pointer
from .stores.base import BlobInfo, BlobStore

__all__ = [
    "MAX_INLINE_ARG_BYTES_OPTION",
    "check_arg_threshold",
    "held_pointers",
    "reference_name",
    "release",
]

logger = logging.getLogger(__name__)

_REFS = "refs"


def reference_name(digest: str, message_id: str) -> str:
    """The name of the reference ``message_id`` holds on the argument blob ``digest`` (a named object)."""
    return f"{_REFS}/{digest}/{message_id}"


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
            store.delete_named(reference_name(pointer.digest, message_id))
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
