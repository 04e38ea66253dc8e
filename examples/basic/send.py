"""Send the basic example's messages and print their results. Run it while workers are running:

dramatiq examples.basic.tasks --processes 2 --threads 4    # in one terminal
python -m examples.basic.send                              # in another
"""

from __future__ import annotations

import os
import sys

from dramatiq_ray import get_pointer

from .tasks import RESULTS_DIR, add, count_primes, make_report

#: How long to wait for each result, in milliseconds (the first message also waits for Ray to start).
RESULT_TIMEOUT_MS = 300_000
PRIMES_BELOW_200K = 17_984


def main() -> int:
    """Send one message of each kind, wait for the results, print what happened; 0 when all are right."""
    problems = []
    print("Sending 4 messages: add(2, 3), count_primes(200000) twice, make_report(20000).", flush=True)
    sum_message = add.send(2, 3)
    prime_messages = [count_primes.send(200_000) for _ in range(2)]
    report_message = make_report.send(20_000)

    total = sum_message.get_result(block=True, timeout=RESULT_TIMEOUT_MS)
    where = "Redis (small results stay inline)" if get_pointer(sum_message) is None else "the blob store"
    print(f"  add(2, 3) = {total}; the result was kept in {where}.")
    if total != 5:
        problems.append(f"add(2, 3) returned {total!r}")

    for message in prime_messages:
        found = message.get_result(block=True, timeout=RESULT_TIMEOUT_MS)
        print(
            f"  count_primes(200000) = {found['primes']} primes, computed in Ray worker process {found['pid']} "
            f"(this sender is process {os.getpid()})."
        )
        if found["primes"] != PRIMES_BELOW_200K:
            problems.append(f"count_primes returned {found['primes']}")

    report = report_message.get_result(block=True, timeout=RESULT_TIMEOUT_MS)
    pointer = get_pointer(report_message)
    size = sum(len(row) + 4 for row in report)
    print(f"  make_report(20000) = {len(report)} rows (about {size // 1024} KiB of JSON).")
    if pointer is None:
        problems.append("the report was not spilled")
    else:
        print(f"    Redis holds only the pointer {pointer}")
        print(f"    the value itself is a file under {RESULTS_DIR}; get_result() read it back and checked its SHA-256.")
    if len(report) != 20_000 or not report[-1].startswith("row 019999 "):
        problems.append("the report came back wrong")

    for problem in problems:
        print(f"UNEXPECTED: {problem}")
    if problems:
        return 1
    print("All results are as expected.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
