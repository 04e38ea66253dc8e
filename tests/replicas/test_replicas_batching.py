"""Micro-batching on replicas: concurrent messages become one call of the body with a list."""

from __future__ import annotations

import os
from typing import Any

import dramatiq
import pytest
from dramatiq.results import ResultFailure

from dramatiq_ray import Batch, Replicas
from tests.replicas.conftest import RESULT_TIMEOUT_MS

MESSAGES = 6


def batched(**kwargs: Any) -> Replicas:
    # One wait long enough that messages sent together land in one batch on a busy machine.
    return Replicas(batch=Batch(max_size=MESSAGES, max_wait_ms=2000), **kwargs)


def test_concurrent_messages_are_run_as_one_batch_each_getting_its_own_element(replica_broker, start_worker) -> None:
    @dramatiq.actor(broker=replica_broker, store_results=True, replicas=batched())
    def double(values: list[int]) -> list[list[int]]:
        return [[value * 2, len(values), os.getpid()] for value in values]

    start_worker(replica_broker, threads=MESSAGES)
    messages = [double.send(value) for value in range(MESSAGES)]
    results = [message.get_result(block=True, timeout=RESULT_TIMEOUT_MS) for message in messages]

    assert [result[0] for result in results] == [value * 2 for value in range(MESSAGES)]
    assert max(result[1] for result in results) > 1  # at least one call of the body carried several messages


def test_batch_that_raises_fails_every_message_with_its_exception(replica_broker, start_worker) -> None:
    @dramatiq.actor(broker=replica_broker, store_results=True, max_retries=0, replicas=batched())
    def broken(values: list[int]) -> list[int]:
        raise ValueError(f"cannot score {len(values)} inputs")

    start_worker(replica_broker, threads=MESSAGES)
    messages = [broken.send(value) for value in range(3)]

    for message in messages:
        with pytest.raises(ResultFailure) as caught:
            message.get_result(block=True, timeout=RESULT_TIMEOUT_MS)
        assert caught.value.orig_exc_type == "ValueError"
        assert "cannot score" in caught.value.orig_exc_msg


def test_batch_returning_the_wrong_number_of_results_fails_every_message(replica_broker, start_worker) -> None:
    @dramatiq.actor(broker=replica_broker, store_results=True, max_retries=0, replicas=batched())
    def short(values: list[int]) -> list[int]:
        return values[:-1]

    start_worker(replica_broker, threads=MESSAGES)
    messages = [short.send(value) for value in range(3)]

    for message in messages:
        with pytest.raises(ResultFailure) as caught:
            message.get_result(block=True, timeout=RESULT_TIMEOUT_MS)
        assert caught.value.orig_exc_type == "ReplicaError"
        assert "must return a list with one result per input" in caught.value.orig_exc_msg
