"""Retries on real brokers and workers: replacing the stock middleware, Dramatiq's behaviours, denylist, Ray."""

from __future__ import annotations

import logging
import os
import threading
from collections import Counter
from typing import Any

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import Middleware
from dramatiq.middleware import Retries as StockRetries
from dramatiq.results import ResultFailure, Results
from dramatiq.results.backends import RedisBackend

from dramatiq_ray import RayWorkerCrashedError, Retries

JOIN_MS = 60_000
HOUR_MS = 3_600_000


class PermanentError(Exception):
    pass


class EnqueueLog(Middleware):
    """Records every requeue, so a test can prove a message was, or was not, requeued.

    Retries requeues with a delay; the worker later moves the message to its queue with no delay (not recorded).
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requeues: list[tuple[str, int, int]] = []

    def after_enqueue(self, broker: dramatiq.Broker, message: dramatiq.Message[Any], delay: int | None) -> None:
        retries = message.options.get("retries")
        if retries and delay is not None:
            with self.lock:
                self.requeues.append((message.actor_name, retries, delay))


class Runs:
    """Counts runs per key; ``wait`` blocks until a key reaches a count."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.cond = threading.Condition()
        self.exhausted: list[tuple[dict[str, Any], dict[str, Any]]] = []
        self.exhausted_event = threading.Event()

    def hit(self, key: str) -> None:
        with self.cond:
            self.counts[key] += 1
            self.cond.notify_all()


def stock_index(broker: dramatiq.Broker) -> int:
    return next(i for i, m in enumerate(broker.middleware) if type(m) is StockRetries)


def retries_middleware(broker: dramatiq.Broker) -> list[Middleware]:
    return [m for m in broker.middleware if isinstance(m, StockRetries)]


def declare_failing(broker: dramatiq.Broker, runs: Runs, *, raises: type[BaseException] = RuntimeError, **options: Any):
    @dramatiq.actor(broker=broker, **options)
    def on_exhausted(message_data: dict[str, Any], info: dict[str, Any]) -> None:
        runs.exhausted.append((message_data, info))
        runs.exhausted_event.set()

    @dramatiq.actor(broker=broker, on_retry_exhausted="on_exhausted", **options)
    def always_fails(key: str) -> None:
        runs.hit(key)
        raise raises(f"failure of {key}")

    return always_fails


# --- taking the stock Retries' place -------------------------------------------------------------------------


def test_retries_replaces_the_stock_retries_in_place_when_an_actor_is_declared(stub_broker: StubBroker) -> None:
    # Given a broker with Dramatiq's default middleware, stock Retries among them
    position = stock_index(stub_broker)
    ours = Retries(max_attempts=3)
    # When ours is added and an actor is declared
    stub_broker.add_middleware(ours)

    @dramatiq.actor(broker=stub_broker)
    def noop() -> None:
        pass

    # Then ours is the only Retries, at the stock one's position
    assert retries_middleware(stub_broker) == [ours]
    assert stub_broker.middleware.index(ours) == position


def test_retries_replaces_the_stock_retries_on_add_when_actors_already_exist(stub_broker: StubBroker) -> None:
    @dramatiq.actor(broker=stub_broker)
    def noop() -> None:
        pass

    ours = Retries()
    stub_broker.add_middleware(ours)
    assert retries_middleware(stub_broker) == [ours]


def test_retries_replaces_the_stock_retries_when_a_worker_boots(start_worker) -> None:
    # Given a broker on which nothing was declared since ours was added
    broker = StubBroker()
    ours = Retries()
    broker.add_middleware(ours)
    assert len(retries_middleware(broker)) == 2
    # When a worker boots, Then ours has taken the stock one's place
    start_worker(broker, threads=1)
    assert retries_middleware(broker) == [ours]
    broker.close()


