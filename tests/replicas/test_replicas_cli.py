"""Warm replicas under the real ``dramatiq`` CLI, attached to a Ray head: worker processes share one pool, and
a message whose worker was killed mid-call takes over the call on its replica instead of running it again."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import dramatiq
import pytest

from tests._services import wait_until

pytestmark = pytest.mark.cli

WAIT = 240


@pytest.fixture
def cli_env(redis_url: str, redis_namespace: str, queue_name: str, request: Any) -> dict[str, str]:
    head = request.getfixturevalue("gpu_head" if "gpu" in request.node.name else "ray_head")
    return {
        "DRAMATIQ_RAY_TEST_BROKER_URL": redis_url,
        "DRAMATIQ_RAY_TEST_NAMESPACE": redis_namespace,
        "DRAMATIQ_RAY_TEST_QUEUE": queue_name,
        "DRAMATIQ_RAY_TEST_RAY_ADDRESS": head.address,
    }


@pytest.fixture
def producer(redis_url: str, redis_namespace: str) -> Iterator[Any]:
    from dramatiq.brokers.redis import RedisBroker

    broker = RedisBroker(url=redis_url, namespace=redis_namespace)
    yield broker
    broker.close()


@pytest.fixture
def recorded(redis_client: Any, redis_namespace: str) -> Callable[[str], list[dict[str, Any]]]:
    def read(kind: str) -> list[dict[str, Any]]:
        return [json.loads(item) for item in redis_client.lrange(f"{redis_namespace}:{kind}", 0, -1)]

    return read


def infer_message(queue_name: str, value: int, **kwargs: Any) -> dramatiq.Message[Any]:
    return dramatiq.Message(queue_name=queue_name, actor_name="infer", args=(value,), kwargs=kwargs, options={})


def result_of(message: dramatiq.Message[Any], redis_url: str, redis_namespace: str) -> Any:
    from dramatiq.results import ResultMissing
    from dramatiq.results.backends import RedisBackend

    backend = RedisBackend(url=redis_url, namespace=f"{redis_namespace}-results")

    def stored() -> list[Any] | None:
        try:
            return [backend.get_result(message)]
        except ResultMissing:
            return None

    # Polled: a blocking read would outlast the Redis client's socket timeout.
    return wait_until(stored, timeout=WAIT, interval=0.1, what=f"the result of message {message.message_id}")[0]


def test_cli_worker_processes_share_one_pool_of_replicas(
    dramatiq_cli, cli_env, producer, queue_name, recorded, redis_url, redis_namespace
) -> None:
    # Given the CLI with two worker processes attached to one Ray head
    cli = dramatiq_cli("tests.apps.replicas_app", "--processes", "2", "--threads", "4", env=cli_env)
    cli.wait_ready(processes=2)

    # When many messages arrive
    messages = [infer_message(queue_name, value, hold_seconds=0.3) for value in range(16)]
    for message in messages:
        producer.enqueue(message)
    results = [result_of(message, redis_url, redis_namespace) for message in messages]

    # Then both processes handled messages, all on the one replica that ran setup once
    assert [result["value"] for result in results] == [value * 2 for value in range(16)]
    assert len({result["load_id"] for result in results}) == 1
    assert len(recorded("setups")) == 1
    assert len({entry["pid"] for entry in recorded("processed")}) == 2
    assert cli.stop() == 0, cli.output()


def test_message_redelivered_after_its_worker_was_killed_takes_over_the_call(
    dramatiq_cli, cli_env, producer, queue_name, recorded, redis_client, redis_url, redis_namespace
) -> None:
    # Given a worker whose message runs on a replica, holding until released
    first = dramatiq_cli("tests.apps.replicas_app", "--processes", "1", "--threads", "2", env=cli_env)
    first.wait_ready(processes=1)
    message = infer_message(queue_name, 21, wait_for_release=True)
    producer.enqueue(message)
    wait_until(lambda: recorded("starts"), timeout=WAIT, what="the body to start")

    # When that worker is killed mid-call and the same message is delivered to a new worker
    first.kill()
    second = dramatiq_cli("tests.apps.replicas_app", "--processes", "1", "--threads", "2", env=cli_env)
    second.wait_ready(processes=1)
    producer.enqueue(message)
    wait_until(lambda: recorded("processed") or _release(redis_client, redis_namespace), timeout=WAIT, what="release")
    _release(redis_client, redis_namespace)

    # Then the new worker gets the outcome of the one body run
    assert result_of(message, redis_url, redis_namespace)["value"] == 42
    assert len(recorded("starts")) == 1
    assert len(recorded("setups")) == 1
    assert second.stop() == 0, second.output()


def _release(redis_client: Any, redis_namespace: str) -> bool:
    redis_client.set(f"{redis_namespace}:release", 1)
    return True


def test_gpu_replicas_each_get_their_own_logical_gpu(
    dramatiq_cli, cli_env, gpu_head, producer, queue_name, redis_url, redis_namespace
) -> None:
    # Given a head with 2 logical GPUs and an actor on 2 replicas of 1 GPU each
    cli = dramatiq_cli(
        "tests.apps.replicas_app",
        "--processes",
        "1",
        "--threads",
        "4",
        env={**cli_env, "DRAMATIQ_RAY_TEST_RAY_ADDRESS": gpu_head.address},
    )
    cli.wait_ready(processes=1)

    # When two messages arrive whose bodies finish only once both run at the same time
    messages = [
        dramatiq.Message(queue_name=queue_name, actor_name="on_gpu", args=(value,), kwargs={}, options={})
        for value in range(2)
    ]
    for message in messages:
        producer.enqueue(message)
    results = [result_of(message, redis_url, redis_namespace) for message in messages]

    # Then each replica process saw exactly one GPU id, and the two ids differ
    gpus_by_pid = {result["pid"]: result["gpus"] for result in results}
    assert len(gpus_by_pid) == 2
    assert sorted(gpus_by_pid.values()) == ["0", "1"]
    assert cli.stop() == 0, cli.output()
