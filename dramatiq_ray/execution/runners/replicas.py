"""The ``replicas`` runner: a message's body runs on a warm replica of its actor's pool (actor option
``replicas=dramatiq_ray.Replicas(...)``).

The worker finds (or creates) the pool by name, keeps a view of its ready replicas (refreshed every second,
which also tells the pool this worker is alive), and calls the least busy replica directly: one actor call
per message. It counts its own calls per replica and, when every replica has ``max_concurrency`` of them, waits
in slices (interruptibly) and tells the pool that calls wait (without waiting for its answer), so it starts
another one up to ``max``.

Like the ``ray_core`` runner it waits in slices so that a time limit or shutdown lands; then it cancels the
actor call (``ray.cancel``: the call's flag is set, an async body is cancelled; the replica restarts itself if
the call does not end within ``cancel_grace_s``). A replica that dies mid-call fails the message with
``RayWorkerCrashedError`` (retryable). The call is keyed by message id and attempt: a redelivered message takes
over the running call, or its outcome, on the replica that ran it.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import dramatiq

from ... import metrics
from ...callpath.body import target_for
from ...callpath.wrapper import Call
from ...errors import (
    RayUnavailableError,
    RayWorkerCrashedError,
    ReplicaSetupError,
    ReplicaUnavailableError,
)
from ..connection import RayRuntime
from ..outcome import raise_translated
from ..replica import ReplicaSpec
from ..replica_options import Replicas, replica_options
from ..replica_pool import NAMESPACE, VIEW_TTL_S, Pool, PoolSpec, pool_name

__all__ = ["ReplicaRunner", "message_key"]

logger = logging.getLogger(__name__)

#: While calls wait for a free replica, tell the pool at most this often (seconds).
DEMAND_EVERY_S = 0.25
#: At most this many seconds between two touches of a pool this process knows, while it runs (and at most a
#: third of the pool's ``orphan_timeout_s``).
HEARTBEAT_S = 30.0


def message_key(message: dramatiq.Message[Any]) -> str:
    """One message attempt: its id and how many times it was retried (a redelivery keeps both)."""
    return f"{message.message_id}:{message.options.get('retries', 0)}"


@dataclass
class _PoolClient:
    """This process's handle on one pool, its last view and its own calls per replica."""

    name: str
    generation: int
    handle: Any
    config: Replicas
    view: dict[str, Any] = field(default_factory=dict)
    viewed_at: float = float("-inf")
    in_flight: dict[str, int] = field(default_factory=dict)
    reported: set[str] = field(default_factory=set)
    #: Notified when a call of this process on this pool ends (a slot is free): one waiter wakes and takes it.
    freed: threading.Condition = field(default_factory=threading.Condition)