class StockCheckAtSend(Middleware):
    """Records, at each send, whether a stock Retries (not ours) is still on the broker."""

    def __init__(self) -> None:
        self.stock_present_at_send: list[bool] = []

    def before_enqueue(self, broker: dramatiq.Broker, message: dramatiq.Message[Any], delay: int | None) -> None:
        self.stock_present_at_send.append(any(type(m) is StockRetries for m in broker.middleware))


def test_retries_stock_retries_is_gone_before_the_first_send_when_actors_already_exist(
    stub_broker: StubBroker,
) -> None:
    # Given a broker with an actor declared and the stock Retries
    check = StockCheckAtSend()
    stub_broker.add_middleware(check)

    @dramatiq.actor(broker=stub_broker)
    def noop() -> None:
        pass

    position = stock_index(stub_broker)
    # When ours is installed
    ours = Retries()
    stub_broker.add_middleware(ours)
    # Then the stock one is gone at once, ours is at its position, and the first send sees only ours
    assert retries_middleware(stub_broker) == [ours]
    assert stub_broker.middleware.index(ours) == position
    noop.send()
    assert check.stock_present_at_send == [False]


def test_retries_declaring_an_actor_on_a_fresh_broker_removes_the_stock_retries() -> None:
    # Given a fresh broker (no actors, no queues, never booted) with ours installed next to the stock one
    broker = StubBroker()
    ours = Retries()
    broker.add_middleware(ours)
    assert len(retries_middleware(broker)) == 2
    try:
        # When an actor is declared
        @dramatiq.actor(broker=broker)
        def noop() -> None:
            pass

        # Then only ours is left, and declaring more actors leaves the middleware list alone
        assert retries_middleware(broker) == [ours]
        middleware = broker.middleware

        @dramatiq.actor(broker=broker)
        def other() -> None:
            pass

        assert broker.middleware is middleware
    finally:
        broker.close()


