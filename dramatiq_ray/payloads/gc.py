"""Blob lifecycle: delete spilled blobs that no live result can point to any more.

Why an age bound is safe: every time a result is stored that points to a blob (a new write, or an identical
payload stored again), the store refreshes the blob's timestamp. A result lives at most its ``result_ttl``, so a
blob whose timestamp is older than the longest ``result_ttl`` in use is referenced by no live result. Deleting
re-checks the timestamp at the last moment, so a blob referenced again meanwhile is kept.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

from ..errors import ConfigurationError
from .arguments import collectable
from .stores.base import ARGS_CHILD, BlobInfo, BlobStore

__all__ = ["GCReport", "gc_blobs"]


@dataclass
class GCReport:
    """What :func:`gc_blobs` did. With ``dry_run``, ``deleted`` lists what would have been deleted."""

    dry_run: bool
    scanned: int = 0
    kept: int = 0
    deleted: list[str] = field(default_factory=list)
    bytes_freed: int = 0


def gc_blobs(
    store: BlobStore,
    *,
    older_than: float | timedelta,
    dry_run: bool = False,
    progress: Callable[[BlobInfo, str], None] | None = None,
    now: float | None = None,
) -> GCReport:
    """Delete the blobs of ``store`` not written nor referenced again for ``older_than``.

    Parameters:
      store: The store to clean (a ``DigestStore`` holds nothing).
      older_than: The age bound, in seconds or as a ``timedelta``. It must exceed the longest ``result_ttl`` of
        the actors that spill to this store (Dramatiq's default is 10 minutes), plus the longest time a result
        can wait in a queue (a pipeline's next message carries the pointer), and the longest time a message
        with arguments sent by reference can wait (its reference is as old as its send).

    Argument blobs (``max_inline_arg_bytes``, in the store's ``args`` child) are collected too: a reference
    older than ``older_than`` is an orphan (a producer that failed between upload and enqueue, a lost message)
    and goes; a blob goes once it is older than ``older_than`` and no younger reference holds it.
      dry_run: Only report what would be deleted.
      progress: Called with each blob and ``"kept"``, ``"deleted"``, ``"would delete"`` or ``"skipped"`` (it
        was referenced again while collecting).
      now: The current POSIX time (default: ``time.time()``).

    Returns:
      A :class:`GCReport`.

    Raises:
      ConfigurationError: ``older_than`` is not positive.
    """
    seconds = older_than.total_seconds() if isinstance(older_than, timedelta) else older_than
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds <= 0:
        raise ConfigurationError(
            f"older_than must be a positive number of seconds (or a timedelta) greater than the longest "
            f"result_ttl, got {older_than!r}."
        )
    cutoff = (time.time() if now is None else now) - seconds
    report = GCReport(dry_run=dry_run)
    for info in store.list_blobs():
        _collect(store, info, info.modified < cutoff, cutoff, report, progress)
    if store.persistent:
        # Argument blobs (max_inline_arg_bytes): a blob goes once no reference younger than the cutoff holds it.
        arguments = store.child(ARGS_CHILD)
        for info, old in collectable(arguments, cutoff):
            _collect(arguments, info, old, cutoff, report, progress, prefix=f"{ARGS_CHILD}/")
    return report


def _collect(
    store: BlobStore,
    info: BlobInfo,
    old: bool,
    cutoff: float,
    report: GCReport,
    progress: Callable[[BlobInfo, str], None] | None,
    *,
    prefix: str = "",
) -> None:
    report.scanned += 1
    dry_run = report.dry_run
    if not old:
        outcome = "kept"
    elif dry_run:
        outcome = "would delete"
    elif store.delete_blob(info, cutoff=cutoff):
        outcome = "deleted"
    else:
        outcome = "skipped"
    # A filesystem child lists names relative to its own root: show where they are.
    shown = info
    if prefix and not (info.name.startswith(prefix) or "/" + prefix in info.name):
        shown = BlobInfo(prefix + info.name, info.size, info.modified)
    if outcome in ("deleted", "would delete"):
        report.deleted.append(shown.name)
        report.bytes_freed += info.size
    else:
        report.kept += 1
    if progress is not None:
        progress(shown, outcome)
