"""The ``replicas`` actor option: what a pool of warm replicas looks like, checked when it is built.

Nothing here imports Ray: producers declare actors with this option too.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigurationError

__all__ = [
    "REPLICA_RESOURCE_OPTIONS",
    "Batch",
    "Replicas",
    "check_message_options",
    "check_replicas",
    "replica_options",
]

#: The ``ray_options`` that shape a replica (its resources and environment): fixed when the replica starts, so a
#: message cannot change them.
REPLICA_RESOURCE_OPTIONS = frozenset(
    {
        "accelerator_type",
        "label_selector",
        "memory",
        "num_cpus",
        "num_gpus",
        "object_store_memory",
        "placement_group",
        "placement_group_bundle_index",
        "placement_group_capture_child_tasks",
        "resources",
        "runtime_env",
        "scheduling_strategy",
    }
)


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _integer(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class Batch:
    """Micro-batching on a replica, as Ray Serve's ``@serve.batch`` does: concurrent calls are gathered into one
    call of the body with a list of their first arguments, and the body returns a list of as many results.

    Parameters:
      max_size: at most this many messages per call of the body.
      max_wait_ms: how long, in milliseconds, the first message of a batch waits for others.

    Raises:
      ConfigurationError: when a parameter is invalid.
    """

    max_size: int = 32
    max_wait_ms: float = 10

    def __post_init__(self) -> None:
        problems = []
        if not _integer(self.max_size) or self.max_size < 1:
            problems.append(f"max_size must be an integer >= 1, not {self.max_size!r}")
        if not _number(self.max_wait_ms) or self.max_wait_ms < 0:
            problems.append(f"max_wait_ms must be a number of milliseconds >= 0, not {self.max_wait_ms!r}")
        if problems:
            raise ConfigurationError("Invalid Batch: " + "; ".join(problems) + ".", problems)


@dataclass(frozen=True)
class Replicas:
    """Run an actor's body on warm replicas: long-lived, named, detached Ray actors that run ``setup`` once and
    keep what it returned for every message they run (:func:`dramatiq_ray.replica_state`).

    Example::

        def load_model():
            return Model.load("weights.bin")

        @dramatiq.actor(ray_options={"num_gpus": 1}, replicas=dramatiq_ray.Replicas(setup=load_model, max=4))
        def infer(prompt):
            return dramatiq_ray.replica_state().generate(prompt)

    Parameters:
      setup: called once per replica, with no arguments, before it runs any message; its return value is the
        replica's state. ``None``: the state is ``None``.
      min: replicas kept running while the pool exists (0: none while idle, the first message starts one).
      max: at most this many replicas; more start while messages wait for a free one.
      max_concurrency: messages one replica runs at the same time (each in a thread of its own, or together
        on its event loop for ``async def`` bodies).
      idle_timeout_s: seconds a replica may sit idle before it is stopped, down to ``min``.
      version: part of the pool's name. Changing it (a new model, new code) starts new replicas and drains the
        old pool: its replicas finish their calls, then exit.
      batch: micro-batching (:class:`Batch`), or ``None`` to call the body once per message.
      orphan_timeout_s: seconds a pool no worker has touched lives on before it stops all its replicas.
      cancel_grace_s: seconds a cancelled call (time limit, shutdown) may keep running before its replica is
        restarted.

    Raises:
      ConfigurationError: when a parameter is invalid (every problem is listed).
    """

    setup: Callable[[], Any] | None = None
    min: int = 1
    max: int = 1
    max_concurrency: int = 1
    idle_timeout_s: float = 300
    version: str = "1"
    batch: Batch | None = None
    orphan_timeout_s: float = 600
    cancel_grace_s: float = 10

    def __post_init__(self) -> None:
        problems = []
        if self.setup is not None and not callable(self.setup):
            problems.append(f"setup must be a callable or None, not {type(self.setup).__name__}")
        if not _integer(self.min) or self.min < 0:
            problems.append(f"min must be an integer >= 0, not {self.min!r}")
        elif not _integer(self.max) or self.max < max(self.min, 1):
            problems.append(f"max must be an integer >= max(min, 1) = {max(self.min, 1)}, not {self.max!r}")
        if not _integer(self.max_concurrency) or self.max_concurrency < 1:
            problems.append(f"max_concurrency must be an integer >= 1, not {self.max_concurrency!r}")
        for name in ("idle_timeout_s", "orphan_timeout_s", "cancel_grace_s"):
            value = getattr(self, name)
            if not _number(value) or value <= 0:
                problems.append(f"{name} must be a number of seconds > 0, not {value!r}")
        if not isinstance(self.version, str) or not self.version or any(c in self.version for c in ":/ "):
            problems.append(f"version must be a non-empty string without ':', '/' or spaces, not {self.version!r}")
        if self.batch is not None and not isinstance(self.batch, Batch):
            problems.append(f"batch must be a dramatiq_ray.Batch or None, not {type(self.batch).__name__}")
        if problems:
            raise ConfigurationError("Invalid Replicas: " + "; ".join(problems) + ".", problems)


def check_replicas(value: object, *, actor_name: str) -> Replicas | None:
    """The actor's ``replicas`` option, checked at declaration.

    Raises:
      ConfigurationError: the option is not a ``Replicas`` (or ``None``).
    """
    if value is None:
        return None
    if not isinstance(value, Replicas):
        raise ConfigurationError(
            f"The replicas option of actor {actor_name!r} must be a dramatiq_ray.Replicas(...), not "
            f"{type(value).__name__}."
        )
    return value


def check_message_options(options: Mapping[str, Any], *, actor_name: str, on_replicas: bool) -> None:
    """Refuse message options that would change a pool of replicas: the ``replicas`` option itself, and, for an
    actor that runs on replicas, ``ray_options`` that shape a replica (resources, ``runtime_env``).

    Raises:
      ConfigurationError: naming the options to remove.
    """
    if "replicas" in options:
        raise ConfigurationError(
            f"A message of actor {actor_name!r} cannot set the replicas option: it belongs to the actor "
            "(@dramatiq.actor(replicas=...)). Remove it from the message options."
        )
    fixed = sorted(REPLICA_RESOURCE_OPTIONS & set(options.get("ray_options") or {}))
    if on_replicas and fixed:
        raise ConfigurationError(
            f"Actor {actor_name!r} runs on replicas, whose resources are fixed when they start: a message cannot "
            f"change {', '.join(fixed)}. Remove them from the message's ray_options, or declare another actor "
            "with those options.",
            [f"ray_options cannot set {name} for a message of an actor with replicas" for name in fixed],
        )


def replica_options(ray_options: Mapping[str, Any]) -> dict[str, Any]:
    """The Ray actor options of a replica: the resource and environment options among an actor's task options
    (options only tasks have, such as ``max_retries``, do not apply)."""
    return {name: value for name, value in ray_options.items() if name in REPLICA_RESOURCE_OPTIONS}
