"""``dramatiq-ray cancel`` and ``dramatiq-ray progress``: steer a message from the command line."""

from __future__ import annotations

import argparse
import datetime
from typing import IO

from ..results.steering import CancelOutcome, cancel, get_progress
from ._common import EXIT_FAILED, EXIT_MISSING, EXIT_OK, Sources, UsageError


def _broker(args: argparse.Namespace, command: str) -> Sources:
    sources = Sources.load(args.broker)
    if sources.broker is None:
        raise UsageError(f"needs --broker MODULE[:ATTR]: {command} uses the result backend of the broker's Results.")
    return sources


def run_cancel(args: argparse.Namespace, out: IO[str]) -> int:
    """Cancel the message (exit 0), or say there was nothing to cancel: finished or unknown (exit 1)."""
    outcome = cancel(args.message_id, broker=_broker(args, "cancel").broker)
    if outcome is CancelOutcome.REQUESTED:
        out.write(f"Cancelled message {args.message_id}: skipped if it has not started, stopped if it runs.\n")
        return EXIT_OK
    if outcome is CancelOutcome.FINISHED:
        out.write(f"Nothing to cancel: message {args.message_id} has already finished.\n")
    else:
        out.write(f"Nothing to cancel: no message {args.message_id} is known (never sent, or its record expired).\n")
    return EXIT_FAILED


def run_progress(args: argparse.Namespace, out: IO[str]) -> int:
    """Print the latest progress (exit 0), or that there is none (exit 3)."""
    progress = get_progress(args.message_id, broker=_broker(args, "progress").broker)
    if progress is None:
        out.write(f"No progress reported for message {args.message_id}.\n")
        return EXIT_MISSING
    when = datetime.datetime.fromtimestamp(progress.time, datetime.UTC).isoformat(timespec="seconds")
    total = f"/{progress.total:g}" if progress.total is not None else ""
    note = f" {progress.note}" if progress.note else ""
    out.write(f"{progress.done:g}{total} at {when}{note}\n")
    return EXIT_OK
