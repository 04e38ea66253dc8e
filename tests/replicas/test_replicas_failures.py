"""Warm replicas when things fail: a replica killed mid-call, a setup that raises."""

from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path

import dramatiq
import pytest
from dramatiq.results import ResultFailure

from dramatiq_ray import Replicas, replica_state
from dramatiq_ray.execution.replica_pool import NAMESPACE
from tests._services import wait_until
from tests.replicas.conftest import RESULT_TIMEOUT_MS


def test_replica_killed_mid_call_fails_the_message_retryably_and_is_replaced(
    replica_broker, start_worker, describe_pool, ray_local, tmp_path: Path
) -> None:
    started = tmp_path / "started"

    def load() -> str:
        return uuid.uuid4().hex

    # Given a message running on the pool's replica
    @dramatiq.actor(broker=replica_broker, store_results=True, max_retries=0, replicas=Replicas(setup=load))
    def hold(marker: str) -> str:
        Path(marker).write_text("started")
        while True:
            Path(marker).stat()  # hold until the replica is killed

    start_worker(replica_broker)
    message = hold.send(str(started))
    wait_until(started.exists, timeout=120, what="the body to start")

    # When its replica process is killed
    (replica,) = describe_pool("hold")["replicas"]
    ray_local.kill(ray_local.get_actor(replica["name"], namespace=NAMESPACE), no_restart=True)

    # Then the message fails with a retryable Ray system failure
    with pytest.raises(ResultFailure) as caught:
        message.get_result(block=True, timeout=RESULT_TIMEOUT_MS)
    assert caught.value.orig_exc_type == "RayWorkerCrashedError"
    # and the pool starts a new replica, which runs setup again
    wait_until(lambda: describe_pool("hold")["setups"] == 2, timeout=120, what="a replacement replica")
    (replacement,) = describe_pool("hold")["replicas"]
    assert replacement["name"] != replica["name"]


def test_failing_setup_logs_one_error_per_attempt_and_fails_messages_clearly(
    replica_broker, start_worker, describe_pool, caplog, tmp_path: Path
) -> None:
    attempts = tmp_path / "attempts"
    attempts.mkdir()

    def broken_setup() -> None:
        (attempts / uuid.uuid4().hex).touch()
        raise FileNotFoundError("weights.bin is missing")

    @dramatiq.actor(broker=replica_broker, store_results=True, max_retries=0, replicas=Replicas(setup=broken_setup))
    def infer(value: int) -> int:
        return value

    start_worker(replica_broker)
    caplog.set_level(logging.ERROR, logger="dramatiq_ray.execution.runners.replicas")
    messages = [infer.send(value) for value in range(10)]

    for message in messages:
        with pytest.raises(ResultFailure) as caught:
            message.get_result(block=True, timeout=RESULT_TIMEOUT_MS)
        assert caught.value.orig_exc_type == "ReplicaSetupError"
        assert "weights.bin is missing" in caught.value.orig_exc_msg
    setup_errors = [r for r in caplog.records if r.name.endswith("runners.replicas") and r.levelno == logging.ERROR]
    # One ERROR (with setup's traceback) per setup attempt, not one per message; attempts are backed off
    assert len(setup_errors) == len(list(attempts.iterdir()))
    assert len(setup_errors) < len(messages)
    assert "FileNotFoundError: weights.bin is missing" in setup_errors[0].getMessage()
    assert describe_pool("infer")["setups"] == 0


def test_replica_state_belongs_to_each_replica_process(replica_broker, start_worker) -> None:
    @dramatiq.actor(broker=replica_broker, store_results=True, replicas=Replicas(setup=os.getpid))
    def where() -> list[int]:
        return [replica_state(), os.getpid()]

    start_worker(replica_broker)
    state, pid = where.send().get_result(block=True, timeout=RESULT_TIMEOUT_MS)

    assert state == pid != os.getpid()
