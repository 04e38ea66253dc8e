"""``dramatiq-ray result``: print a stored result, hydrated from the blob store, or its pointer."""

from __future__ import annotations

import argparse
import json
import sys
from typing import IO, Any

import dramatiq

from ._common import EXIT_FAILED, EXIT_MISSING, EXIT_OK, Sources, UsageError


def run(args: argparse.Namespace, out: IO[str]) -> int:
    """Print the value (exit 0), the failure (1) or that there is none yet (3). The line saying which backend
    and store are used goes to stderr, so the output stays the value alone."""
    from dramatiq.results import ResultFailure, ResultMissing

    from ..results import get_pointer

    sources = Sources.load(args.broker)
    broker = sources.broker
    if broker is None:
        raise UsageError("needs --broker MODULE[:ATTR]: results are read through the broker's Results.")
    try:
        actor = broker.get_actor(args.actor)
    except dramatiq.errors.ActorNotFound:
        declared = ", ".join(sorted(broker.get_declared_actors())) or "none"
        raise UsageError(
            f"unknown actor {args.actor!r} on the broker of --broker {args.broker!r}, declared actors: {declared}."
        ) from None
    backend, used = sources.result_backend()
    sys.stderr.write(f"{used}\n")
    queue = args.queue or actor.queue_name
    message: dramatiq.Message[Any] = dramatiq.Message(
        queue_name=queue, actor_name=args.actor, args=(), kwargs={}, options={}, message_id=args.message_id
    )
    try:
        if args.pointer:
            pointer = get_pointer(message, backend=backend)
            out.write(f"{pointer}\n" if pointer is not None else "(stored inline: no pointer)\n")
            return EXIT_OK
        value = backend.get_result(message, block=False)
    except ResultMissing:
        out.write(f"No result for message {args.message_id} of {args.actor!r} (queue {queue!r}) yet.\n")
        return EXIT_MISSING
    except ResultFailure as failure:
        out.write(f"The message failed: {failure.orig_exc_type}: {failure.orig_exc_msg}\n")
        return EXIT_FAILED
    out.write(json.dumps(value, indent=2, default=repr) + "\n")
    return EXIT_OK
