"""``python -m examples.cluster``: attach dramatiq workers to a running Ray cluster, send messages, stop.

It never starts or stops Ray: start a head first (``ray start --head``), and stop it yourself afterwards.
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path

from .._workers import dramatiq_workers, redis_answers, say
from . import send
from .tasks import RAY_ADDRESS, REDIS_URL

#: Where ``ray start --head`` records the address of the cluster it started on this machine.
CURRENT_CLUSTER_FILE = Path("/tmp/ray/ray_current_cluster")


def resolve_address() -> str | None:
    if RAY_ADDRESS != "auto":
        return RAY_ADDRESS
    if CURRENT_CLUSTER_FILE.exists():
        return CURRENT_CLUSTER_FILE.read_text().strip() or None
    return None


def head_answers(address: str) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=5):
            return True
    except (OSError, ValueError):
        return False


def main() -> int:
    if not redis_answers(REDIS_URL):
        return 2
    address = resolve_address()
    if address is None or not head_answers(address):
        say(
            f"No Ray cluster answers at {address or RAY_ADDRESS!r}. Start one with `ray start --head` and set "
            "RAY_ADDRESS to the address it prints (host:port), or leave RAY_ADDRESS unset to use it automatically."
        )
        return 2
    say(f"Broker: Redis at {REDIS_URL}. Ray: attaching to the existing cluster at {address}.")
    try:
        with dramatiq_workers("examples.cluster.tasks", processes=1, threads=2, env={"RAY_ADDRESS": address}):
            return send.main(expected_cluster=address)
    except RuntimeError as error:
        say(f"FAILED: {error}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
