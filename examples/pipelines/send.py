"""Run a pipeline and a group and print where each result lived. Run it while workers are running:

dramatiq examples.pipelines.tasks --processes 1 --threads 4    # in one terminal
python -m examples.pipelines.send                              # in another
"""

from __future__ import annotations

import sys

import dramatiq

from dramatiq_ray import get_pointer

from .tasks import generate, square, summarize, tile

#: How long to wait for results, in milliseconds (the first message also waits for Ray to start).
RESULT_TIMEOUT_MS = 300_000
COUNT = 5_000


def _where(message: dramatiq.Message[object]) -> str:
    pointer = get_pointer(message)
    return "inline in Redis" if pointer is None else f"spilled, Redis holds {pointer.split('?')[0][:40]}..."


def main() -> int:
    """Run the pipeline and the group, check their results, print what happened; 0 when all are right."""
    problems = []
    print(f"Pipeline: generate({COUNT}) | square | summarize", flush=True)
    pipe = dramatiq.pipeline([generate.message(COUNT), square.message(), summarize.message()]).run()
    summary = pipe.get_result(block=True, timeout=RESULT_TIMEOUT_MS)
    for message in pipe.messages:
        print(f"  {message.actor_name:<10} result: {_where(message)}")
    expected = {"count": COUNT, "total": sum(value * value for value in range(COUNT))}
    print(f"  summarize received all {summary['count']} squares (the list, not a pointer): total {summary['total']}.")
    if summary != expected:
        problems.append(f"the pipeline returned {summary!r}, expected {expected!r}")
    if any(get_pointer(message) is None for message in pipe.messages[:2]):
        problems.append("a large pipeline step was not spilled")

    print("Group: tile(0..3, 2000), four large results gathered together", flush=True)
    group = dramatiq.group([tile.message(index, 2_000) for index in range(4)]).run()
    tiles = list(group.get_results(block=True, timeout=RESULT_TIMEOUT_MS))
    spilled = sum(get_pointer(message) is not None for message in group.children)
    print(f"  {len(tiles)} results of {[len(t) for t in tiles]} numbers; {spilled} of 4 were spilled and read back.")
    if tiles != [[index] * 2_000 for index in range(4)] or spilled != 4:
        problems.append("the group's results came back wrong or were not spilled")

    for problem in problems:
        print(f"UNEXPECTED: {problem}")
    if problems:
        return 1
    print("All results are as expected: large values travelled between steps as pointers and came back whole.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