class ReplicaRunner:
    """Runs bodies on the replicas of their actor's pool.

    Parameters:
      runtime: this process's connection to Ray.
      options_for: the Ray options of an actor (its own over the middleware's defaults and runtime_env).
      wait_slice: seconds each wait blocks, so that interrupts land.
    """

    def __init__(self, *, runtime: RayRuntime, options_for: Any, wait_slice: float) -> None:
        self.runtime = runtime
        self.options_for = options_for
        self.wait_slice = wait_slice
        self._pools: dict[str, _PoolClient] = {}
        self._lock = threading.Lock()
        self._heartbeat: threading.Thread | None = None
        self._stopped = threading.Event()

    def run(self, call: Call) -> Any:
        import ray
        from ray import exceptions as rx

        actor_name = call.actor.actor_name
        config: Replicas = call.actor.options["replicas"]
        generation = self.runtime.attach()
        client = self._client(call.actor, config, generation)
        key = message_key(call.message._message)
        replica_name, replica = self._acquire(client, actor_name, key)
        started = time.monotonic()
        ref = None
        try:
            ref = replica.run.remote(key, call.args, call.kwargs, call.message._message, call.plan, call.steering)
            while True:
                try:
                    return ray.get(ref, timeout=self.wait_slice)
                except rx.GetTimeoutError:
                    if call.cancel_requested():
                        # dramatiq_ray.cancel: the call's flag is set (an async body is cancelled; one still
                        # running after cancel_grace_s restarts its replica), the message fails as cancelled.
                        self._cancel(ref, actor_name)
                        raise call.cancelled(f"while replica {replica_name} ran it") from None
        except Exception as error:
            if isinstance(error, rx.RayActorError) and not isinstance(error, rx.RayTaskError):
                client.view = {}  # ask the pool again: it replaces the replica
                failure = RayWorkerCrashedError(
                    f"The replica {replica_name} running actor {actor_name!r} died during the call: {error}. "
                    "The pool starts a new one; the message is retried."
                )
                metrics.record_ray_system_failure(failure)
                raise failure from error
            if isinstance(error, ConnectionError | rx.RaySystemError | rx.LocalRayletDiedError):
                self.runtime.lost(generation)
            raise_translated(error, actor_name=actor_name)
        except BaseException:
            if ref is not None:
                self._cancel(ref, actor_name)
            raise
        finally:
            self._release(client, replica_name)
            metrics.observe_ray_wait(actor_name, time.monotonic() - started)

    def _cancel(self, ref: Any, actor_name: str) -> None:
        import ray

        logger.info("Cancelling the replica call of actor %r.", actor_name)
        try:
            ray.cancel(ref)  # an actor call: sets its flag, cancels an async body; force would be refused
        except Exception as error:
            logger.warning("Could not cancel the replica call of actor %r: %s", actor_name, error)

    # --- the pool ------------------------------------------------------------------------------------------

    def _client(self, actor: dramatiq.Actor[Any, Any], config: Replicas, generation: int) -> _PoolClient:
        name = pool_name(actor.actor_name, config.version)
        client = self._pools.get(name)
        if client is not None and client.generation == generation:
            return client
        with self._lock:
            client = self._pools.get(name)
            if client is None or client.generation != generation:
                client = _PoolClient(name, generation, self._create_pool(actor, config), config)
                self._pools[name] = client
            self._start_heartbeat()
            return client

    def _create_pool(self, actor: dramatiq.Actor[Any, Any], config: Replicas) -> Any:
        import ray

        options = replica_options(self.options_for(actor))
        options = {key: value for key, value in options.items() if value is not None}
        spec = PoolSpec(
            actor_name=actor.actor_name,
            version=config.version,
            min=config.min,
            max=config.max,
            idle_timeout_s=config.idle_timeout_s,
            orphan_timeout_s=config.orphan_timeout_s,
            replica=ReplicaSpec(
                target=target_for(actor),
                setup=config.setup,
                max_concurrency=config.max_concurrency,
                batch=config.batch,
                cancel_grace_s=config.cancel_grace_s,
            ),
            options=options,
        )
        try:
            return (
                ray.remote(Pool)
                .options(
                    name=pool_name(actor.actor_name, config.version),
                    namespace=NAMESPACE,
                    lifetime="detached",
                    get_if_exists=True,
                    num_cpus=0,
                    max_restarts=0,
                    runtime_env=options.get("runtime_env"),
                )
                .remote(spec)
            )
        except (ConnectionError, ray.exceptions.RaySystemError) as error:
            raise RayUnavailableError(
                f"Could not reach Ray to find the replicas of {actor.actor_name!r}: {error}"
            ) from error

    def _refresh(self, client: _PoolClient, *, wanted: bool) -> None:
        import ray
        from ray import exceptions as rx

        ref = client.handle.view.remote(wanted)
        while True:
            try:
                client.view = ray.get(ref, timeout=self.wait_slice)
                break
            except rx.GetTimeoutError:
                continue
            except rx.RayActorError:
                # The pool exited (orphaned, drained) or died: find or create it again next time.
                with self._lock:
                    self._pools.pop(client.name, None)
                raise ReplicaUnavailableError(
                    f"The pool {client.name} went away; the message is retried and a worker starts it again."
                ) from None
        client.viewed_at = time.monotonic()
        self._report(client)

    def _tell_demand(self, client: _PoolClient) -> None:
        """Tell the pool that calls wait, without waiting for its answer (a pool gone is found by the next
        refresh)."""
        try:
            client.handle.view.remote(True)
        except Exception:
            logger.debug("Could not tell pool %s that calls wait.", client.name, exc_info=True)

    def _report(self, client: _PoolClient) -> None:
        """Log, once per event, what keeps the pool from serving: setup failing, a replica Ray cannot place."""
        error = client.view.get("setup_error")
        if error and error["id"] not in client.reported:
            client.reported.add(error["id"])
            logger.error(
                "%s (retrying in %s s)\nSetup traceback (on the replica):\n%s",
                error["message"],
                error["retry_in_s"],
                error["traceback"],
            )
        unplaced = client.view.get("unplaced")
        if unplaced and unplaced not in client.reported:
            client.reported.add(unplaced)
            logger.warning("%s", unplaced)

    def _acquire(self, client: _PoolClient, actor_name: str, key: str) -> tuple[str, Any]:
        """A ready replica with room for one more call of this process: the one ``key`` hashes to when it has room
        (so a redelivered message finds the replica that ran it), else the least busy. Waits in slices, for a
        call of this process to end or the pool to start a replica."""
        wanted, asked_at = False, float("-inf")
        while True:
            now = time.monotonic()
            if now - client.viewed_at > VIEW_TTL_S or not client.view.get("replicas"):
                self._refresh(client, wanted=wanted)
                asked_at = now if wanted else asked_at
            elif wanted and now - asked_at > DEMAND_EVERY_S:
                # Demand needs no answer: waiting for one here kept a slot that had just been freed idle for a
                # round trip to the pool, for nearly every message of a burst. New replicas show in the next view.
                self._tell_demand(client)
                asked_at = now
            view = client.view
            if view.get("draining"):
                raise ReplicaUnavailableError(
                    f"The replicas of actor {actor_name!r} (pool {client.name}) are draining for another version; "
                    "the message is retried, and a worker running the current version takes it."
                )
            error = view.get("setup_error")
            if error and not view.get("replicas"):
                raise ReplicaSetupError(error["message"], remote_traceback=error["traceback"])
            if self._stopped.is_set():
                raise ReplicaUnavailableError(
                    f"The worker is shutting down while the message of actor {actor_name!r} waits for a free "
                    "replica; it is retried."
                )
            with client.freed:
                chosen = _choose(key, view.get("replicas", ()), client.in_flight, _capacity(client.config))
                if chosen is not None:
                    client.in_flight[chosen[0]] = client.in_flight.get(chosen[0], 0) + 1
                    return chosen
                wanted = True
                client.freed.wait(timeout=min(self.wait_slice, DEMAND_EVERY_S))

    def _release(self, client: _PoolClient, name: str) -> None:
        with client.freed:
            left = client.in_flight.get(name, 0) - 1
            if left > 0:
                client.in_flight[name] = left
            else:
                client.in_flight.pop(name, None)
            # One waiter: waking them all made them queue for the GIL with the one that gets the slot.
            client.freed.notify()

    # --- keeping pools alive -------------------------------------------------------------------------------

    def stop(self) -> None:
        """The worker shuts down: messages waiting for a free replica give up (retryably), and this process stops
        touching pools, so a pool no other worker touches exits in time."""
        self._stopped.set()
        with self._lock:
            self._pools.clear()

    def _start_heartbeat(self) -> None:
        self._stopped.clear()
        if self._heartbeat is None or not self._heartbeat.is_alive():
            self._heartbeat = threading.Thread(target=self._beat, name="dramatiq-ray-replicas-heartbeat", daemon=True)
            self._heartbeat.start()

    def _beat(self) -> None:
        """Touch every known pool now and then, so an idle but living worker keeps its pools."""
        touched: dict[str, float] = {}
        while not self._stopped.wait(0.5):
            now = time.monotonic()
            for client in list(self._pools.values()):
                every = min(HEARTBEAT_S, client.config.orphan_timeout_s / 3)
                if now - max(touched.get(client.name, 0.0), client.viewed_at) < every:
                    continue
                touched[client.name] = now
                try:
                    client.handle.view.remote(False)
                except Exception:
                    logger.debug("Could not touch pool %s.", client.name, exc_info=True)


def _capacity(config: Replicas) -> int:
    """Calls one process sends one replica at most: its threads, times the batch size when it batches."""
    return config.max_concurrency * (config.batch.max_size if config.batch else 1)


def _choose(key: str, replicas: Any, in_flight: dict[str, int], capacity: int) -> tuple[str, Any] | None:
    """The replica ``key`` hashes to (rendezvous hashing: stable while replicas come and go) when this process has
    no call on it, else the least busy one with room, else ``None``."""
    free = [(name, handle) for name, handle in replicas if in_flight.get(name, 0) < capacity]
    if not free:
        return None
    preferred = max(replicas, key=lambda replica: _weight(key, replica[0]))
    if in_flight.get(preferred[0], 0) == 0:
        return tuple(preferred)  # type: ignore[return-value]
    return min(free, key=lambda replica: in_flight.get(replica[0], 0))


def _weight(key: str, name: str) -> bytes:
    return hashlib.blake2b(f"{key}|{name}".encode(), digest_size=8).digest()
