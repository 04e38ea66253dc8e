"""Send the arrays example's messages and print their results. Run it while workers are running:

dramatiq examples.arrays.tasks --processes 1 --threads 4    # in one terminal
python -m examples.arrays.send                              # in another
"""

from __future__ import annotations

import sys

import dramatiq
import numpy as np

from dramatiq_ray import get_pointer

from .tasks import simulate, summarize, thumbnail

#: How long to wait for each result, in milliseconds (the first message also waits for Ray to start).
RESULT_TIMEOUT_MS = 300_000


def main() -> int:
    """Send the messages, check what comes back; 0 when all is right."""
    problems = []
    print("Sending simulate(512, seed=7), a pipeline simulate -> summarize, and thumbnail(16).", flush=True)
    field_message = simulate.send(512, 7)
    pipe = dramatiq.pipeline([simulate.message(256, 7), summarize.message()]).run()
    small_message = thumbnail.send(16)

    field = field_message.get_result(block=True, timeout=RESULT_TIMEOUT_MS)
    print(f"  simulate(512) = {type(field).__name__} {field.dtype} {field.shape}; pointer {get_pointer(field_message)}")
    if not (isinstance(field, np.ndarray) and field.dtype == np.float64 and field.shape == (512, 512)):
        problems.append(f"simulate returned {type(field).__name__}")
    elif get_pointer(field_message) is None or "codec=npy" not in str(get_pointer(field_message)):
        problems.append("the 2 MiB array was not spilled as .npy")

    summary = pipe.get_result(block=True, timeout=RESULT_TIMEOUT_MS)
    print(f"  simulate(256) | summarize = {summary}")
    if summary.get("shape") != [256, 256] or summary.get("dtype") != "float64":
        problems.append(f"the piped array arrived as {summary}")

    small = small_message.get_result(block=True, timeout=RESULT_TIMEOUT_MS)
    print(f"  thumbnail(16) = {type(small).__name__} {small.dtype} {small.shape}; kept inline in Redis")
    if not (isinstance(small, np.ndarray) and small.dtype == np.uint8 and get_pointer(small_message) is None):
        problems.append("the small array did not come back inline as an array")

    for problem in problems:
        print(f"UNEXPECTED: {problem}")
    print("All results were as expected." if not problems else "Some results were wrong.")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
