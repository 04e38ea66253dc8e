"""Expiry: delete the rows of :class:`~dramatiq_ray.SQLBackend` whose ``result_ttl`` has passed, and the blobs
that only those rows pointed to.

Rows are deleted in batches (keyset order on ``expires_at``, one short transaction per batch), so a large
backlog never holds a long lock. A blob is deleted only when three things hold: the rows deleted pointed to it,
no live row points to the same content (blobs are content-addressed: two results with the same value share one),
and the store has not written or refreshed it for ``older_than`` (the store re-checks this at the last moment,
as :func:`~dramatiq_ray.gc_blobs` does), because a pipeline's next message may still carry the pointer.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ...errors import ConfigurationError
from ...payloads.pointers import Pointer, parse_pointer
from ...payloads.stores.base import BlobInfo, BlobStore
from .engine import is_transient

if TYPE_CHECKING:
    from .backend import SQLBackend

__all__ = ["CollectReport", "collect_expired"]


@dataclass
class CollectReport:
    """What :func:`collect_expired` did; with ``dry_run``, what it would have done."""

    dry_run: bool
    rows_deleted: int = 0
    batches: int = 0
    blobs_deleted: list[str] = field(default_factory=list)
    blobs_kept: int = 0
    bytes_freed: int = 0


def _seconds(older_than: float | datetime.timedelta) -> float:
    seconds = older_than.total_seconds() if isinstance(older_than, datetime.timedelta) else older_than
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds <= 0:
        raise ConfigurationError(
            f"older_than must be a positive number of seconds (or a timedelta), got {older_than!r}: it is how long a "
            "blob must have gone unwritten before it is deleted."
        )
    return float(seconds)


def blob_of(store: BlobStore, pointer: Pointer) -> BlobInfo | None:
    """The blob of ``store`` that ``pointer`` names, or ``None`` when it names another store (or no blob)."""
    if pointer.scheme != store.scheme or not pointer.location:
        return None
    if pointer.scheme in ("s3", "gs") and (
        pointer.bucket != getattr(store, "bucket", None) or pointer.prefix != getattr(store, "prefix", None)
    ):
        return None
    return BlobInfo(name=pointer.location, size=pointer.size, modified=0.0)


def collect_expired(
    backend: SQLBackend,
    *,
    store: BlobStore | None = None,
    older_than: float | datetime.timedelta = 86_400,
    batch_size: int = 1000,
    dry_run: bool = False,
    now: float | None = None,
    progress: Callable[[str, str], None] | None = None,
) -> CollectReport:
    """Delete ``backend``'s expired rows, and the blobs of ``store`` only they pointed to.

    Parameters:
      backend: The SQL result backend.
      store: The blob store the results spilled to (``None``: rows only).
      older_than: Seconds (or a ``timedelta``) a blob must have gone unwritten to be deleted (default one day).
      batch_size: Rows per batch (1 to 100,000).
      dry_run: Delete nothing; report what would be deleted.
      now: The current POSIX time (default ``time.time()``).
      progress: Called with ``(pointer, action)`` for each blob considered: ``"deleted"``, ``"would delete"``,
        ``"kept"`` (refreshed since the cutoff, or already gone).

    Raises:
      ConfigurationError: a bad ``batch_size`` or ``older_than``.
      ResultBackendError: the database cannot be reached.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not 1 <= batch_size <= 100_000:
        raise ConfigurationError(f"batch_size must be an integer from 1 to 100000, got {batch_size!r}.")
    cutoff = (time.time() if now is None else now) - _seconds(older_than)
    now = time.time() if now is None else now
    report = CollectReport(dry_run=dry_run)
    try:
        _collect(backend, store, cutoff, batch_size, now, report, progress)
    except Exception as error:
        if is_transient(error):
            raise backend._unreachable("delete expired results", error) from error
        raise
    return report


def _collect(
    backend: SQLBackend,
    store: BlobStore | None,
    cutoff: float,
    batch_size: int,
    now: float,
    report: CollectReport,
    progress: Callable[[str, str], None] | None,
) -> None:
    import sqlalchemy as sa

    table = backend.tables.results
    reader, writer = backend._connections()
    after: tuple[float, str] | None = None
    while True:
        statement = sa.select(table.c.key, table.c.expires_at, table.c.pointer).where(table.c.expires_at <= now)
        if after is not None:
            statement = statement.where(
                sa.or_(
                    table.c.expires_at > after[0],
                    sa.and_(table.c.expires_at == after[0], table.c.key > after[1]),
                )
            )
        statement = statement.order_by(table.c.expires_at, table.c.key).limit(batch_size)
        with reader.connect() as connection:
            rows = list(connection.execute(statement))
        if not rows:
            return
        after = (rows[-1].expires_at, rows[-1].key)
        keys = [row.key for row in rows]
        if report.dry_run:
            report.rows_deleted += len(rows)
        else:
            with writer.begin() as connection:
                deleted = connection.execute(
                    sa.delete(table).where(table.c.key.in_(keys), table.c.expires_at <= now)
                ).rowcount
            report.rows_deleted += max(int(deleted or 0), 0)
        report.batches += 1
        if store is not None and store.persistent:
            _collect_blobs(backend, store, rows, cutoff, now, report, progress)


def _collect_blobs(
    backend: SQLBackend,
    store: BlobStore,
    rows: list[Any],
    cutoff: float,
    now: float,
    report: CollectReport,
    progress: Callable[[str, str], None] | None,
) -> None:
    import sqlalchemy as sa

    pointers: dict[str, Pointer] = {}
    for row in rows:
        if row.pointer:
            try:
                pointer = parse_pointer(row.pointer)
            except Exception:
                continue
            pointers[pointer.digest] = pointer
    if not pointers:
        return
    table = backend.tables.results
    reader, _ = backend._connections()
    with reader.connect() as connection:
        live = set(
            connection.execute(
                sa.select(table.c.blob_digest)
                .where(table.c.blob_digest.in_(list(pointers)), table.c.expires_at > now)
                .distinct()
            ).scalars()
        )
    for digest, pointer in sorted(pointers.items()):
        info = blob_of(store, pointer)
        if digest in live or info is None:
            continue
        # In a dry run nothing is deleted; else the store re-checks the blob's age as it deletes it.
        deleted = report.dry_run or store.delete_blob(info, cutoff=cutoff)
        action = ("would delete" if report.dry_run else "deleted") if deleted else "kept"
        if action == "kept":
            report.blobs_kept += 1
        else:
            report.blobs_deleted.append(pointer.raw)
            report.bytes_freed += pointer.size
        if progress is not None:
            progress(pointer.raw, action)
