"""The real ``dramatiq`` CLI with RayExecutionMiddleware: several worker processes sharing one Ray, and a clean
SIGTERM shutdown that leaves no Ray process behind."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from typing import Any

import dramatiq
import psutil
import pytest

from dramatiq_ray.execution.shared_head import shared_head_dir
from tests import _services
from tests._services import wait_until

pytestmark = pytest.mark.cli

MESSAGES = 6
RECORD_TIMEOUT = 240


def processes_naming(marker: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        with_marker = any(marker in part for part in proc.info["cmdline"] or ())
        if with_marker and proc.status() != psutil.STATUS_ZOMBIE:
            found.append(proc)
    return found


@pytest.fixture
def records(redis_client: Any, redis_namespace: str) -> Callable[[int], list[dict[str, Any]]]:
    """Wait for ``count`` probe records and return them."""

    def wait_for(count: int) -> list[dict[str, Any]]:
        def enough() -> list[dict[str, Any]] | None:
            raw = redis_client.lrange(f"{redis_namespace}:records", 0, -1)
            return [json.loads(item) for item in raw] if len(raw) >= count else None

        found: list[dict[str, Any]] = wait_until(enough, timeout=RECORD_TIMEOUT, what=f"{count} probe records")
        return found

    return wait_for


@pytest.fixture
def cli_env(redis_url: str, redis_namespace: str, queue_name: str) -> dict[str, str]:
    env = {
        "DRAMATIQ_RAY_TEST_BROKER_URL": redis_url,
        "DRAMATIQ_RAY_TEST_NAMESPACE": redis_namespace,
        "DRAMATIQ_RAY_TEST_QUEUE": queue_name,
        "DRAMATIQ_RAY_TEST_RECORD_URL": redis_url,
    }
    return env


@pytest.fixture
def redis_producer(redis_url: str, redis_namespace: str) -> Iterator[Any]:
    from dramatiq.brokers.redis import RedisBroker

    producer = RedisBroker(url=redis_url, namespace=redis_namespace)
    yield producer
    producer.close()


def send_probes(producer: Any, queue_name: str, count: int, *, hold_seconds: float = 0.3, start: int = 0) -> None:
    for value in range(start, start + count):
        producer.enqueue(
            dramatiq.Message(
                queue_name=queue_name, actor_name="probe", args=(value, hold_seconds), kwargs={}, options={}
            )
        )


def assert_shared_head_ran_and_is_gone(cli: Any, found: list[dict[str, Any]]) -> None:
    # Every body ran in a Ray worker of one cluster: the head the CLI started beside its workers
    head_dir = str(shared_head_dir(cli.proc.pid))
    worker_pids = {child.pid for child in psutil.Process(cli.proc.pid).children(recursive=True)}
    assert {record["pid"] for record in found}.isdisjoint({os.getpid(), cli.proc.pid})
    assert len({record["gcs"] for record in found}) == 1
    assert len([proc for proc in processes_naming(head_dir) if proc.name() == "gcs_server"]) == 1
    assert worker_pids
    # When the CLI gets SIGTERM, it exits cleanly and the head goes with it
    assert cli.stop() == 0, cli.output()
    wait_until(lambda: not processes_naming(head_dir), timeout=60, what="the shared Ray head to stop")
    assert not [pid for pid in worker_pids if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"]
    # and its directory (Ray's temp dir, the published address) is removed
    assert not shared_head_dir(cli.proc.pid).exists()


def test_cli_worker_processes_share_one_embedded_ray_head_over_redis(
    dramatiq_cli, cli_env, redis_producer, queue_name, records
) -> None:
    # Given the CLI with two worker processes and no RAY_ADDRESS
    cli = dramatiq_cli("tests.apps.ray_cli", "--processes", "2", "--threads", "2", env=cli_env)
    cli.wait_ready(processes=2)

    # When messages arrive
    send_probes(redis_producer, queue_name, MESSAGES)
    found = records(MESSAGES)

    # Then both processes' bodies ran on one shared head, which stops with the CLI
    assert sorted(record["value"] for record in found) == list(range(MESSAGES))
    assert_shared_head_ran_and_is_gone(cli, found)


def test_cli_worker_processes_share_one_embedded_ray_head_over_rabbitmq(
    dramatiq_cli, cli_env, rabbitmq_url, queue_name, records
) -> None:
    from dramatiq.brokers.rabbitmq import RabbitmqBroker

    cli = dramatiq_cli(
        "tests.apps.ray_cli",
        "--processes",
        "2",
        "--threads",
        "2",
        env={**cli_env, "DRAMATIQ_RAY_TEST_BROKER_URL": rabbitmq_url},
    )
    producer = RabbitmqBroker(url=rabbitmq_url)
    try:
        cli.wait_ready(processes=2)
        send_probes(producer, queue_name, MESSAGES)
        found = records(MESSAGES)
        assert sorted(record["value"] for record in found) == list(range(MESSAGES))
        assert_shared_head_ran_and_is_gone(cli, found)
    finally:
        producer.close()
        _services.delete_rabbitmq_queues(rabbitmq_url, {queue_name})


def test_cli_with_ray_address_attaches_to_that_cluster_and_starts_no_head(
    dramatiq_cli, cli_env, redis_producer, queue_name, records, ray_head
) -> None:
    cli = dramatiq_cli(
        "tests.apps.ray_cli", "--processes", "2", "--threads", "2", env={**cli_env, "RAY_ADDRESS": ray_head.address}
    )
    cli.wait_ready(processes=2)

    send_probes(redis_producer, queue_name, MESSAGES)
    found = records(MESSAGES)

    assert {record["gcs"].rsplit(":", 1)[1] for record in found} == {str(ray_head.port)}
    assert not processes_naming(str(shared_head_dir(cli.proc.pid)))
    assert cli.stop() == 0, cli.output()
    assert "Traceback" not in cli.output()


def test_cli_worker_reattaches_after_the_ray_head_restarts(
    dramatiq_cli, cli_env, redis_producer, queue_name, records, ray_head
) -> None:
    # Given a worker process attached to a running head, that has processed a message
    cli = dramatiq_cli(
        "tests.apps.ray_cli", "--processes", "1", "--threads", "2", env={**cli_env, "RAY_ADDRESS": ray_head.address}
    )
    cli.wait_ready(processes=1)
    worker_pids = {child.pid for child in psutil.Process(cli.proc.pid).children()}
    send_probes(redis_producer, queue_name, 1)
    records(1)

    # When the head restarts on the same address
    ray_head.stop()
    ray_head.start()

    # Then later messages succeed in the same worker process, attached to the new head
    send_probes(redis_producer, queue_name, 2, start=1)
    found = records(3)
    assert sorted(record["value"] for record in found) == [0, 1, 2]
    assert len({record["node"] for record in found}) == 2
    assert {child.pid for child in psutil.Process(cli.proc.pid).children()} == worker_pids
    assert cli.stop() == 0, cli.output()


def test_cli_with_a_ray_client_address_runs_bodies_through_ray_client(
    dramatiq_cli, cli_env, redis_producer, queue_name, records, ray_head
) -> None:
    cli = dramatiq_cli(
        "tests.apps.ray_cli",
        "--processes",
        "1",
        "--threads",
        "2",
        env={**cli_env, "RAY_ADDRESS": ray_head.client_address},
    )
    cli.wait_ready(processes=1)

    send_probes(redis_producer, queue_name, 2)
    found = records(2)

    assert {record["gcs"].rsplit(":", 1)[1] for record in found} == {str(ray_head.port)}
    assert cli.stop() == 0, cli.output()
