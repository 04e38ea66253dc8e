"""Send the webhooks example's messages, wait for their results from asyncio, and print the webhooks the receiver
got. Run it while workers and a receiver run:

python -m examples.webhooks.receiver                          # in one terminal
dramatiq examples.webhooks.tasks --processes 1 --threads 4     # in another
python -m examples.webhooks.send                               # in a third (prints the results only)
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import dramatiq
from dramatiq.results import ResultFailure

from dramatiq_ray import get_pointer, get_result_async

from .tasks import divide, render, report

#: How long to wait for each result and for the webhooks, in milliseconds.
TIMEOUT_MS = 60_000


async def wait_for_results(messages: list[Any]) -> list[Any]:
    """All results at once, from one event loop: no thread waits per message."""
    return await asyncio.gather(*(get_result_async(m, timeout=TIMEOUT_MS) for m in messages), return_exceptions=True)


def main(receiver: Any = None) -> int:
    """Send the messages, await the results; with a ``receiver``, check the webhooks it got. 0 when all is right."""
    problems: list[str] = []
    frames = dramatiq.group(render.message(frame) for frame in range(1, 6)).run()
    big = report.send(5_000)
    failing = divide.send(1, 0)
    messages = [*frames.children, big, failing]
    print(f"Sent {len(messages)} messages: render(1..5) as a group, report(5000), divide(1, 0).", flush=True)

    results = asyncio.run(wait_for_results(messages))
    print(f"  asyncio.gather over the {len(messages)} results: {[type(r).__name__ for r in results]}")
    if [r["frame"] for r in results[:5] if isinstance(r, dict)] != [1, 2, 3, 4, 5]:
        problems.append(f"the group's results came back wrong: {results[:5]}")
    if not isinstance(results[6], ResultFailure):
        problems.append(f"divide(1, 0) did not fail: {results[6]!r}")

    if receiver is not None:
        if not receiver.wait_for(len(messages), TIMEOUT_MS / 1000):
            problems.append(f"the receiver got {len(receiver.events)} webhooks, expected {len(messages)}")
        events = receiver.events
        for message in frames.children[:1]:
            event = events.get(message.message_id, {})
            print(f"  render(1) webhook: status={event.get('status')}, result={event.get('result')}")
            if event.get("result") != {"value": {"frame": 1, "pixels": 1000}}:
                problems.append(f"render(1)'s webhook is wrong: {event}")
        event = events.get(big.message_id, {})
        result = event.get("result", {})
        print(f"  report(5000) webhook: spilled, pointer={result.get('pointer')}")
        print("    (a FilesystemStore cannot sign download URLs; with S3Store or GCSStore the webhook also has 'url')")
        if result.get("pointer") != get_pointer(big) or "url_error" not in result:
            problems.append(f"report's webhook is wrong: {event}")
        event = events.get(failing.message_id, {})
        print(
            f"  divide(1, 0) webhook: status={event.get('status')} after {event.get('attempts')} attempts, "
            f"error={event.get('error')}"
        )
        if (event.get("status"), event.get("attempts"), event.get("error", {}).get("type")) != (
            "failed",
            2,
            "ZeroDivisionError",
        ):
            problems.append(f"divide's webhook is wrong: {event}")
        print(
            f"  The receiver answered 503 to the first POST; it was retried. Verified POSTs: {receiver.posts}, "
            f"refused: {receiver.refused}, duplicates: {receiver.duplicates}."
        )
        if receiver.refused or receiver.posts != len(messages) + 1:
            problems.append("the receiver refused a request, or did not get one retry")

    for problem in problems:
        print(f"UNEXPECTED: {problem}")
    if problems:
        return 1
    print("All webhooks arrived, signed and as expected." if receiver is not None else "All results are as expected.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
