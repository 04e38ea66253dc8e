"""Send the cluster example's messages and show where they ran. Run it while workers are running:

RAY_ADDRESS=127.0.0.1:6380 dramatiq examples.cluster.tasks --processes 1 --threads 2    # in one terminal
python -m examples.cluster.send                                                       # in another
"""

from __future__ import annotations

import sys

from .tasks import GREETING, where_am_i

#: How long to wait for each result, in milliseconds (a new runtime_env takes a few seconds the first time).
RESULT_TIMEOUT_MS = 300_000


def main(expected_cluster: str | None = None) -> int:
    """Send two messages, print where they ran; 0 when both ran with the runtime_env (on ``expected_cluster``)."""
    print("Sending where_am_i('first') and where_am_i('second').", flush=True)
    messages = [where_am_i.send("first"), where_am_i.send("second")]
    problems = []
    for message in messages:
        found = message.get_result(block=True, timeout=RESULT_TIMEOUT_MS)
        print(
            f"  {found['label']!r} ran on the Ray cluster at {found['cluster']}, node {found['node'][:12]}..., "
            f"process {found['pid']}; EXAMPLE_GREETING={found['greeting']!r}."
        )
        if found["greeting"] != GREETING:
            problems.append(f"{found['label']!r} did not see the runtime_env's EXAMPLE_GREETING")
        # Ray names the head by its node IP, which may differ from the address used to reach it: compare ports.
        if expected_cluster is not None and found["cluster"].rsplit(":", 1)[-1] != expected_cluster.rsplit(":", 1)[-1]:
            problems.append(f"{found['label']!r} ran on {found['cluster']}, not on {expected_cluster}")
    for problem in problems:
        print(f"UNEXPECTED: {problem}")
    if problems:
        return 1
    print("Both ran on the cluster, with the runtime_env applied.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
