"""The broker and actors of the SQL results example: an in-process broker, results in an SQLite file.

SQL_RESULTS_DB   the SQLite database file (default: results.db in a new temporary directory)
RESULTS_DIR      where results too large to keep in the database are written (default: beside it)
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

import dramatiq
from dramatiq.brokers.stub import StubBroker

from dramatiq_ray import FilesystemStore, Results, SQLBackend

#: A temporary directory of this run, for what no setting places elsewhere (removed at the end of the run).
TEMP_DIR = tempfile.mkdtemp(prefix="dramatiq-ray-sql-example-")
SQL_RESULTS_DB = os.environ.get("SQL_RESULTS_DB") or os.path.join(TEMP_DIR, "results.db")
RESULTS_DIR = os.environ.get("RESULTS_DIR") or os.path.join(TEMP_DIR, "blobs")


def redact(actor_name: str, args: Any, kwargs: Any) -> tuple[Any, Any]:
    """What is recorded of a message's arguments: never an API key."""
    return args, {name: "***" if name == "api_key" else value for name, value in kwargs.items()}


backend = SQLBackend(url=f"sqlite:///{SQL_RESULTS_DB}", record_args=True, redact=redact)
broker = StubBroker()
broker.add_middleware(Results(backend=backend, store=FilesystemStore(RESULTS_DIR), max_inline_bytes=4096))
dramatiq.set_broker(broker)


@dramatiq.actor(store_results=True, max_retries=0)
def render(frame: int, api_key: str = "") -> dict[str, Any]:
    """Frames divisible by 5 are corrupt: those messages fail."""
    if frame % 5 == 0:
        raise ValueError(f"frame {frame} is corrupt")
    return {"frame": frame, "pixels": frame * 1000}


@dramatiq.actor(store_results=True)
def histogram(bins: int) -> list[int]:
    """A result too large for the database row: written to RESULTS_DIR, the row keeps its pointer."""
    return list(range(bins))
