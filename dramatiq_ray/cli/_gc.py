"""``dramatiq-ray gc``: delete spilled blobs that no live result can point to any more."""

from __future__ import annotations

import argparse
from typing import IO, Any

from . import _results
from ._common import EXIT_OK, FROM_SETTINGS, Sources, UsageError, format_duration


def _no_store(store_text: str, source: str, sources: Sources) -> UsageError:
    if source == FROM_SETTINGS:
        where = "the broker's Results has no store" if sources.broker is not None else "no --broker given"
        found = f"{where}, and the settings' RESULT_STORAGE_BACKEND is 'digest'"
    else:
        found = f"the broker's Results uses {store_text}"
    return UsageError(
        f"no blob store to collect: {found}; a {store_text} keeps only digests, so there is nothing to delete. Pass "
        "--broker MODULE[:ATTR] whose Results has a store (FilesystemStore, S3Store, GCSStore), or set "
        "DRAMATIQ_RAY_RESULT_STORAGE_BACKEND (filesystem, s3 or gcs) with its path or bucket."
    )


def _too_young(older_than: float, ttl: float, where: str) -> UsageError:
    return UsageError(
        f"--older-than {format_duration(older_than)} is shorter than the longest result TTL in use, "
        f"{format_duration(ttl)} ({where}): blobs of results still alive would be deleted, and reading those "
        f"results would fail. Choose --older-than longer than {format_duration(ttl)} plus the longest time a "
        "message can wait in a queue, or pass --force if no result lives that long."
    )


def run(args: argparse.Namespace, out: IO[str]) -> int:
    """Collect the store's old blobs; exit 2 when there is no store or ``--older-than`` is too short."""
    from ..results import gc_blobs

    sources = Sources.load(args.broker)
    store, source = sources.store()
    if not store.persistent:
        if _results.collect_rows(sources, None, args, out):  # an SQLBackend's expired rows, even with no blobs
            return EXIT_OK
        raise _no_store(store.describe(), source, sources)
    out.write(f"store: {store.describe()} ({source})\n")
    ttl, where = sources.longest_result_ttl()
    if args.older_than < ttl and not args.force:
        raise _too_young(args.older_than, ttl, where)
    _results.collect_rows(sources, store, args, out)  # an SQLBackend: expired rows, and blobs only they pointed to
    counts = {"seen": 0}

    def progress(info: Any, action: str) -> None:
        counts["seen"] += 1
        if args.verbose or action in ("deleted", "would delete"):
            out.write(f"{action:<12} {info.name} ({info.size} bytes)\n")
        elif counts["seen"] % 1000 == 0:
            out.write(f"... {counts['seen']} blobs scanned\n")
        out.flush()

    report = gc_blobs(store, older_than=args.older_than, dry_run=args.dry_run, progress=progress)
    verb = "would delete" if args.dry_run else "deleted"
    out.write(
        f"{store.describe()}: scanned {report.scanned}, kept {report.kept}, {verb} {len(report.deleted)} "
        f"({report.bytes_freed} bytes)\n"
    )
    return EXIT_OK
