"""Warm replicas over time: scaling up under load and down when idle, a new version draining the old pool,
time limits cancelling calls, replicas Ray cannot place, and pools no worker touches."""

from __future__ import annotations

import logging
import os
import time
import uuid
from pathlib import Path
from typing import Any

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker
from dramatiq.results import ResultFailure
from dramatiq.results.backends import StubBackend

from dramatiq_ray import RayExecutionMiddleware, Replicas, Results, replica_cancelled, replica_state
from dramatiq_ray.execution.replica_pool import NAMESPACE
from tests._services import wait_until
from tests.conftest import RAY_TEST_RESOURCE
from tests.replicas.conftest import RESULT_TIMEOUT_MS

WAIT = 120
#: The time limit of the held messages; warm-up messages (which wait for the replica to start) have none.
TIME_LIMIT_MS = 3000


def wait_for_files(directory: Path, count: int) -> list[Path]:
    found: list[Path] = wait_until(
        lambda: files if len(files := sorted(directory.iterdir())) >= count else None,
        timeout=WAIT,
        what=f"{count} files in {directory.name}",
    )
    return found


def pool_exists(ray: Any, actor_name: str, version: str = "1") -> bool:
    try:
        ray.get_actor(f"pool:{actor_name}:{version}", namespace=NAMESPACE)
    except ValueError:
        return False
    return True


def test_pool_scales_up_while_calls_wait_and_down_when_idle(
    replica_broker, start_worker, release, describe_pool, tmp_path: Path
) -> None:
    started = tmp_path / "started"
    started.mkdir()

    # Given an actor on 1 to 2 replicas, one call at a time each, idle after 1 s
    @dramatiq.actor(
        broker=replica_broker,
        store_results=True,
        replicas=Replicas(setup=os.getpid, min=1, max=2, idle_timeout_s=1),
    )
    def hold(value: int) -> int:
        (started / str(value)).write_text(str(os.getpid()))
        while not release.exists():
            time.sleep(0.05)
        return int(replica_state())

    # When two calls arrive at once
    start_worker(replica_broker)
    messages = [hold.send(value) for value in range(2)]

    # Then the second waits for a second replica, and both run at the same time, on different replicas
    files = wait_for_files(started, 2)
    release.touch()
    pids = {message.get_result(block=True, timeout=RESULT_TIMEOUT_MS) for message in messages}
    assert pids == {int(path.read_text()) for path in files}
    assert len(pids) == 2
    # And once idle, the pool shrinks back to min
    wait_until(lambda: len(describe_pool("hold")["replicas"]) == 1, timeout=WAIT, what="the pool to shrink")


def test_new_version_starts_new_replicas_and_drains_the_old_pool(
    replica_broker, start_worker, release, describe_pool, ray_local, tmp_path: Path
) -> None:
    started = tmp_path / "started"

    def body(version: str) -> Any:
        def versioned(hold: bool) -> list[Any]:
            if hold:
                started.touch()
                while not release.exists():
                    time.sleep(0.05)
            return [version, os.getpid()]

        return versioned

    # Given a call in flight on version 1's pool
    v1 = dramatiq.actor(
        body("1"), broker=replica_broker, actor_name="versioned", store_results=True, replicas=Replicas(version="1")
    )
    start_worker(replica_broker)
    in_flight = v1.send(True)
    wait_until(started.exists, timeout=WAIT, what="the version 1 call to start")

    # When the actor is deployed with version 2 (a new worker, with its own broker) and a message arrives
    deployed = StubBroker()
    deployed.emit_after("process_boot")
    deployed.add_middleware(Results(backend=StubBackend()))
    deployed.add_middleware(RayExecutionMiddleware(wait_slice=0.2))
    v2 = dramatiq.actor(
        body("2"), broker=deployed, actor_name="versioned", store_results=True, replicas=Replicas(version="2")
    )
    start_worker(deployed)
    version, v2_pid = v2.send(False).get_result(block=True, timeout=RESULT_TIMEOUT_MS)

    # Then version 2 runs on its own replica, while version 1 drains: its call finishes, then its pool exits
    assert version == "2"
    assert describe_pool("versioned", "1")["draining"]
    release.touch()
    old_version, v1_pid = in_flight.get_result(block=True, timeout=RESULT_TIMEOUT_MS)
    assert (old_version, v1_pid != v2_pid) == ("1", True)
    wait_until(lambda: not pool_exists(ray_local, "versioned", "1"), timeout=WAIT, what="the old pool to exit")
    assert pool_exists(ray_local, "versioned", "2")