class CountingRetries(Retries):
    """Our Retries, recording each call of its takeover."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.takeover_calls: list[str] = []

    def _take_over(self, broker: dramatiq.Broker) -> None:
        self.takeover_calls.append(threading.current_thread().name)
        super()._take_over(broker)


def test_retries_processing_messages_does_not_call_the_takeover(stub_broker: StubBroker, start_worker) -> None:
    # Given ours installed, actors declared and a worker booted
    ours = CountingRetries(max_attempts=3, backoff=0)
    stub_broker.add_middleware(ours)
    runs = Runs()
    always_fails = declare_failing(stub_broker, runs)

    @dramatiq.actor(broker=stub_broker)
    def succeeds(key: str) -> None:
        runs.hit(key)

    start_worker(stub_broker)
    assert retries_middleware(stub_broker) == [ours]
    calls, middleware = len(ours.takeover_calls), stub_broker.middleware
    # When messages are sent, processed, failed, requeued and exhausted
    for key in ("a", "b"):
        succeeds.send(f"ok-{key}")
        always_fails.send(key)
    stub_broker.join(always_fails.queue_name, fail_fast=False, timeout=JOIN_MS)
    assert runs.exhausted_event.wait(JOIN_MS / 1000)
    # Then every message ran as expected, and the takeover was neither called nor changed the middleware list
    assert runs.counts == Counter({"a": 3, "b": 3, "ok-a": 1, "ok-b": 1})
    assert len(ours.takeover_calls) == calls
    assert stub_broker.middleware is middleware


def test_retries_leaves_a_broker_it_is_not_on_alone(stub_broker: StubBroker) -> None:
    before = list(stub_broker.middleware)
    Retries().after_process_boot(stub_broker)
    assert stub_broker.middleware == before


def test_retries_requeues_once_per_failure_in_place_of_the_stock_retries(stub_broker: StubBroker, start_worker) -> None:
    # Given ours added to a broker that came with the stock Retries (two requeuers would multiply the runs)
    log = EnqueueLog()
    stub_broker.add_middleware(log)
    stub_broker.add_middleware(Retries(max_attempts=3, backoff=0))
    runs = Runs()
    always_fails = declare_failing(stub_broker, runs)
    start_worker(stub_broker)
    # When a message always fails
    always_fails.send("m")
    stub_broker.join(always_fails.queue_name, fail_fast=False, timeout=JOIN_MS)
    # Then it ran exactly max_attempts times, with one requeue per failed attempt but the last
    assert runs.counts["m"] == 3
    assert [retries for _, retries, _ in log.requeues] == [1, 2]


# --- Dramatiq's behaviours, with ours in place of the stock one ----------------------------------------------


@pytest.fixture
def retrying_broker(stub_broker: StubBroker, start_worker) -> StubBroker:
    stub_broker.add_middleware(Retries(max_attempts=3, backoff=0, denylist=[PermanentError]))
    return stub_broker


def run_to_end(broker: StubBroker, start_worker, actor: dramatiq.Actor[Any, Any], **options: Any) -> None:
    start_worker(broker)
    actor.send_with_options(args=("m",), **options)
    broker.join(actor.queue_name, fail_fast=False, timeout=JOIN_MS)


def test_retries_exhausted_message_is_dead_lettered_and_on_retry_exhausted_is_sent(
    retrying_broker: StubBroker, start_worker
) -> None:
    runs = Runs()
    always_fails = declare_failing(retrying_broker, runs)
    run_to_end(retrying_broker, start_worker, always_fails)
    assert runs.counts["m"] == 3
    assert [m.actor_name for m in retrying_broker.dead_letters] == ["always_fails"]
    # The callback gets the failed message, with Dramatiq's retry options, and Dramatiq's counts
    ((message_data, info),) = runs.exhausted
    assert info == {"retries": 2, "max_retries": 2}
    assert message_data["options"]["retries"] == 3
    assert "failure of m" in message_data["options"]["traceback"]
    assert isinstance(message_data["options"]["requeue_timestamp"], int)


def test_retries_throws_fails_at_once_without_on_retry_exhausted(retrying_broker: StubBroker, start_worker) -> None:
    runs = Runs()
    always_fails = declare_failing(retrying_broker, runs, raises=KeyError, throws=KeyError)
    run_to_end(retrying_broker, start_worker, always_fails)
    assert runs.counts["m"] == 1
    assert runs.exhausted == []
    assert len(retrying_broker.dead_letters) == 1


def test_retries_configuration_error_fails_at_once(retrying_broker: StubBroker, start_worker, caplog) -> None:
    # A configuration error (bad ray_options, an actor Ray cannot import) fails the same way on every attempt.
    from dramatiq_ray.errors import RayOptionsError

    runs = Runs()
    always_fails = declare_failing(retrying_broker, runs, raises=RayOptionsError)
    run_to_end(retrying_broker, start_worker, always_fails)
    assert runs.counts["m"] == 1
    assert runs.exhausted == []
    assert len(retrying_broker.dead_letters) == 1
    assert "cannot run as configured" in caplog.text


def test_retries_retry_when_decides_instead_of_the_attempt_count(retrying_broker: StubBroker, start_worker) -> None:
    seen: list[tuple[int, str]] = []

    def retry_when(retries: int, exception: BaseException) -> bool:
        seen.append((retries, type(exception).__name__))
        return retries < 4

    runs = Runs()
    always_fails = declare_failing(retrying_broker, runs, retry_when=retry_when)
    run_to_end(retrying_broker, start_worker, always_fails)
    assert runs.counts["m"] == 5
    assert seen == [(n, "RuntimeError") for n in range(5)]


def test_retries_retry_exception_delay_overrides_the_backoff(stub_broker: StubBroker, start_worker) -> None:
    # Given a backoff of an hour, When the actor raises Retry(delay=1), Then it runs again at once
    stub_broker.add_middleware(Retries(max_attempts=3, backoff=HOUR_MS))
    runs = Runs()

    @dramatiq.actor(broker=stub_broker)
    def retry_once(key: str) -> None:
        runs.hit(key)
        if runs.counts[key] == 1:
            raise dramatiq.Retry(delay=1)

    run_to_end(stub_broker, start_worker, retry_once)
    assert runs.counts["m"] == 2


def test_retries_actor_max_retries_zero_runs_once(retrying_broker: StubBroker, start_worker) -> None:
    runs = Runs()
    always_fails = declare_failing(retrying_broker, runs, max_retries=0)
    run_to_end(retrying_broker, start_worker, always_fails)
    assert runs.counts["m"] == 1
    assert runs.exhausted[0][1] == {"retries": 0, "max_retries": 0}


def test_retries_actor_max_attempts_overrides_the_middleware(retrying_broker: StubBroker, start_worker) -> None:
    runs = Runs()
    always_fails = declare_failing(retrying_broker, runs, max_attempts=2)
    run_to_end(retrying_broker, start_worker, always_fails)
    assert runs.counts["m"] == 2


def test_retries_message_max_attempts_overrides_the_actor(retrying_broker: StubBroker, start_worker) -> None:
    runs = Runs()
    always_fails = declare_failing(retrying_broker, runs, max_attempts=2)
    run_to_end(retrying_broker, start_worker, always_fails, max_attempts=4)
    assert runs.counts["m"] == 4


def test_retries_actor_backoff_overrides_the_middleware(stub_broker: StubBroker, start_worker) -> None:
    # Given a middleware backoff of an hour, an actor backoff of 0 makes the retries immediate
    stub_broker.add_middleware(Retries(max_attempts=2, backoff=HOUR_MS))
    runs = Runs()
    always_fails = declare_failing(stub_broker, runs, backoff=0)
    run_to_end(stub_broker, start_worker, always_fails)
    assert runs.counts["m"] == 2


def test_retries_denied_exception_fails_at_once_and_says_why(
    retrying_broker: StubBroker, start_worker, caplog: pytest.LogCaptureFixture
) -> None:
    runs = Runs()
    always_fails = declare_failing(retrying_broker, runs, raises=PermanentError)
    with caplog.at_level(logging.WARNING, logger="dramatiq_ray.retries"):
        run_to_end(retrying_broker, start_worker, always_fails)
    assert runs.counts["m"] == 1
    assert runs.exhausted == []
    assert len(retrying_broker.dead_letters) == 1
    (record,) = [r for r in caplog.records if r.name == "dramatiq_ray.retries" and r.levelno >= logging.WARNING]
    text = record.getMessage()
    message_id = retrying_broker.dead_letters[0].message_id
    assert message_id in text
    assert "'always_fails'" in text
    assert f"{__name__}.PermanentError matches retry denylist entry" in text


def test_retries_actor_denylist_adds_to_the_middlewares(retrying_broker: StubBroker, start_worker) -> None:
    runs = Runs()
    always_fails = declare_failing(retrying_broker, runs, raises=KeyError, retry_denylist=["LookupError"])
    run_to_end(retrying_broker, start_worker, always_fails)
    assert runs.counts["m"] == 1
    assert runs.exhausted == []


def test_retries_message_denylist_applies_to_that_message_only(retrying_broker: StubBroker, start_worker) -> None:
    runs = Runs()
    always_fails = declare_failing(retrying_broker, runs, raises=KeyError)
    run_to_end(retrying_broker, start_worker, always_fails, retry_denylist=[KeyError])
    assert runs.counts["m"] == 1
    always_fails.send("other")
    retrying_broker.join(always_fails.queue_name, fail_fast=False, timeout=JOIN_MS)
    assert runs.counts["other"] == 3


def test_retries_ray_system_failure_is_retried_when_exception_is_denied(stub_broker: StubBroker, start_worker) -> None:
    # Raised directly (as the Ray execution middleware raises it) so that no Ray cluster is needed here
    stub_broker.add_middleware(Retries(max_attempts=2, backoff=0, denylist=[Exception]))
    runs = Runs()
    always_fails = declare_failing(stub_broker, runs, raises=RayWorkerCrashedError)
    run_to_end(stub_broker, start_worker, always_fails)
    assert runs.counts["m"] == 2
    assert len(runs.exhausted) == 1


# --- Redis and RabbitMQ end to end ---------------------------------------------------------------------------


@pytest.fixture
def redis_results(redis_broker: Any, redis_url: str, redis_namespace: str) -> Results:
    backend = RedisBackend(url=redis_url, namespace=f"{redis_namespace}-results")
    results = Results(backend=backend)
    redis_broker.add_middleware(results)
    return results


def test_retries_on_redis_denied_failure_is_stored_and_not_requeued(
    redis_broker: Any, redis_results: Results, redis_client: Any, redis_namespace: str, start_worker
) -> None:
    log = EnqueueLog()
    redis_broker.add_middleware(log)
    redis_broker.add_middleware(Retries(max_attempts=3, backoff=0, denylist=[f"{__name__}.PermanentError"]))
    runs = Runs()
    always_fails = declare_failing(redis_broker, runs, raises=PermanentError, store_results=True)
    start_worker(redis_broker)
    message = always_fails.send("m")
    # The failure is stored as soon as the message fails, so get_result raises instead of timing out
    with pytest.raises(ResultFailure) as failure:
        message.get_result(block=True, timeout=JOIN_MS)
    assert failure.value.orig_exc_type == "PermanentError"
    assert runs.counts["m"] == 1
    assert log.requeues == []
    redis_broker.join(always_fails.queue_name, timeout=JOIN_MS)
    assert runs.exhausted == []
    assert redis_client.zcard(f"{redis_namespace}:{always_fails.queue_name}.XQ") == 1


def test_retries_on_redis_exhausted_message_is_dead_lettered_with_failure_stored(
    redis_broker: Any, redis_results: Results, redis_client: Any, redis_namespace: str, start_worker
) -> None:
    log = EnqueueLog()
    redis_broker.add_middleware(log)
    redis_broker.add_middleware(Retries(max_attempts=3, backoff=20, max_backoff=30, jitter=0.5))
    runs = Runs()
    always_fails = declare_failing(redis_broker, runs, store_results=True)
    start_worker(redis_broker)
    message = always_fails.send("m")
    with pytest.raises(ResultFailure) as failure:
        message.get_result(block=True, timeout=JOIN_MS)
    assert failure.value.orig_exc_type == "RuntimeError"
    assert runs.counts["m"] == 3
    # Delays: 20 ms after the first attempt, then 40 capped at 30 ms, each less up to half for jitter
    (_, first, first_delay), (_, second, second_delay) = log.requeues
    assert (first, second) == (1, 2)
    assert first_delay is not None and 10 <= first_delay <= 20
    assert second_delay is not None and 15 <= second_delay <= 30
    assert runs.exhausted_event.wait(JOIN_MS / 1000)
    assert redis_client.zcard(f"{redis_namespace}:{always_fails.queue_name}.XQ") == 1


def test_retries_on_rabbitmq_exhausted_message_is_retried_then_reported(
    rabbitmq_broker: Any, queue_name: str, start_worker
) -> None:
    log = EnqueueLog()
    rabbitmq_broker.add_middleware(log)
    rabbitmq_broker.add_middleware(Retries(max_attempts=2, backoff=0))
    runs = Runs()
    always_fails = declare_failing(rabbitmq_broker, runs, queue_name=queue_name)
    start_worker(rabbitmq_broker)
    always_fails.send("m")
    assert runs.exhausted_event.wait(JOIN_MS / 1000)
    assert runs.counts["m"] == 2
    assert [(actor, retries) for actor, retries, _ in log.requeues] == [("always_fails", 1)]
    assert runs.exhausted[0][1] == {"retries": 1, "max_retries": 1}


def test_retries_on_rabbitmq_denied_message_is_not_requeued(
    rabbitmq_broker: Any, redis_url: str, redis_namespace: str, queue_name: str, start_worker
) -> None:
    rabbitmq_broker.add_middleware(Results(backend=RedisBackend(url=redis_url, namespace=redis_namespace)))
    log = EnqueueLog()
    rabbitmq_broker.add_middleware(log)
    rabbitmq_broker.add_middleware(Retries(max_attempts=3, backoff=0))
    runs = Runs()
    always_fails = declare_failing(
        rabbitmq_broker,
        runs,
        raises=PermanentError,
        queue_name=queue_name,
        store_results=True,
        retry_denylist=[PermanentError],
    )
    start_worker(rabbitmq_broker)
    message = always_fails.send("m")
    with pytest.raises(ResultFailure):
        message.get_result(block=True, timeout=JOIN_MS)
    assert runs.counts["m"] == 1
    assert log.requeues == []


# --- exceptions coming back from Ray -------------------------------------------------------------------------


def test_retries_denies_an_exception_raised_in_a_ray_task_by_its_original_type(
    ray_local: Any, stub_broker: StubBroker, start_worker
) -> None:
    @ray_local.remote(max_retries=0)
    def look_up() -> None:
        raise KeyError("missing")

    stub_broker.add_middleware(Retries(max_attempts=3, backoff=0, denylist=["LookupError"]))
    runs = Runs()

    @dramatiq.actor(broker=stub_broker)
    def on_ray(key: str) -> None:
        runs.hit(key)
        ray_local.get(look_up.remote(), timeout=120)

    run_to_end(stub_broker, start_worker, on_ray)
    assert runs.counts["m"] == 1


def test_retries_retries_a_crashed_ray_worker_even_when_exception_is_denied(
    ray_local: Any, stub_broker: StubBroker, start_worker
) -> None:
    @ray_local.remote(max_retries=0)
    def crash() -> None:
        os._exit(1)

    stub_broker.add_middleware(Retries(max_attempts=2, backoff=0, denylist=[Exception]))
    runs = Runs()
    errors: list[str] = []

    @dramatiq.actor(broker=stub_broker)
    def on_ray(key: str) -> None:
        runs.hit(key)
        try:
            ray_local.get(crash.remote(), timeout=120)
        except Exception as error:
            errors.append(type(error).__name__)
            raise

    run_to_end(stub_broker, start_worker, on_ray)
    assert errors == ["WorkerCrashedError", "WorkerCrashedError"]
    assert runs.counts["m"] == 2


# --- with the Ray execution middleware -----------------------------------------------------------------------


@pytest.mark.parametrize(("raises", "runs_expected"), [(KeyError, 1), (RuntimeError, 2)])
def test_retries_with_ray_execution_denies_or_retries_a_body_raising_on_ray(
    ray_local: Any, stub_broker: StubBroker, start_worker, raises: type[Exception], runs_expected: int
) -> None:
    from dramatiq_ray.execution import RayExecutionMiddleware

    # Given bodies that run as Ray tasks, and KeyError (through its base LookupError) denied
    stub_broker.add_middleware(RayExecutionMiddleware())
    log = EnqueueLog()
    stub_broker.add_middleware(log)
    stub_broker.add_middleware(Retries(max_attempts=2, backoff=0, denylist=["LookupError"]))

    @dramatiq.actor(broker=stub_broker)
    def on_ray(pid: int) -> None:
        if os.getpid() == pid:
            raise AssertionError("the body ran in the worker process, not on Ray")
        raise raises("from the Ray worker")

    # When the body fails on Ray, Then a denied exception runs once, a retryable one max_attempts times
    start_worker(stub_broker)
    on_ray.send(os.getpid())
    stub_broker.join(on_ray.queue_name, fail_fast=False, timeout=JOIN_MS)
    assert len(log.requeues) == runs_expected - 1
    (dead,) = stub_broker.dead_letters
    assert type(dead._exception).__name__ != "AssertionError"
    assert isinstance(dead._exception, raises)
