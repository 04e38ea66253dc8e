"""A pool of replicas: one named, detached Ray actor per (actor name, version) that starts, watches, scales and
stops that actor's replicas. Every worker process of every host finds the same pool by name.

The pool never carries a message: workers ask it which replicas are ready (:meth:`Pool.view`, which also
counts as a touch and, with ``wanted``, as demand) and call the replicas themselves. Each tick the pool asks every
replica how busy it is and then:

- replaces replicas that died (their calls fail retryably in the workers);
- starts one more replica, up to ``max``, while calls wait (a worker found every replica busy, or a replica
  has calls queued), and keeps at least ``min``;
- retires a replica idle for ``idle_timeout_s`` while more than ``min`` run (it leaves the view first, and is
  stopped once it has no call left);
- drains when asked (a newer version started): hands out no replica, stops each once its calls are done, exits;
- exits, with its replicas, when no worker touched it for ``orphan_timeout_s``.

``setup`` failing is reported in the view (workers fail their messages with ``ReplicaSetupError`` and log it
once) and retried with exponential backoff (1 s doubling up to 60 s), never in a tight loop. A replica that
Ray cannot place (no node with a free GPU) is reported in the view too, and its messages wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from dataclasses import dataclass, field
from typing import Any

from .replica import Replica, ReplicaSpec, kill_quietly

__all__ = ["NAMESPACE", "Pool", "PoolSpec", "pool_name"]

#: The Ray namespace of every pool and replica.
NAMESPACE = "dramatiq_ray"
#: Seconds between two ticks of a pool.
TICK_S = 0.2
#: Seconds a starting replica may take to answer before it is reported as not placed.
PLACEMENT_WARN_S = 10.0
#: Seconds a worker keeps a view before asking again; a retired replica stays alive at least twice as long.
VIEW_TTL_S = 1.0
#: Seconds after a worker's demand during which the pool counts calls as waiting.
DEMAND_S = 1.0
_BACKOFF_MAX_S = 60.0


def pool_name(actor_name: str, version: str) -> str:
    return f"pool:{actor_name}:{version}"


@dataclass(frozen=True)
class PoolSpec:
    """Everything a pool needs to start replicas, given by the worker that creates it."""

    actor_name: str
    version: str
    min: int
    max: int
    idle_timeout_s: float
    orphan_timeout_s: float
    replica: ReplicaSpec
    #: Ray actor options of each replica (resources, runtime_env, scheduling).
    options: dict[str, Any]


@dataclass
class _Member:
    name: str
    handle: Any
    state: str = "starting"  # starting | ready | retiring
    created: float = field(default_factory=time.monotonic)
    retired_at: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)
    load: dict[str, Any] = field(default_factory=dict)


class Pool:
    """The Ray actor class of a pool (made remote by the worker that creates it)."""

    def __init__(self, spec: PoolSpec) -> None:
        self.spec = spec
        self.name = pool_name(spec.actor_name, spec.version)
        self.members: dict[str, _Member] = {}
        self.counter = 0
        self.created_at = time.time()
        self.touched = time.monotonic()
        self.demand_at = float("-inf")
        self.draining = False
        self.setup_error: dict[str, str] | None = None
        self.failures = 0
        self.retry_at = 0.0
        self.unplaced: str | None = None
        self.setups = 0
        self._control: asyncio.Task[None] | None = None
        self._remote: Any = None
        self._starting: set[asyncio.Future[None]] = set()  # referenced until done, so none is collected

    # --- what workers ask ----------------------------------------------------------------------------------

    async def view(self, wanted: bool = False) -> dict[str, Any]:
        """The ready replicas (name, handle), and why there are none: a setup error, a replica Ray cannot place,
        a drain. ``wanted``: the asking worker has a call waiting for a free replica."""
        self._ensure_control()
        now = time.monotonic()
        self.touched = now
        if wanted:
            self.demand_at = now
        ready = [] if self.draining else [(m.name, m.handle) for m in self.members.values() if m.state == "ready"]
        return {
            "replicas": ready,
            "setup_error": self.setup_error,
            "unplaced": self.unplaced,
            "draining": self.draining,
        }

    async def drain(self) -> None:
        """Stop handing out replicas; stop each once its calls are done; then exit."""
        self._ensure_control()
        self.draining = True

    async def describe(self) -> dict[str, Any]:
        """What an operator sees: actor, version, replicas with their node and load, age."""
        self._ensure_control()
        return {
            "actor": self.spec.actor_name,
            "version": self.spec.version,
            "min": self.spec.min,
            "max": self.spec.max,
            "draining": self.draining,
            "age_s": time.time() - self.created_at,
            "setups": self.setups,
            "setup_error": (self.setup_error or {}).get("message"),
            "unplaced": self.unplaced,
            "replicas": [
                {"name": m.name, "state": m.state, **m.info, **m.load} for m in sorted(self.members.values(), key=_age)
            ],
        }

    # --- the control loop ----------------------------------------------------------------------------------

    def _ensure_control(self) -> None:
        if self._control is None or self._control.done():
            self._control = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        await self._drain_other_versions()
        while True:
            try:
                if await self._tick():
                    break
            except Exception as error:  # the loop must outlive one bad tick
                print(f"dramatiq-ray: pool {self.name} tick failed: {error!r}", flush=True)
            await asyncio.sleep(TICK_S)
        await self._exit()

    async def _tick(self) -> bool:
        """One round of the control loop; ``True`` when the pool should exit."""
        now = time.monotonic()
        if now - self.touched > self.spec.orphan_timeout_s:
            print(f"dramatiq-ray: no worker touched pool {self.name} for {self.spec.orphan_timeout_s} s; exiting.")
            return True
        await self._refresh_loads()
        for member in list(self.members.values()):
            idle = not member.load.get("in_flight")
            if member.state == "retiring" and idle and now - member.retired_at > 2 * VIEW_TTL_S:
                self._stop(member)
        if self.draining:
            for member in list(self.members.values()):
                if member.state != "retiring":
                    member.state, member.retired_at = "retiring", now
            return not self.members
        self._scale(now)
        return False

    async def _refresh_loads(self) -> None:
        live = [m for m in self.members.values() if m.state != "starting"]
        loads = await asyncio.gather(*(self._load(m) for m in live), return_exceptions=True)
        for member, load in zip(live, loads, strict=True):
            if isinstance(load, BaseException):
                if _actor_died(load):
                    print(f"dramatiq-ray: replica {member.name} died; it is replaced.", flush=True)
                    self.members.pop(member.name, None)
                continue
            member.load = load

    async def _load(self, member: _Member) -> dict[str, Any]:
        return dict(await asyncio.wait_for(_future(member.handle.load.remote()), timeout=10))

    def _scale(self, now: float) -> None:
        active = [m for m in self.members.values() if m.state != "retiring"]
        ready = [m for m in active if m.state == "ready"]
        starting = any(m.state == "starting" for m in active)
        waiting = now - self.demand_at < DEMAND_S or any(m.load.get("waiting") for m in ready)
        wanted = max(self.spec.min, min(self.spec.max, len(active) + 1) if waiting else 0)
        if len(active) < wanted and not starting and now >= self.retry_at:
            self._start_member()
            return
        if len(active) > self.spec.min and not waiting:
            idle = [
                m for m in ready if not m.load.get("in_flight") and m.load.get("idle_s", 0) > self.spec.idle_timeout_s
            ]
            if idle:
                member = max(idle, key=_age)
                member.state, member.retired_at = "retiring", now

    # --- replicas ------------------------------------------------------------------------------------------

    def _start_member(self) -> None:
        import ray

        if self._remote is None:
            self._remote = ray.remote(Replica)
        self.counter += 1
        name = f"replica:{self.spec.actor_name}:{self.spec.version}:{self.counter}"
        handle = self._remote.options(
            name=name,
            namespace=NAMESPACE,
            lifetime="detached",
            get_if_exists=True,
            max_concurrency=max(1000, 4 * self.spec.replica.max_concurrency),
            max_restarts=0,
            **self.spec.options,
        ).remote(self.spec.replica)
        member = _Member(name, handle)
        self.members[name] = member
        task = asyncio.ensure_future(self._await_start(member))
        self._starting.add(task)
        task.add_done_callback(self._starting.discard)

    async def _await_start(self, member: _Member) -> None:
        started = _future(member.handle.start.remote())
        try:
            await asyncio.wait_for(asyncio.shield(_future(member.handle.load.remote())), PLACEMENT_WARN_S)
        except TimeoutError:
            resources = {k: v for k, v in self.spec.options.items() if k != "runtime_env"}
            self.unplaced = (
                f"Replica {member.name} has not started after {PLACEMENT_WARN_S:.0f} s: Ray cannot place it yet "
                f"(it asks for {resources or 'default resources'}; no node has them free), or its runtime_env is "
                "still being set up. Its messages wait."
            )
        except Exception:
            pass  # the start below reports it
        try:
            member.info = dict(await started)
        except Exception as error:
            self.members.pop(member.name, None)
            kill_quietly(member.handle)
            self.failures += 1
            delay = min(_BACKOFF_MAX_S, 2.0 ** (self.failures - 1))
            self.retry_at = time.monotonic() + delay
            cause = getattr(error, "cause", None) or error
            message = getattr(cause, "message", None) or f"Replica {member.name} could not start: {error}"
            self.setup_error = {
                "id": f"{member.name}:{self.failures}",
                "message": message,
                "traceback": getattr(cause, "remote_traceback", "") or str(error),
                "retry_in_s": f"{delay:.0f}",
            }
            if self.unplaced and member.name in self.unplaced:
                self.unplaced = None
            return
        self.setups += 1
        self.failures = 0
        self.setup_error = None
        if self.unplaced and member.name in self.unplaced:
            self.unplaced = None
        if member.name in self.members:
            member.state = "ready"

    def _stop(self, member: _Member) -> None:
        self.members.pop(member.name, None)
        kill_quietly(member.handle)

    # --- versions and exit ---------------------------------------------------------------------------------

    async def _drain_other_versions(self) -> None:
        """A pool that starts drains the pools of the same actor with another version."""
        import ray

        prefix = f"pool:{self.spec.actor_name}:"
        with contextlib.suppress(Exception):
            for entry in ray.util.list_named_actors(all_namespaces=True):
                if entry["namespace"] == NAMESPACE and entry["name"].startswith(prefix) and entry["name"] != self.name:
                    other = ray.get_actor(entry["name"], namespace=NAMESPACE)
                    other.drain.remote()

    async def _exit(self) -> None:
        import ray

        for member in list(self.members.values()):
            self._stop(member)
        with contextlib.suppress(Exception):
            ray.kill(ray.get_runtime_context().current_actor, no_restart=True)
        await asyncio.sleep(1)
        os._exit(0)


def _age(member: _Member) -> float:
    return -member.created


def _future(ref: Any) -> asyncio.Future[Any]:
    return asyncio.wrap_future(ref.future())


def _actor_died(error: BaseException) -> bool:
    from ray import exceptions as rx

    return isinstance(error, rx.RayActorError)