def test_time_limit_cancels_the_call_and_sets_its_flag(replica_broker, start_worker, tmp_path: Path) -> None:
    saw_cancel = tmp_path / "cancelled"

    @dramatiq.actor(broker=replica_broker, store_results=True, max_retries=0, replicas=Replicas())
    def long_running(hold: bool) -> None:
        while hold and not replica_cancelled():
            time.sleep(0.05)
        if hold:
            saw_cancel.touch()

    start_worker(replica_broker)
    # Once the replica is up, the time limit is spent running, not waiting for a replica to start
    long_running.send(False).get_result(block=True, timeout=RESULT_TIMEOUT_MS)
    message = long_running.send_with_options(args=(True,), time_limit=TIME_LIMIT_MS)

    with pytest.raises(ResultFailure) as caught:
        message.get_result(block=True, timeout=RESULT_TIMEOUT_MS)
    assert caught.value.orig_exc_type == "TimeLimitExceeded"
    wait_until(saw_cancel.exists, timeout=WAIT, what="the body to see its cancellation")


def test_time_limit_cancels_an_async_body_at_its_await(replica_broker, start_worker, tmp_path: Path) -> None:
    saw_cancel = tmp_path / "cancelled"

    @dramatiq.actor(broker=replica_broker, store_results=True, max_retries=0, replicas=Replicas())
    async def waits(hold: bool) -> None:
        import asyncio

        try:
            while hold:
                await asyncio.sleep(0.05)
        except asyncio.CancelledError:
            saw_cancel.touch()
            raise

    start_worker(replica_broker)
    waits.send(False).get_result(block=True, timeout=RESULT_TIMEOUT_MS)  # the replica is up
    with pytest.raises(ResultFailure) as caught:
        waits.send_with_options(args=(True,), time_limit=TIME_LIMIT_MS).get_result(
            block=True, timeout=RESULT_TIMEOUT_MS
        )

    assert caught.value.orig_exc_type == "TimeLimitExceeded"
    wait_until(saw_cancel.exists, timeout=WAIT, what="the async body to be cancelled")


def test_cancelled_call_that_keeps_running_restarts_its_replica(
    replica_broker, start_worker, describe_pool, tmp_path: Path
) -> None:
    @dramatiq.actor(
        broker=replica_broker,
        store_results=True,
        max_retries=0,
        replicas=Replicas(setup=lambda: uuid.uuid4().hex, cancel_grace_s=1),
    )
    def stubborn(hold: bool) -> None:
        while hold:
            time.sleep(0.05)  # ignores replica_cancelled()

    start_worker(replica_broker)
    stubborn.send(False).get_result(block=True, timeout=RESULT_TIMEOUT_MS)  # the replica is up
    with pytest.raises(ResultFailure) as caught:
        stubborn.send_with_options(args=(True,), time_limit=TIME_LIMIT_MS).get_result(
            block=True, timeout=RESULT_TIMEOUT_MS
        )
    assert caught.value.orig_exc_type == "TimeLimitExceeded"

    wait_until(lambda: describe_pool("stubborn")["setups"] == 2, timeout=WAIT, what="the replica to be replaced")


def test_replica_ray_cannot_place_is_reported_and_its_message_waits(
    replica_broker, start_worker, caplog, ray_local
) -> None:
    # Given an actor whose replicas ask for more of a resource than the cluster has
    @dramatiq.actor(
        broker=replica_broker,
        store_results=True,
        ray_options={"resources": {RAY_TEST_RESOURCE: 100}},
        replicas=Replicas(),
    )
    def too_big() -> None: ...

    caplog.set_level(logging.WARNING, logger="dramatiq_ray.execution.runners.replicas")
    start_worker(replica_broker)
    message = too_big.send()

    # Then a WARNING says so, and the message has not failed: it waits
    wait_until(
        lambda: any("Ray cannot place it yet" in record.getMessage() for record in caplog.records),
        timeout=WAIT,
        what="the placement warning",
    )
    with pytest.raises(dramatiq.results.ResultMissing):
        message.get_result()


def test_pool_no_worker_touches_exits_with_its_replicas(replica_broker, start_worker, ray_local) -> None:
    @dramatiq.actor(broker=replica_broker, store_results=True, replicas=Replicas(orphan_timeout_s=2))
    def short_lived() -> int:
        return 1

    worker = start_worker(replica_broker)
    assert short_lived.send().get_result(block=True, timeout=RESULT_TIMEOUT_MS) == 1
    assert pool_exists(ray_local, "short_lived")

    worker.stop()

    wait_until(lambda: not pool_exists(ray_local, "short_lived"), timeout=WAIT, what="the pool to exit")
    names = [entry["name"] for entry in ray_local.util.list_named_actors(all_namespaces=True)]
    wait_until(
        lambda: not [name for name in names if "short_lived" in name and _alive(ray_local, name)],
        timeout=WAIT,
        what="its replicas to exit",
    )


def _alive(ray: Any, name: str) -> bool:
    try:
        ray.get_actor(name, namespace=NAMESPACE)
    except ValueError:
        return False
    return True
