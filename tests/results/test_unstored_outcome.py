"""A message whose outcome could not be stored: what comes after it (a pipeline's next step, an ``on_success``
callback, the success webhook) happens exactly once, for the attempt whose outcome was stored.

The result backend is a real Redis backend whose first store raises ``ConnectionError``: the fault is injected in
this process because a real outage cannot be timed to hit exactly one store.
"""

from __future__ import annotations

from typing import Any

import dramatiq
import pytest
from dramatiq.middleware import Middleware

from dramatiq_ray import ResultBackendError
from tests._services import wait_until
from tests.results._unstored import WAIT_S, install


@pytest.mark.parametrize("broker_fixture", ["redis_broker", "rabbitmq_broker"])
def test_unstored_outcome_pipeline_runs_its_next_step_once(
    request: pytest.FixtureRequest, broker_fixture: str, redis_client, redis_namespace, queue_name, start_worker
) -> None:
    # Given a pipeline step1 | step2 whose first store of step1's outcome fails
    broker = request.getfixturevalue(broker_fixture)
    backend, tally = install(broker, redis_client, redis_namespace)
    ran: list[int] = []

    @dramatiq.actor(broker=broker, queue_name=queue_name, store_results=True, min_backoff=10, max_backoff=50)
    def step1(x: int) -> int:
        return x + 1

    @dramatiq.actor(broker=broker, queue_name=queue_name, store_results=True, max_retries=0)
    def step2(x: int) -> int:
        ran.append(x)
        return x * 10

    start_worker(broker)
    pipe = dramatiq.pipeline([step1.message(1), step2.message()], broker=broker).run()

    # When step1 ran again (its outcome was not stored the first time) and everything settled
    assert pipe.get_result(block=True, timeout=WAIT_S * 1000) == 20
    wait_until(lambda: tally.acked["step1"] >= 2, timeout=WAIT_S, what="step1 to run twice")
    wait_until(lambda: tally.settled("step2"), timeout=WAIT_S, what="every step2 message to be processed")

    # Then step2 was sent and ran once, and step1's outcome is stored
    assert backend.stores >= 2
    assert tally.enqueued["step2"] == 1
    assert ran == [2]
    assert pipe.messages[0].get_result(backend=backend) == 2


def test_unstored_outcome_on_success_callback_runs_once(
    redis_broker, redis_client, redis_namespace, queue_name, start_worker
) -> None:
    _, tally = install(redis_broker, redis_client, redis_namespace)
    called: list[int] = []

    @dramatiq.actor(broker=redis_broker, queue_name=queue_name, max_retries=0)
    def after(message_data: dict[str, Any], result: int) -> None:
        called.append(result)

    @dramatiq.actor(
        broker=redis_broker, queue_name=queue_name, store_results=True, on_success="after", min_backoff=10,
        max_backoff=50,
    )  # fmt: skip
    def work() -> int:
        return 7

    start_worker(redis_broker)
    message = work.send()
    assert message.get_result(block=True, timeout=WAIT_S * 1000) == 7
    wait_until(lambda: tally.acked["work"] >= 2, timeout=WAIT_S, what="work to run twice")
    wait_until(lambda: tally.settled("after"), timeout=WAIT_S, what="every callback to be processed")

    assert tally.enqueued["after"] == 1
    assert called == [7]


def test_unstored_outcome_fails_the_attempt_with_a_result_backend_error(
    redis_broker, redis_client, redis_namespace, queue_name, start_worker
) -> None:
    # An attempt whose outcome cannot be stored fails (its retry stores it), so nothing downstream sees it succeed.
    install(redis_broker, redis_client, redis_namespace)
    failures: list[BaseException] = []

    class Seen(Middleware):
        def after_process_message(self, broker, message, *, result=None, exception=None) -> None:  # type: ignore[no-untyped-def]
            if exception is not None:
                failures.append(exception)

    redis_broker.add_middleware(Seen())

    @dramatiq.actor(broker=redis_broker, queue_name=queue_name, store_results=True, min_backoff=10, max_backoff=50)
    def work() -> int:
        return 7

    start_worker(redis_broker)
    assert work.send().get_result(block=True, timeout=WAIT_S * 1000) == 7
    assert len(failures) == 1 and isinstance(failures[0], ResultBackendError)
    assert "could not be stored" in str(failures[0]) and "ConnectionError" in str(failures[0])
