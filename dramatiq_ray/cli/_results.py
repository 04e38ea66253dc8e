"""``dramatiq-ray results list``: the messages an SQL result backend recorded; and the row part of ``gc``."""

from __future__ import annotations

import argparse
import datetime
import json
from typing import IO, TYPE_CHECKING

from ._common import EXIT_OK, FROM_RESULTS, FROM_SETTINGS, Sources, UsageError

if TYPE_CHECKING:
    from ..payloads.stores.base import BlobStore
    from ..results.sql import ResultRecord, SQLBackend

#: The columns of the table ``results list`` prints: heading, width (the last one takes the rest).
_COLUMNS = (("UPDATED (UTC)", 19), ("STATUS", 8), ("ACTOR", 20), ("TRY", 3), ("MESSAGE ID", 36), ("ERROR", 0))


def find_sql_backend(
    sources: Sources, url: str | None = None, table_prefix: str | None = None
) -> tuple[SQLBackend | None, str]:
    """The SQL result backend to use, and where it came from: ``--url``, the broker's Results (wrapped by a
    ``SpillingBackend`` or not), else ``RESULT_BACKEND='sql'`` in the settings; ``None`` when there is none."""
    from .._install import build_result_backend
    from ..results import SpillingBackend
    from ..results.sql import SQLBackend

    if url:
        return SQLBackend(url=url, table_prefix=table_prefix or "dramatiq_ray_"), "from --url"
    for middleware in sources.results_middleware():
        backend = middleware.backend
        inner = backend.backend if isinstance(backend, SpillingBackend) else backend
        if isinstance(inner, SQLBackend):
            return inner, FROM_RESULTS
    if sources.broker is None or not sources.results_middleware():
        settings = sources.settings()
        if settings.result_backend == "sql":
            found = build_result_backend(settings)
            assert isinstance(found, SQLBackend)
            return found, FROM_SETTINGS
    return None, ""


def _no_backend(sources: Sources) -> UsageError:
    if sources.broker is not None and sources.results_middleware():
        inner = sources.results_middleware()[0].backend
        found = f"the broker's Results uses {type(getattr(inner, 'backend', inner)).__name__}"
    else:
        found = "no --broker given and the settings' RESULT_BACKEND is not 'sql'"
    return UsageError(
        f"no SQL result backend to list: {found}. Pass --url sqlite:////path/results.db (or postgresql://...), "
        "--broker MODULE[:ATTR] whose Results has an SQLBackend, or set DRAMATIQ_RAY_RESULT_BACKEND=sql and "
        "DRAMATIQ_RAY_RESULT_BACKEND_URL."
    )


def _cell(text: str, width: int) -> str:
    if not width:
        return text
    return text.ljust(width) if len(text) <= width else text[: width - 1] + "…"


def _row(record: ResultRecord) -> str:
    changed = record.finished_at or record.started_at or record.enqueued_at
    error = (record.error or "").splitlines()[0] if record.error else ""
    cells = (
        changed.strftime("%Y-%m-%d %H:%M:%S") if changed else "",
        record.status,
        record.actor_name or "",
        str(record.attempts),
        record.message_id or "",
        error,
    )
    return "  ".join(_cell(text, width) for text, (_, width) in zip(cells, _COLUMNS, strict=True)).rstrip()


def run(args: argparse.Namespace, out: IO[str]) -> int:
    """List the records matching ``--actor``, ``--status`` and ``--since``, newest first; ``--json`` prints a
    JSON array (one object per record) and nothing else on stdout."""
    import sys

    sources = Sources.load(args.broker)
    backend, source = find_sql_backend(sources, args.url, args.table_prefix)
    if backend is None:
        raise _no_backend(sources)
    sys.stderr.write(f"result backend: {backend!r} ({source})\n")
    since = datetime.timedelta(seconds=args.since) if args.since else None
    try:
        records = backend.query(actor=args.actor, status=args.status, since=since, limit=args.limit)
    finally:
        backend.close()
    if args.json:
        json.dump([record.as_json() for record in records], out, indent=2)
        out.write("\n")
        return EXIT_OK
    if not records:
        out.write("No recorded message matches.\n")
        return EXIT_OK
    out.write("  ".join(_cell(heading, width) for heading, width in _COLUMNS).rstrip() + "\n")
    for record in records:
        out.write(_row(record) + "\n")
    more = " (--limit reached: there may be more)" if len(records) == args.limit else ""
    out.write(f"{len(records)} message(s){more}\n")
    return EXIT_OK


def collect_rows(sources: Sources, store: BlobStore | None, args: argparse.Namespace, out: IO[str]) -> bool:
    """``gc``'s first step with an SQL result backend: delete its expired rows, and the blobs of ``store`` only
    they pointed to. Returns whether there was an SQL backend."""
    backend, source = find_sql_backend(sources)
    if backend is None:
        return False
    out.write(f"result backend: {backend!r} ({source})\n")
    report = backend.collect_expired(
        store=store, older_than=args.older_than, batch_size=args.batch_size, dry_run=args.dry_run
    )
    verb = "would delete" if args.dry_run else "deleted"
    for pointer in report.blobs_deleted:
        out.write(f"{verb:<12} {pointer}\n")
    out.write(
        f"{backend!r}: {verb} {report.rows_deleted} expired row(s) in {report.batches} batch(es), and "
        f"{len(report.blobs_deleted)} blob(s) only they pointed to ({report.bytes_freed} bytes); kept "
        f"{report.blobs_kept} written again since the cutoff\n"
    )
    return True
