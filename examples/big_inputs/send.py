"""Send the big-inputs example's messages and print their results. Run it while workers are running:

dramatiq examples.big_inputs.tasks --processes 1 --threads 2    # in one terminal
python -m examples.big_inputs.send                               # in another
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import redis

from .tasks import NAMESPACE, REDIS_URL, STORE_DIR, fingerprint

#: How long to wait for each result, in milliseconds (the first message also waits for Ray to start).
RESULT_TIMEOUT_MS = 300_000
MIB = 1024 * 1024


def argument_blobs() -> list[Path]:
    return [path for path in (Path(STORE_DIR) / "args").rglob("*.json") if "named" not in path.parts]


def main() -> int:
    """Send the messages, check what comes back; 0 when all is right."""
    problems = []
    image = os.urandom(32 * MIB)
    print("Sending fingerprint(<32 MiB of bytes>) twice (the same bytes: stored once) and a 1 KiB one.", flush=True)
    first = fingerprint.send(image, label="first")
    second = fingerprint.send(image, label="second")
    small = fingerprint.send(image[:1024], label="small")

    client = redis.Redis.from_url(REDIS_URL)
    sizes = [len(body) for body in client.hvals(f"{NAMESPACE}:{fingerprint.queue_name}.msgs")]
    blobs = len(argument_blobs())
    print(f"  broker message sizes while queued: {sorted(sizes)} bytes; blobs in {STORE_DIR}/args: {blobs}")
    if sizes and max(sizes) >= 4096:
        problems.append(f"a queued message is {max(sizes)} bytes")

    for message, expected in ((first, image), (second, image), (small, image[:1024])):
        result = message.get_result(block=True, timeout=RESULT_TIMEOUT_MS)
        digest, saw = result["sha256"][:16], result["worker saw"]
        print(f"  {result['label']}: {result['bytes']} bytes, sha256 {digest}..., worker saw {saw}")
        if result["sha256"] != hashlib.sha256(expected).hexdigest():
            problems.append(f"{result['label']} arrived altered")
    if first.get_result()["worker saw"] != "a reference" or small.get_result()["worker saw"] != "the value inline":
        problems.append("the big argument was not sent by reference, or the small one was not inline")

    for problem in problems:
        print(f"UNEXPECTED: {problem}")
    if problems:
        return 1
    print("All results were as expected.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
