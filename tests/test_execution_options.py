"""``ray_options`` are checked with Ray's own rules where they are given: an actor's (and the middleware's
``default_options``) as ``ray.remote`` takes them, a message's as ``RemoteFunction.options()`` takes them, so
what passes the check at send is what Ray accepts in the worker."""

from __future__ import annotations

from typing import Any

import dramatiq
import pytest

from dramatiq_ray import RayExecutionMiddleware, RayOptionsError
from dramatiq_ray.execution.options import check_message_options, check_options

#: Options Ray's .options() refuses (ray/_common/ray_option_utils.py validate_task_options, in_options=True).
REFUSED_PER_MESSAGE: list[dict[str, Any]] = [
    {"max_calls": 0},
    {"max_calls": 4},
    {"object_store_memory": 1024},
    {"retry_exceptions": ["ValueError"]},
    {"placement_group_bundle_index": None},
    {"placement_group": "pg", "scheduling_strategy": "SPREAD"},
    {"num_cpus": 0.00001},
    {"num_gpus": -1},
    {"resources": {"GPU": 1}},
    {"resources": {"disk": 0.00001}},
    {"max_retries": -2},
    {"label_selector": {"bad key!": "a"}},
    {"label_selector": {"region": "bad value!"}},
    {"fallback_strategy": [{}]},
    {"fallback_strategy": [{"zone": "a"}]},
    {"enable_task_events": "yes"},
    {"runtime_env": "env"},
    {"_labels": ["a"]},
    {"name": 3},
    {"scheduling_strategy": 3},
]

#: Options Ray accepts, in .options() and in ray.remote alike.
ACCEPTED: dict[str, Any] = {
    "num_cpus": 0.5,
    "num_gpus": 0,
    "memory": 1024,
    "resources": {"disk": 1},
    "max_retries": -1,
    "retry_exceptions": True,
    "label_selector": {"region": "in(eu,us)", "ray.io/accelerator-type": "!A100"},
    "fallback_strategy": [{"label_selector": {"zone": "a"}}],
    "scheduling_strategy": "SPREAD",
    "placement_group_bundle_index": 0,
    "enable_task_events": False,
    "name": "train",
    "accelerator_type": "A100",
    "runtime_env": {"env_vars": {"A": "1"}},
}


def ray_refuses(options: dict[str, Any], *, in_options: bool) -> bool:
    from ray._common import ray_option_utils

    try:
        ray_option_utils.validate_task_options(options, in_options=in_options)
    except (TypeError, ValueError):
        return True
    return False


@pytest.mark.parametrize("options", REFUSED_PER_MESSAGE, ids=lambda options: ",".join(options))
def test_message_ray_options_that_ray_refuses_are_refused_by_the_message_check(options: dict[str, Any]) -> None:
    assert ray_refuses(options, in_options=True)

    with pytest.raises(RayOptionsError, match="message options of actor 'train'"):
        check_message_options(options, actor_name="train")


def test_ray_options_that_ray_accepts_pass_both_checks() -> None:
    assert not ray_refuses(ACCEPTED, in_options=True)

    assert check_message_options(ACCEPTED, actor_name="train") == ACCEPTED
    assert check_options(ACCEPTED, actor_name="train", where="actor options") == ACCEPTED


def test_actor_ray_options_may_set_what_only_ray_remote_accepts() -> None:
    options = {"max_calls": 1, "retry_exceptions": [ConnectionError]}
    assert not ray_refuses(options, in_options=False)

    assert check_options(options, actor_name="train", where="actor options") == options
    with pytest.raises(RayOptionsError, match="max_calls cannot be set per message"):
        check_message_options(options, actor_name="train")


def test_actor_max_calls_of_minus_one_is_refused_as_ray_refuses_it() -> None:
    assert ray_refuses({"max_calls": -1}, in_options=False)

    with pytest.raises(RayOptionsError, match="max_calls"):
        check_options({"max_calls": -1}, actor_name="train", where="actor options")


def test_message_max_calls_is_refused_at_send(stub_broker: Any) -> None:
    # Given an actor run on Ray
    stub_broker.add_middleware(RayExecutionMiddleware())

    @dramatiq.actor(broker=stub_broker)
    def train() -> None: ...

    # When a message asks for max_calls, which Ray's .options() refuses
    with pytest.raises(RayOptionsError, match="max_calls cannot be set per message"):
        train.send_with_options(ray_options={"max_calls": 0})

    # Then nothing was enqueued
    assert stub_broker.queues[train.queue_name].qsize() == 0


def test_message_ray_options_are_checked_with_the_actors_at_send(stub_broker: Any) -> None:
    stub_broker.add_middleware(RayExecutionMiddleware())

    @dramatiq.actor(broker=stub_broker, ray_options={"placement_group": "pg"})
    def train() -> None: ...

    with pytest.raises(RayOptionsError, match=r"placement_group and scheduling_strategy.*with the actor's"):
        train.send_with_options(ray_options={"scheduling_strategy": "SPREAD"})
