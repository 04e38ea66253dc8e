"""Send the inference example's messages and print what came back. Run it while workers are running:

dramatiq examples.inference.tasks --processes 1 --threads 4    # in one terminal
python -m examples.inference.send                               # in another
"""

from __future__ import annotations

import sys
import time
from collections import Counter

import numpy as np

from .tasks import FEATURES, classify, weights

#: How long to wait for each result, in milliseconds (the first message also waits for Ray and a replica).
RESULT_TIMEOUT_MS = 300_000
MESSAGES = 40


def main() -> int:
    """Send the messages, check the answers; 0 when all is right."""
    rng = np.random.default_rng(7)
    inputs = [rng.standard_normal(FEATURES).tolist() for _ in range(MESSAGES)]
    print(f"Sending classify(<{FEATURES} features>) {MESSAGES} times.", flush=True)
    started = time.monotonic()
    messages = [classify.send(features) for features in inputs]
    results = [message.get_result(block=True, timeout=RESULT_TIMEOUT_MS) for message in messages]
    elapsed = time.monotonic() - started

    expected = [int(np.argmax(weights() @ np.asarray(features))) for features in inputs]
    wrong = sum(result["label"] != label for result, label in zip(results, expected, strict=True))
    replicas = Counter(result["replica"] for result in results)
    print(f"  {MESSAGES} answers in {elapsed:.1f} s; messages per replica: {dict(replicas)}")
    print(f"  the model was loaded {len(replicas)} time(s), not {MESSAGES}: once per replica.")
    problems = []
    if wrong:
        problems.append(f"{wrong} answers differ from the model's")
    if not 1 <= len(replicas) <= 2:
        problems.append(f"{len(replicas)} replicas answered; the pool has at most 2")
    for problem in problems:
        print(f"UNEXPECTED: {problem}")
    if problems:
        return 1
    print("All answers are as expected.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
