"""The demo's broker and actors.

This module is imported by the demo's worker and, by module path, inside the Ray workers that run the actor
bodies, so importing it only builds objects: it connects to nothing and never touches Ray.

DRAMATIQ_RAY_DEMO_BROKER   "stub" (default) or a redis:// URL
DRAMATIQ_RAY_DEMO_STORE    the directory spilled results go to (default: a directory under the system temp dir)
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time

import dramatiq
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import Middleware
from dramatiq.results.backends import RedisBackend, StubBackend

from .. import FilesystemStore, RayExecutionMiddleware, Results, Retries, current_message


class PermanentError(Exception):
    """An error retrying cannot fix: the demo denylists it."""


class FlakyError(Exception):
    """An error that goes away by itself: retried."""


BROKER_URL = os.environ.get("DRAMATIQ_RAY_DEMO_BROKER", "stub")
STORE_PATH = os.environ.get("DRAMATIQ_RAY_DEMO_STORE") or os.path.join(tempfile.gettempdir(), "dramatiq-ray-demo")
NAMESPACE = os.environ.get("DRAMATIQ_RAY_DEMO_NAMESPACE", "dramatiq-ray-demo")
#: Results over this many encoded bytes are spilled to the store.
MAX_INLINE_BYTES = 64 * 1024


class AttemptLog(Middleware):
    """Counts the attempts of every message this worker process runs (the demo's table shows them)."""

    def __init__(self) -> None:
        self.attempts: dict[str, int] = {}

    def before_process_message(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        self.attempts[message.message_id] = self.attempts.get(message.message_id, 0) + 1


def _build_broker() -> tuple[dramatiq.Broker, Results]:
    if BROKER_URL == "stub":
        broker: dramatiq.Broker = StubBroker()
        backend: object = StubBackend()
    else:
        from dramatiq.brokers.redis import RedisBroker

        broker = RedisBroker(url=BROKER_URL, namespace=NAMESPACE)  # type: ignore[no-untyped-call]
        backend = RedisBackend(url=BROKER_URL, namespace=f"{NAMESPACE}-results")
    results = Results(backend=backend, store=FilesystemStore(STORE_PATH), max_inline_bytes=MAX_INLINE_BYTES)  # type: ignore[arg-type]
    broker.add_middleware(results)
    broker.add_middleware(Retries(max_attempts=3, backoff=100, max_backoff=1_000, denylist=[PermanentError]))
    broker.add_middleware(RayExecutionMiddleware())
    broker.add_middleware(attempt_log)
    return broker, results


attempt_log = AttemptLog()
broker, results = _build_broker()
dramatiq.set_broker(broker)


@dramatiq.actor(store_results=True)
def add(x: int, y: int) -> int:
    """A small result: stays inline in the result backend."""
    return x + y


@dramatiq.actor(store_results=True, ray_options={"num_cpus": 1})
def count_primes(limit: int) -> dict[str, int]:
    """CPU-heavy pure Python: runs in a Ray worker process, outside the Dramatiq worker's GIL."""
    sieve = bytearray([1]) * (limit + 1)
    sieve[0:2] = b"\x00\x00"
    for number in range(2, int(limit**0.5) + 1):
        if sieve[number]:
            sieve[number * number :: number] = bytes(len(range(number * number, limit + 1, number)))
    return {"primes": sum(sieve), "ray_worker_pid": os.getpid()}


@dramatiq.actor(store_results=True)
def render_report(rows: int) -> list[str]:
    """A result of several MB: spilled to the store; get_result brings the original value back."""
    return [f"row {index:07d} " + hashlib.sha256(str(index).encode()).hexdigest() for index in range(rows)]


@dramatiq.actor(store_results=True)
def flaky_fetch(key: str) -> str:
    """Fails on its first two attempts, then succeeds: Retries backs off and tries again."""
    message = current_message()
    attempt = (message.options.get("retries", 0) if message is not None else 0) + 1
    if attempt < 3:
        raise FlakyError(f"attempt {attempt}: the upstream service is busy")
    return f"{key} fetched on attempt {attempt}"


@dramatiq.actor(store_results=True)
def charge_card(amount: int) -> None:
    """Raises a denylisted error: fails at once, without retries."""
    raise PermanentError(f"card declined for {amount}")


@dramatiq.actor(store_results=True, time_limit=2_000, max_attempts=1)
def stuck_job(seconds: float) -> None:
    """Runs past its 2 s time limit: the Ray task is cancelled and the message fails."""
    time.sleep(seconds)
