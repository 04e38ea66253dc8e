"""dramatiq_ray.Results with a real worker: Dramatiq's behaviours hold, oversized results spill and travel."""

from __future__ import annotations

import functools
import logging
import threading
from pathlib import Path
from typing import Any

import dramatiq
import pytest
from dramatiq.middleware import Middleware
from dramatiq.results import ResultFailure, ResultMissing, ResultTimeout
from dramatiq.results import Results as DramatiqResults

from dramatiq_ray import Results, SpillingBackend, find_spilling_backend, get_pointer
from dramatiq_ray.errors import BlobNotFoundError, ConfigurationError
from dramatiq_ray.payloads.marker import is_spilled_shape

BIG = "x" * 2_000


class EnqueueRecorder(Middleware):
    """Records the arguments of every message the broker enqueues."""

    def __init__(self) -> None:
        self.args: dict[str, list[tuple[Any, ...]]] = {}

    def before_enqueue(self, broker: dramatiq.Broker, message: dramatiq.Message[Any], delay: int) -> None:
        self.args.setdefault(message.actor_name, []).append(tuple(message.args))


@pytest.fixture
def results(stub_broker, stub_backend, fs_store) -> Results:
    middleware = Results(backend=stub_backend, store=fs_store, max_inline_bytes=1024)
    stub_broker.add_middleware(middleware)
    return middleware


