"""Warm replicas: setup runs once per replica, its state reaches the body, results and exceptions come back as
with Ray tasks, and a message cannot change a replica's resources."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import dramatiq
import pytest

from dramatiq_ray import (
    Batch,
    ConfigurationError,
    ReplicaError,
    Replicas,
    SpilledResult,
    current_message,
    replica_state,
)
from tests.replicas.conftest import RESULT_TIMEOUT_MS


def load_model() -> dict[str, Any]:
    return {"loaded_in": os.getpid(), "load_id": uuid.uuid4().hex}


class ModelError(Exception):
    pass


# --- the option --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"setup": 42}, "setup must be a callable"),
        ({"min": -1}, "min must be an integer >= 0"),
        ({"min": 3, "max": 2}, "max must be an integer >= max(min, 1) = 3"),
        ({"min": 0, "max": 0}, "max must be an integer >= max(min, 1) = 1"),
        ({"max_concurrency": 0}, "max_concurrency must be an integer >= 1"),
        ({"idle_timeout_s": 0}, "idle_timeout_s must be a number of seconds > 0"),
        ({"version": ""}, "version must be a non-empty string"),
        ({"batch": 32}, "batch must be a dramatiq_ray.Batch"),
    ],
)
def test_replicas_refuse_invalid_settings_at_construction(kwargs: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigurationError, match="Invalid Replicas") as caught:
        Replicas(**kwargs)
    assert any(problem in text for text in caught.value.problems)


def test_batch_refuses_a_size_below_one() -> None:
    with pytest.raises(ConfigurationError, match="max_size must be an integer >= 1"):
        Batch(max_size=0)


def test_replicas_option_must_be_a_replicas_instance(replica_broker: Any) -> None:
    with pytest.raises(ConfigurationError, match=r"must be a dramatiq_ray\.Replicas"):

        @dramatiq.actor(broker=replica_broker, replicas={"min": 1})
        def infer() -> None: ...


def test_replica_state_outside_a_replica_raises_a_clear_error() -> None:
    with pytest.raises(ReplicaError, match="only available in the body of an actor declared with replicas"):
        replica_state()


# --- running on replicas -----------------------------------------------------------------------------------


def test_replicas_setup_runs_once_for_many_messages(replica_broker, start_worker, describe_pool) -> None:
    # Given an actor on one replica whose setup returns a fresh id each time it runs
    @dramatiq.actor(broker=replica_broker, store_results=True, replicas=Replicas(setup=load_model))
    def infer(value: int) -> list[Any]:
        state = replica_state()
        return [state["load_id"], state["loaded_in"], os.getpid(), value * 2]

    start_worker(replica_broker)
    messages = [infer.send(value) for value in range(8)]
    results = [message.get_result(block=True, timeout=RESULT_TIMEOUT_MS) for message in messages]

    # Then every message ran on the one replica, with the state of its one setup
    assert {tuple(result[:3]) for result in results} == {tuple(results[0][:3])}
    assert results[0][1] == results[0][2] != os.getpid()
    assert [result[3] for result in results] == [value * 2 for value in range(8)]
    assert describe_pool("infer")["setups"] == 1


def test_replica_body_sees_its_current_message(replica_broker, start_worker) -> None:
    @dramatiq.actor(broker=replica_broker, store_results=True, replicas=Replicas())
    def describe(value: int) -> list[Any]:
        message = current_message()
        assert message is not None
        return [message.message_id, message.args[0], replica_state()]

    start_worker(replica_broker)
    sent = describe.send(7)

    assert sent.get_result(block=True, timeout=RESULT_TIMEOUT_MS) == [sent.message_id, 7, None]


def test_replica_result_over_the_threshold_is_spilled_on_the_replica(replica_broker, start_worker) -> None:
    @dramatiq.actor(broker=replica_broker, store_results=True, replicas=Replicas())
    def big() -> str:
        return "x" * 100_000

    runner = next(m for m in replica_broker.middleware if hasattr(m, "_replicas"))._replicas
    returned: list[Any] = []
    run = runner.run
    runner.run = lambda call: returned.append(run(call)) or returned[-1]  # type: ignore[method-assign]
    start_worker(replica_broker)

    assert big.send().get_result(block=True, timeout=RESULT_TIMEOUT_MS) == "x" * 100_000
    assert isinstance(returned[0], SpilledResult)


def test_replica_exception_comes_back_with_its_own_type(replica_broker, start_worker) -> None:
    @dramatiq.actor(broker=replica_broker, store_results=True, max_retries=0, replicas=Replicas())
    def fails() -> None:
        raise ModelError("bad input shape (3, 4)")

    start_worker(replica_broker)
    message = fails.send()

    with pytest.raises(dramatiq.results.ResultFailure) as caught:
        message.get_result(block=True, timeout=RESULT_TIMEOUT_MS)
    assert caught.value.orig_exc_type.endswith("ModelError")
    assert "bad input shape (3, 4)" in caught.value.orig_exc_msg


def test_async_body_runs_on_its_replica(replica_broker, start_worker) -> None:
    @dramatiq.actor(broker=replica_broker, store_results=True, replicas=Replicas(setup=load_model))
    async def infer(value: int) -> list[Any]:
        return [replica_state()["loaded_in"], os.getpid(), value + 1]

    start_worker(replica_broker)
    loaded_in, pid, value = infer.send(1).get_result(block=True, timeout=RESULT_TIMEOUT_MS)

    assert (loaded_in, value) == (pid, 2)


# --- what a message cannot change --------------------------------------------------------------------------


@pytest.mark.parametrize("option", ["num_gpus", "num_cpus", "memory", "resources", "runtime_env"])
def test_message_cannot_change_replica_resources(replica_broker, option: str) -> None:
    @dramatiq.actor(broker=replica_broker, replicas=Replicas())
    def infer() -> None: ...

    value = {"resources": {"x": 1}, "runtime_env": {"env_vars": {"A": "1"}}}.get(option, 1)
    with pytest.raises(ConfigurationError, match=f"runs on replicas.*cannot change {option}"):
        infer.send_with_options(ray_options={option: value})


def test_message_cannot_set_the_replicas_option(replica_broker) -> None:
    @dramatiq.actor(broker=replica_broker)
    def plain() -> None: ...

    with pytest.raises(ConfigurationError, match="cannot set the replicas option"):
        plain.send_with_options(replicas=Replicas())


def test_direct_call_of_an_actor_with_replicas_runs_locally(replica_broker: Any, tmp_path: Path) -> None:
    @dramatiq.actor(broker=replica_broker, replicas=Replicas())
    def where() -> int:
        return os.getpid()

    assert where() == os.getpid()
