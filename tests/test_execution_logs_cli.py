"""The real ``dramatiq`` CLI and a real Ray: the log records of bodies on Ray reach the worker's own output."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import dramatiq
import pytest

from tests._services import wait_until

pytestmark = pytest.mark.cli

OUTPUT_TIMEOUT = 240


@pytest.fixture
def producer(redis_url: str, redis_namespace: str) -> Iterator[Any]:
    from dramatiq.brokers.redis import RedisBroker

    broker = RedisBroker(url=redis_url, namespace=redis_namespace)
    yield broker
    broker.close()


@pytest.fixture
def logs_cli(dramatiq_cli, redis_url, redis_namespace, queue_name, ray_head) -> Any:
    cli = dramatiq_cli(
        "tests.apps.ray_logs_cli",
        "--processes",
        "1",
        "--threads",
        "2",
        env={
            "DRAMATIQ_RAY_TEST_BROKER_URL": redis_url,
            "DRAMATIQ_RAY_TEST_NAMESPACE": redis_namespace,
            "DRAMATIQ_RAY_TEST_QUEUE": queue_name,
            "RAY_ADDRESS": ray_head.address,
        },
    )
    cli.wait_ready(processes=1)
    return cli


def send(producer: Any, queue_name: str, actor_name: str) -> str:
    message = producer.enqueue(
        dramatiq.Message(queue_name=queue_name, actor_name=actor_name, args=(), kwargs={}, options={})
    )
    return str(message.message_id)


def lines_matching(cli: Any, pattern: str, count: int) -> list[str]:
    def found() -> list[str] | None:
        lines = [line for line in cli.output().splitlines() if re.search(pattern, line)]
        return lines if len(lines) >= count else None

    lines: list[str] = wait_until(found, timeout=OUTPUT_TIMEOUT, interval=0.2, what=f"{count} lines like {pattern!r}")
    return lines


def test_cli_body_on_ray_info_lines_all_reach_the_worker_output_with_actor_and_message_id(
    logs_cli, producer, queue_name
) -> None:
    # Given three messages whose bodies each log the same INFO line three times on Ray
    message_ids = [send(producer, queue_name, "chatty") for _ in range(3)]

    # Then all nine lines appear in the worker's output, none eaten by Ray's deduplication, each with the
    # logger name, level, actor and message id
    lines = lines_matching(logs_cli, r"the same line from every message", 9)
    assert len(lines) == 9, logs_cli.output()
    for message_id in message_ids:
        mine = [line for line in lines if f"[chatty {message_id} on Ray pid " in line]
        assert len(mine) == 3, logs_cli.output()
        assert all("[tests.apps.body] [INFO]" in line for line in mine)
    assert logs_cli.stop() == 0, logs_cli.output()
    assert "repeated" not in logs_cli.output()


def test_cli_body_on_ray_that_raises_still_gets_its_lines_out(logs_cli, producer, queue_name) -> None:
    message_id = send(producer, queue_name, "chatty_fails")

    (line,) = lines_matching(logs_cli, rf"\[chatty_fails {message_id} on Ray pid \d+\] a line before failing", 1)
    assert "[tests.apps.body] [INFO]" in line
    lines_matching(logs_cli, r"RuntimeError: the body failed on purpose", 1)
    assert logs_cli.stop() == 0, logs_cli.output()
