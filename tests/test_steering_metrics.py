"""Metrics of cancel and progress: ``dramatiq_ray_cancellations_total{actor_name,outcome}``,
``dramatiq_ray_progress_writes_total{actor_name}`` and ``dramatiq_ray_progress_throttled_total{actor_name}``, read
from prometheus_client's real default registry after real cancels and reports (Redis broker and result backend)."""

from __future__ import annotations

import time
from typing import Any

import dramatiq
import pytest
from dramatiq.results import ResultFailure
from dramatiq.results.backends import RedisBackend
from prometheus_client import REGISTRY

from dramatiq_ray import CancelOutcome, Results, cancel, get_progress, report_progress
from dramatiq_ray.callpath.steering import Steering, _steered
from dramatiq_ray.results.steering import channel_for
from tests._services import wait_until
from tests.conftest import unique

pytestmark = pytest.mark.timeout(300)

RESULT_TIMEOUT_MS = 120_000


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def cancellations(actor_name: str, outcome: str) -> float:
    return sample("dramatiq_ray_cancellations_total", actor_name=actor_name, outcome=outcome)


@pytest.fixture
def broker(redis_broker: Any, redis_url: str, redis_namespace: str) -> Any:
    backend = RedisBackend(url=redis_url, namespace=f"{redis_namespace}-results")
    redis_broker.add_middleware(Results(backend=backend, store_results=True))
    return redis_broker


def test_cancellations_count_a_request_then_a_skip_before_start(broker, start_worker) -> None:
    # Given a delayed message of an actor whose name no other test uses
    name = unique("metrics_skipped").replace("-", "_")
    work = dramatiq.actor(lambda: None, broker=broker, actor_name=name)
    message = work.send_with_options(delay=300)

    # When it is cancelled, then taken by a worker
    assert cancel(message) is CancelOutcome.REQUESTED
    assert cancellations(name, "requested") == 1
    start_worker(broker)
    with pytest.raises(ResultFailure):
        message.get_result(block=True, timeout=RESULT_TIMEOUT_MS)

    # Then the worker counted it skipped, and nothing counted it stopped
    assert cancellations(name, "skipped") == 1
    assert cancellations(name, "stopped") == 0


def test_cancellations_count_a_body_stopped_while_it_ran(broker, start_worker) -> None:
    name = unique("metrics_stopped").replace("-", "_")

    def loop() -> None:
        done = 0
        while True:
            report_progress(done)
            done += 1
            time.sleep(0.01)

    actor = dramatiq.actor(loop, broker=broker, actor_name=name)
    start_worker(broker, threads=1)
    message = actor.send()
    wait_until(lambda: get_progress(message), timeout=30, what="the body to report")
    cancel(message)
    with pytest.raises(ResultFailure):
        message.get_result(block=True, timeout=RESULT_TIMEOUT_MS)

    assert cancellations(name, "requested") == 1
    assert cancellations(name, "stopped") == 1
    assert cancellations(name, "skipped") == 0


def test_cancellations_of_an_unknown_id_count_as_unknown_without_an_actor(broker) -> None:
    before = cancellations("", "unknown")
    assert cancel(unique("no-such-message"), broker=broker) is CancelOutcome.UNKNOWN
    assert cancellations("", "unknown") == before + 1


def test_progress_metrics_count_writes_and_reports_replaced_by_the_throttle(broker) -> None:
    # Given a message's steering whose throttle holds every report after the first
    name = unique("metrics_progress").replace("-", "_")
    channel = channel_for(broker.get_results_backend())
    assert channel is not None
    steering = Steering(channel, unique("message"), progress_every=3600)

    # When a body reports five times
    with _steered(steering, name):
        for done in range(1, 6):
            assert report_progress(done, 5) is True

    # Then the first and the last were written, and the three between were replaced before they were written
    assert sample("dramatiq_ray_progress_writes_total", actor_name=name) == 2
    assert sample("dramatiq_ray_progress_throttled_total", actor_name=name) == 3
    progress = channel.read_progress(steering.message_id)
    assert progress is not None and progress.done == 5


def test_progress_metrics_count_every_report_of_a_body_once(broker, start_worker) -> None:
    name = unique("metrics_reports").replace("-", "_")

    def steps(count: int) -> int:
        for step in range(1, count + 1):
            report_progress(step, count)
        return count

    actor = dramatiq.actor(steps, broker=broker, actor_name=name)
    start_worker(broker, threads=1)
    assert actor.send(40).get_result(block=True, timeout=RESULT_TIMEOUT_MS) == 40

    written = sample("dramatiq_ray_progress_writes_total", actor_name=name)
    throttled = sample("dramatiq_ray_progress_throttled_total", actor_name=name)
    # Every report is either written (the last one at the latest when the body ends) or replaced by a later one
    assert written >= 1 and written + throttled == 40
