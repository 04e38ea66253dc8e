"""``dramatiq-ray verify``: read the blob a pointer names and check its size and SHA-256."""

from __future__ import annotations

import argparse
from typing import IO

from ._common import EXIT_FAILED, EXIT_OK, Sources


def run(args: argparse.Namespace, out: IO[str]) -> int:
    """Exit 0 when the blob is intact, 1 when it is not or cannot be (a digest-only pointer)."""
    from ..payloads.stores.integrity import verify_blob
    from ..results import parse_pointer

    store, source = Sources.load(args.broker).store()
    out.write(f"store: {store.describe()} ({source})\n")
    pointer = parse_pointer(args.pointer)
    if pointer.scheme == "oversize":
        out.write(f"{args.pointer}: a digest-only pointer; nothing was stored to verify.\n")
        return EXIT_FAILED
    verify_blob(pointer, store.get(pointer))
    out.write(f"ok: {pointer.size} bytes, sha256 {pointer.digest}\n")
    return EXIT_OK