def run_all(broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
    for queue in broker.get_declared_queues():
        broker.join(queue, timeout=60_000, fail_fast=False)
    worker.join()


def test_results_returns_a_spilled_value_through_a_real_worker(stub_broker, results, start_worker) -> None:
    @dramatiq.actor(store_results=True, max_retries=0)
    def render(n: int) -> str:
        return "x" * n

    worker = start_worker(stub_broker)
    big, small = render.send(5_000), render.send(10)
    run_all(stub_broker, worker)
    assert big.get_result(block=True, timeout=10_000) == "x" * 5_000
    assert get_pointer(big).startswith("resultfs://")
    assert small.get_result() == "x" * 10
    assert get_pointer(small) is None


def test_results_on_redis_spills_and_hydrates_with_a_blocking_get(
    redis_broker, redis_backend, fs_store, start_worker
) -> None:
    redis_broker.add_middleware(Results(backend=redis_backend, store=fs_store, max_inline_bytes=100))

    @dramatiq.actor(store_results=True, max_retries=0)
    def render(n: int) -> list[int]:
        return list(range(n))

    start_worker(redis_broker)
    message = render.send(1_000)
    assert message.get_result(block=True, timeout=30_000) == list(range(1_000))
    assert get_pointer(message).startswith("resultfs://")


def test_results_worker_does_not_warn_that_the_results_middleware_is_missing(
    stub_broker, results, start_worker, caplog
) -> None:
    @dramatiq.actor(store_results=True)
    def answer() -> int:
        return 42

    worker = start_worker(stub_broker)
    with caplog.at_level(logging.WARNING):
        message = answer.send()
        run_all(stub_broker, worker)
    assert message.get_result() == 42
    assert not [r for r in caplog.records if "haven't added the Results middleware" in r.getMessage()]


def test_results_actor_option_overrides_the_threshold(stub_broker, results, start_worker) -> None:
    @dramatiq.actor(store_results=True, max_inline_bytes=0)
    def tiny() -> str:
        return "ok"

    @dramatiq.actor(store_results=True, max_inline_bytes=10_000)
    def roomy() -> str:
        return BIG

    worker = start_worker(stub_broker)
    small, large = tiny.send(), roomy.send()
    run_all(stub_broker, worker)
    assert get_pointer(small) is not None and small.get_result() == "ok"
    assert get_pointer(large) is None and large.get_result() == BIG


def test_results_message_option_overrides_the_actor_option(stub_broker, results, start_worker) -> None:
    @dramatiq.actor(store_results=True, max_inline_bytes=10_000)
    def roomy() -> str:
        return BIG

    worker = start_worker(stub_broker)
    message = roomy.send_with_options(max_inline_bytes=0)
    run_all(stub_broker, worker)
    assert get_pointer(message) is not None and message.get_result() == BIG


def test_results_invalid_actor_threshold_is_refused_at_declaration(stub_broker, results) -> None:
    with pytest.raises(ConfigurationError, match="max_inline_bytes must be an integer"):

        @dramatiq.actor(store_results=True, max_inline_bytes="1MB")
        def misconfigured() -> str:
            return "value"


def test_results_invalid_message_threshold_is_refused_at_send(stub_broker, results) -> None:
    @dramatiq.actor(store_results=True)
    def answer() -> str:
        return "value"

    with pytest.raises(ConfigurationError, match="max_inline_bytes must be an integer"):
        answer.send_with_options(max_inline_bytes=-1)


def test_results_unencodable_result_fails_promptly_instead_of_timing_out(stub_broker, results, start_worker) -> None:
    @dramatiq.actor(store_results=True)
    def opaque() -> object:
        return object()

    worker = start_worker(stub_broker)
    message = opaque.send()
    run_all(stub_broker, worker)
    with pytest.raises(ResultFailure, match="cannot be encoded"):
        message.get_result(block=True, timeout=10_000)


def test_results_pipeline_carries_the_pointer_and_the_next_actor_gets_the_value(
    stub_broker, results, start_worker
) -> None:
    # Given a pipeline whose first actor returns an oversized value
    recorder = EnqueueRecorder()
    stub_broker.add_middleware(recorder)
    received: list[int] = []

    @dramatiq.actor
    def produce() -> str:
        return BIG

    @dramatiq.actor(store_results=True)
    def measure(value: str) -> int:
        received.append(len(value))
        return len(value)

    worker = start_worker(stub_broker)
    pipe = dramatiq.pipeline([produce.message(), measure.message()]).run()
    run_all(stub_broker, worker)
    # Then the next message carried only a pointer, and the actor received the original value
    [(marker,)] = recorder.args["measure"]
    assert set(marker) == {"__dramatiq_ray_spilled__"} and marker["__dramatiq_ray_spilled__"].startswith("resultfs://")
    assert received == [len(BIG)]
    assert pipe.get_result(block=True) == len(BIG)


def test_results_on_success_callback_receives_the_hydrated_value(stub_broker, results, start_worker) -> None:
    done = threading.Event()
    received: list[str] = []

    @dramatiq.actor
    def callback(message_data: dict[str, Any], value: str) -> None:
        received.append(value)
        done.set()

    @dramatiq.actor(on_success="callback")
    def produce() -> str:
        return BIG

    start_worker(stub_broker)
    produce.send()
    assert done.wait(30)
    assert received == [BIG]


def test_results_pipeline_and_group_completion_count_spilled_results(stub_broker, results, start_worker, fs_store):
    # Given a finished pipeline and group whose results were spilled
    @dramatiq.actor(store_results=True)
    def produce(n: int) -> str:
        return "y" * n

    worker = start_worker(stub_broker)
    pipe = dramatiq.pipeline([produce.message(2_000)]).run()
    grp = dramatiq.group([produce.message(3_000), produce.message(4_000)]).run()
    run_all(stub_broker, worker)
    assert len(list(Path(fs_store.path).rglob("*.json"))) == 3
    # Then completion checks count them
    assert pipe.completed and pipe.completed_count == 1
    assert grp.completed and grp.completed_count == 2


def test_results_get_pointer_checks_a_spilled_result_without_reading_its_blob(
    stub_broker, results, start_worker, fs_store
) -> None:
    # Given a spilled result whose blob was then deleted
    @dramatiq.actor(store_results=True)
    def produce(n: int) -> str:
        return "y" * n

    worker = start_worker(stub_broker)
    message = produce.send(2_000)
    run_all(stub_broker, worker)
    for path in Path(fs_store.path).rglob("*.json"):
        path.unlink()
    # Then get_pointer still finds the pointer, while reading the value reads the blob
    assert get_pointer(message) is not None
    with pytest.raises(BlobNotFoundError):
        message.get_result()


def test_results_group_get_results_returns_every_original_value(stub_broker, results, start_worker) -> None:
    @dramatiq.actor(store_results=True)
    def produce(n: int) -> str:
        return "z" * n

    worker = start_worker(stub_broker)
    grp = dramatiq.group([produce.message(10), produce.message(3_000)]).run()
    run_all(stub_broker, worker)
    assert list(grp.get_results(block=True, timeout=10_000)) == ["z" * 10, "z" * 3_000]


def test_results_direct_call_returns_the_plain_value(stub_broker, results) -> None:
    @dramatiq.actor(store_results=True)
    def produce() -> str:
        return BIG

    assert produce() == BIG


@pytest.fixture
def spill_everything(stub_broker, stub_backend, fs_store) -> Results:
    middleware = Results(backend=stub_backend, store=fs_store, max_inline_bytes=0)
    stub_broker.add_middleware(middleware)
    return middleware


def test_results_with_threshold_zero_keep_dramatiqs_behaviours(stub_broker, spill_everything, start_worker) -> None:
    @dramatiq.actor(store_results=True, max_retries=0)
    def add(x: int, y: int) -> int:
        return x + y

    @dramatiq.actor(store_results=True, max_retries=0)
    def fail() -> None:
        raise ValueError("failed")

    @dramatiq.actor(store_results=True)
    def nothing() -> None:
        return None

    never = add.message(1, 1)  # never sent
    with pytest.raises(ResultMissing):
        never.get_result()
    with pytest.raises(ResultTimeout):
        never.get_result(block=True, timeout=500)
    worker = start_worker(stub_broker)
    added, failed, none = add.send(1, 2), fail.send(), nothing.send()
    run_all(stub_broker, worker)
    assert added.get_result(block=True) == 3
    assert get_pointer(added) is not None
    with pytest.raises(ResultFailure, match="actor raised ValueError: failed"):
        failed.get_result(block=True)
    assert none.get_result() is None
    pipe = dramatiq.pipeline([add.message(1, 2), add.message(3)]).run()
    grp = dramatiq.group([add.message(1, 1), add.message(2, 2)]).run()
    run_all(stub_broker, worker)
    assert pipe.get_result(block=True) == 6 and list(pipe.get_results()) == [3, 6]
    assert list(grp.get_results(block=True)) == [2, 4]


def test_results_accepts_a_ready_spilling_backend_for_plain_dramatiq_results(
    stub_broker, stub_backend, fs_store, start_worker
) -> None:
    backend = SpillingBackend(stub_backend, store=fs_store, max_inline_bytes=0)
    stub_broker.add_middleware(DramatiqResults(backend=backend))

    @dramatiq.actor(store_results=True)
    def produce() -> str:
        return "value"

    worker = start_worker(stub_broker)
    message = produce.send()
    run_all(stub_broker, worker)
    assert find_spilling_backend(stub_broker) is backend
    assert message.get_result() == "value" and get_pointer(message) is not None


def test_results_refuses_store_settings_twice(stub_backend, fs_store) -> None:
    with pytest.raises(ConfigurationError, match="not both"):
        Results(backend=SpillingBackend(stub_backend), store=fs_store)


def test_results_subclass_keeps_every_dramatiq_results_argument(stub_backend) -> None:
    middleware = Results(backend=stub_backend, store_results=True, result_ttl=5_000)
    assert (middleware.store_results, middleware.result_ttl) == (True, 5_000)
    assert {"store_results", "result_ttl", "max_inline_bytes"} <= middleware.actor_options
    assert isinstance(middleware.backend, SpillingBackend) and middleware.backend.backend is stub_backend


def test_results_puts_one_stock_results_that_keeps_nothing_right_after_itself(stub_broker, stub_backend) -> None:
    # Given our Results on a broker, once an actor is declared
    ours = Results(backend=stub_backend)
    stub_broker.add_middleware(ours)

    @dramatiq.actor(broker=stub_broker)
    def anything() -> None: ...

    # Then Dramatiq's own `type(m) is Results` check holds, while our Results stays the broker's results backend
    stock = [m for m in stub_broker.middleware if type(m) is DramatiqResults]
    assert len(stock) == 1
    assert stub_broker.middleware.index(stock[0]) == stub_broker.middleware.index(ours) + 1
    assert stub_broker.get_results_backend() is ours.backend


def test_results_stores_a_marker_returned_by_an_outer_runner_without_spilling_again(
    stub_broker, results, start_worker, fs_store
) -> None:
    # Given an actor whose body already spilled its value (as the Ray execution path does inside its task)
    from dramatiq_ray import SpilledResult
    from dramatiq_ray.payloads.pointers import digest_of

    data = b'"' + b"r" * 3_000 + b'"'
    pointer = fs_store.put(digest_of(data), data)

    @dramatiq.actor(store_results=True)
    def remote_like() -> SpilledResult:
        return SpilledResult(pointer)

    worker = start_worker(stub_broker)
    message = remote_like.send()
    run_all(stub_broker, worker)
    # Then the backend holds that very pointer and the value reads back; no second blob was written
    assert get_pointer(message) == pointer
    assert message.get_result() == "r" * 3_000
    assert len(list(__import__("pathlib").Path(fs_store.path).rglob("*.json"))) == 1


def test_spill_plan_read_inputs_is_idempotent_and_leaves_other_arguments_alone(results, fs_store) -> None:
    from dramatiq_ray.payloads.pointers import digest_of

    pointer = fs_store.put(digest_of(b"[1,2]"), b"[1,2]")
    plan = results.backend.plan(None)
    args, kwargs = plan.read_inputs(({"__dramatiq_ray_spilled__": pointer}, 3), {"k": "v"})
    assert (args, kwargs) == (([1, 2], 3), {"k": "v"})
    assert plan.read_inputs(args, kwargs) == (args, kwargs)


def test_results_on_redis_with_threshold_zero_keep_dramatiqs_behaviours(
    redis_broker, redis_backend, fs_store, start_worker
) -> None:
    # Given every result spilled, on the Redis broker and the Redis result backend
    redis_broker.add_middleware(Results(backend=redis_backend, store=fs_store, max_inline_bytes=0))

    @dramatiq.actor(store_results=True, max_retries=0)
    def add(x: int, y: int) -> int:
        return x + y

    @dramatiq.actor(store_results=True, max_retries=0)
    def fail() -> None:
        raise ValueError("failed")

    with pytest.raises(ResultMissing):
        add.message(1, 1).get_result()
    start_worker(redis_broker)
    added, failed = add.send(1, 2), fail.send()
    pipe = dramatiq.pipeline([add.message(1, 2), add.message(3)]).run()
    grp = dramatiq.group([add.message(1, 1), add.message(2, 2)]).run()
    # Then values, failures, pipelines and groups behave as in Dramatiq
    assert added.get_result(block=True, timeout=30_000) == 3
    assert get_pointer(added) is not None
    with pytest.raises(ResultFailure, match="actor raised ValueError: failed"):
        failed.get_result(block=True, timeout=30_000)
    assert pipe.get_result(block=True, timeout=30_000) == 6
    assert list(grp.get_results(block=True, timeout=30_000)) == [2, 4]
    assert pipe.completed and grp.completed_count == 2


class ArgumentSpy(Middleware):
    """A middleware that wraps actor bodies, as the Ray execution middleware does, and records their arguments."""

    def __init__(self) -> None:
        self.seen: list[tuple[Any, ...]] = []

    def after_declare_actor(self, broker: dramatiq.Broker, actor: dramatiq.Actor[Any, Any]) -> None:
        inner = actor.fn

        @functools.wraps(inner)
        def spy(*args: Any, **kwargs: Any) -> Any:
            self.seen.append(args)
            return inner(*args, **kwargs)

        actor.fn = spy


def test_results_reads_piped_values_for_the_body_under_a_wrapper_added_later(
    stub_broker, stub_backend, fs_store, start_worker
) -> None:
    # Given actors declared first, then Results, then another middleware wrapping their bodies over ours
    @dramatiq.actor
    def produce() -> str:
        return BIG

    @dramatiq.actor
    def measure(value: str) -> int:
        return len(value)

    stub_broker.add_middleware(
        Results(backend=stub_backend, store=fs_store, max_inline_bytes=1_000, store_results=True)
    )
    spy = ArgumentSpy()
    stub_broker.add_middleware(spy)
    worker = start_worker(stub_broker)
    # When a pipeline passes an oversized value
    pipe = dramatiq.pipeline([produce.message(), measure.message()]).run()
    run_all(stub_broker, worker)
    # Then the body got the value, while the outer wrapper saw what the message carries: the marker
    assert pipe.get_result() == len(BIG)
    assert any(len(args) == 1 and is_spilled_shape(args[0]) for args in spy.seen)


def test_results_spills_the_result_of_an_async_actor(stub_broker, results, start_worker) -> None:
    from dramatiq.middleware import AsyncIO

    stub_broker.add_middleware(AsyncIO())
    stub_broker.emit_after("process_boot")

    @dramatiq.actor(store_results=True)
    async def render() -> str:
        return BIG

    worker = start_worker(stub_broker)
    message = render.send()
    run_all(stub_broker, worker)
    assert get_pointer(message) is not None
    assert message.get_result() == BIG
