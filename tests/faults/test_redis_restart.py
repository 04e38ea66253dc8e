"""Fault case 5: Redis (broker and result backend) is killed and restarted mid-run, with messages running on
Ray, queued, and sent after the restart. Dramatiq's own guarantees hold with our middleware in place: every
message completes with its result; none is lost. The Redis is a private one with an append-only file synced on
every write, as a Redis for Dramatiq should be configured."""

from __future__ import annotations

import uuid
from pathlib import Path

import dramatiq
from dramatiq.results.backends import RedisBackend

from dramatiq_ray import RayExecutionMiddleware, Results, Retries
from tests._services import wait_until

RESULT_TIMEOUT_MS = 240_000


def test_redis_restart_mid_run_loses_no_message_and_no_result(
    private_redis, ray_local, start_worker, tmp_path: Path
) -> None:
    from dramatiq.brokers.redis import RedisBroker

    # Given a worker on a private Redis, with results there too, running bodies on Ray that wait for a signal
    broker = RedisBroker(url=private_redis.url, namespace="faults")
    broker.emit_after("process_boot")
    dramatiq.set_broker(broker)
    broker.add_middleware(Results(backend=RedisBackend(url=private_redis.url, namespace="faults-results")))
    broker.add_middleware(Retries(max_retries=10, min_backoff=200, max_backoff=2_000))
    broker.add_middleware(RayExecutionMiddleware())
    release = tmp_path / "release"

    @dramatiq.actor(broker=broker, store_results=True)
    def held_double(value: int) -> int:
        import time

        (tmp_path / f"attempt-{value}-{uuid.uuid4().hex}").write_text("")
        while not release.exists():
            time.sleep(0.05)
        return value * 2

    start_worker(broker, threads=2)
    try:
        sent = [held_double.send(value) for value in range(6)]
        wait_until(lambda: len(list(tmp_path.glob("attempt-*"))) >= 2, timeout=120, what="two bodies to start")

        # When Redis is killed and restarted while two bodies run and four messages wait
        private_redis.restart()
        release.write_text("")
        sent += [held_double.send(value) for value in range(6, 10)]

        # Then every message, before and after the restart, completes with its result
        results = [message.get_result(block=True, timeout=RESULT_TIMEOUT_MS) for message in sent]
        assert results == [value * 2 for value in range(10)]
        assert private_redis.restarts == 1
        attempted = {int(path.name.split("-")[1]) for path in tmp_path.glob("attempt-*")}
        assert attempted == set(range(10))
    finally:
        release.write_text("")
        broker.close()
