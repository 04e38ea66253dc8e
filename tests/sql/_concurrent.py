"""A process of the concurrency tests: ``python -m tests.sql._concurrent MODE URL PREFIX INDEX THREADS COUNT``.

It builds one SQLBackend, prints ``ready``, waits for a line on stdin (so that every process starts at once),
then runs ``THREADS`` threads released together by a barrier, and prints one JSON line with what they did:

- ``migrate``: each thread builds its own backend and migrates (concurrent starts);
- ``write``: each thread stores ``COUNT`` results (``p<INDEX>-t<thread>-<n>``), then reads every one back.
"""

from __future__ import annotations

import json
import sys
import threading
from typing import Any

import dramatiq

from dramatiq_ray import SQLBackend


def message(name: str) -> dramatiq.Message[Any]:
    return dramatiq.Message(queue_name="default", actor_name="write", args=(), kwargs={}, options={}, message_id=name)


def main(argv: list[str]) -> int:
    mode, url, prefix, index, threads, count = argv[0], argv[1], argv[2], int(argv[3]), int(argv[4]), int(argv[5])
    shared = SQLBackend(url=url, table_prefix=prefix)
    barrier = threading.Barrier(threads)
    outcomes: list[Any] = []
    errors: list[str] = []

    def migrate() -> None:
        backend = SQLBackend(url=url, table_prefix=prefix)
        barrier.wait()
        try:
            outcomes.append(backend.migrate())
        finally:
            backend.close()

    def write(thread: int) -> None:
        names = [f"p{index}-t{thread}-{n}" for n in range(count)]
        barrier.wait()
        for name in names:
            shared.store_result(message(name), name, 600_000)
        outcomes.append(sum(shared.get_result(message(name)) == name for name in names))

    def run(thread: int) -> None:
        try:
            migrate() if mode == "migrate" else write(thread)
        except Exception as error:
            errors.append(f"{type(error).__name__}: {error}")

    print("ready", flush=True)
    sys.stdin.readline()
    workers = [threading.Thread(target=run, args=(thread,)) for thread in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    shared.close()
    print(json.dumps({"outcomes": outcomes, "errors": errors}), flush=True)
    return 0 if not errors else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
