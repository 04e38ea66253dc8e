"""The class form of an actor on replicas (``dramatiq_ray.ReplicaActor``): ``setup()`` once per replica, then
``perform()`` for every message, on the same object."""

from __future__ import annotations

import os
from typing import Any

import pytest

from dramatiq_ray import ConfigurationError, ReplicaActor, Replicas

pytestmark = pytest.mark.timeout(300)

RESULT_TIMEOUT_MS = 120_000


def test_replica_actor_runs_setup_once_per_replica_and_perform_for_each_message(
    ray_local: Any, no_lingering_replicas: None, start_worker: Any
) -> None:
    # Given a ReplicaActor whose setup keeps a "model" on self (declared in an importable module)
    from tests.apps.replica_classes import Embed, backend, broker

    start_worker(broker, threads=2)

    # When several messages run on its one replica
    messages = [Embed.send(value) for value in range(5)]
    results = [backend.get_result(message, block=True, timeout=RESULT_TIMEOUT_MS) for message in messages]

    # Then each perform saw what setup kept on self, setup ran once, on the replica, and returned the state
    assert [result["embedded"] for result in results] == [0, 10, 20, 30, 40]
    pids = {result["pid"] for result in results}
    assert len(pids) == 1 and os.getpid() not in pids
    assert {result["loaded_in"] for result in results} == pids
    assert {result["setups"] for result in results} == {1}
    assert {result["state"]["state_of"] for result in results} == pids


def test_replica_actor_without_replicas_in_its_meta_is_refused() -> None:
    with pytest.raises(ConfigurationError, match=r"must set replicas = dramatiq_ray\.Replicas"):

        class NoReplicas(ReplicaActor):
            class Meta:
                max_retries = 0

            def perform(self) -> None:
                return None


def test_replica_actor_refuses_a_setup_given_to_its_replicas() -> None:
    with pytest.raises(ConfigurationError, match=r"runs its own setup\(\)"):

        class TwoSetups(ReplicaActor):
            class Meta:
                replicas = Replicas(setup=dict)

            def perform(self) -> None:
                return None
