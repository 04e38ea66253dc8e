"""``python -m examples.sql_results``: run messages through an in-process worker, then ask the SQL result backend
which ones failed, in Python and with ``dramatiq-ray results list``."""

from __future__ import annotations

import datetime
import json
import shutil
import sys

import dramatiq
from dramatiq.results import ResultFailure

from dramatiq_ray.cli import main as cli

from .tasks import RESULTS_DIR, SQL_RESULTS_DB, TEMP_DIR, backend, broker, histogram, render


def say(text: str) -> None:
    print(text, flush=True)


def main() -> int:
    say(f"Results: SQLite database {SQL_RESULTS_DB}; results over 4 KiB go to {RESULTS_DIR}.")
    worker = dramatiq.Worker(broker, worker_threads=4, worker_timeout=100)
    worker.start()
    try:
        frames = [render.send(frame, api_key="sk-live-123") for frame in range(1, 11)]
        big = histogram.send(2000)
        failed = 0
        for message in frames:
            try:
                message.get_result(block=True, timeout=30_000)
            except ResultFailure:
                failed += 1
        values = big.get_result(block=True, timeout=30_000)
    finally:
        worker.stop()

    say(f"Sent 10 render messages: {10 - failed} succeeded, {failed} failed.")
    say(f"histogram(2000) returned {len(values)} values; its row keeps the pointer {backend.record(big).pointer}")

    say("\nWhich render messages failed in the last hour? (SQLBackend.query)")
    sent = {message.message_id for message in frames}  # the database may hold earlier runs too
    failures = [
        record
        for record in backend.query(actor="render", status="failure", since=datetime.timedelta(hours=1))
        if record.message_id in sent
    ]
    for record in sorted(failures, key=lambda record: record.args or []):
        say(f"  {record.message_id}  args={record.args} kwargs={record.kwargs}  {record.error}")

    say("\n$ dramatiq-ray results list --actor render --status failure --since 1h --json")
    from io import StringIO

    out = StringIO()
    code = cli(["results", "list", "--url", f"sqlite:///{SQL_RESULTS_DB}", "--actor", "render",
                "--status", "failure", "--since", "1h", "--json"], out=out)  # fmt: skip
    listed = [item for item in json.loads(out.getvalue()) if item["message_id"] in sent]
    say(f"  exit {code}, {len(listed)} record(s): " + ", ".join(item["error"] for item in listed))
    backend.close()
    ok = failed == 2 and len(failures) == 2 and len(listed) == 2 and values == list(range(2000))
    say("\nAll results are as expected." if ok else "\nUNEXPECTED results: see above.")
    return 0 if ok else 1


if __name__ == "__main__":
    try:
        code = main()
    finally:
        shutil.rmtree(TEMP_DIR, ignore_errors=True)
    sys.exit(code)
