"""One replica: a long-lived Ray actor that runs ``setup`` once, then message bodies, and keeps recent outcomes.

The replica is an async Ray actor. Each body runs in a thread of its own (``max_concurrency`` of them), as a task
the replica owns: the actor call that asked for it only waits for it. So a call keeps running when the worker
that sent it dies, and the redelivered message (same message id, same attempt) waits for the same task, or takes
its finished outcome, instead of running the body again.

Cancelling the actor call (``ray.cancel``, on a time limit or shutdown) sets the call's cancellation flag
(:func:`replica_cancelled`) and cancels an ``async def`` body's task; a call still running ``cancel_grace_s``
later makes the replica exit, so that a new one replaces it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import sys
import threading
import time
import traceback
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from ..callpath.body import Target, execute
from ..callpath.crossing import type_name
from ..callpath.steering import Steering
from ..errors import ConfigurationError, RayTaskCancelledError, ReplicaError, ReplicaSetupError
from ..payloads.plan import SpillPlan
from .replica_actor import ReplicaActor
from .replica_options import Batch

__all__ = ["Replica", "ReplicaSpec", "replica_cancelled", "replica_state"]

_NO_STATE = object()
#: What ``setup`` returned, in a replica's process (one replica per process).
_state: Any = _NO_STATE
_current_call: ContextVar[_Call | None] = ContextVar("dramatiq_ray_replica_call", default=None)


def replica_state() -> Any:
    """What the replica's ``setup`` returned, in the body of an actor running on replicas.

    Raises:
      ReplicaError: outside a replica (a body without ``replicas=...``, a direct call, a worker thread).
    """
    if _state is _NO_STATE:
        raise ReplicaError(
            "replica_state() is only available in the body of an actor declared with replicas=dramatiq_ray."
            "Replicas(...), while it runs on its replica (not when the actor is called directly)."
        )
    return _state


def replica_cancelled() -> bool:
    """Whether the running call was cancelled (time limit, worker shutdown): a long synchronous body checks it
    between steps and returns early. ``False`` outside a replica."""
    call = _current_call.get()
    return call is not None and call.cancelled.is_set()


@dataclass(frozen=True)
class ReplicaSpec:
    """What a replica runs, fixed for its lifetime."""

    target: Target
    setup: Callable[[], Any] | None
    max_concurrency: int
    batch: Batch | None
    cancel_grace_s: float
    #: Finished outcomes kept for redelivered messages: at most this many, for at most this long (seconds).
    keep_outcomes: int = 1000
    keep_outcomes_s: float = 900.0


class _Call:
    """One message attempt on this replica."""

    def __init__(self) -> None:
        self.cancelled = threading.Event()
        self.future: asyncio.Future[Any] | None = None
        self.finished_at: float | None = None
        self._cancel_async: Callable[[], object] | None = None
        self._lock = threading.Lock()

    def cancel(self) -> None:
        with self._lock:
            self.cancelled.set()
            if self._cancel_async is not None:
                self._cancel_async()

    def run_awaitable(self, awaitable: Any) -> Any:
        """Run an ``async def`` body's awaitable on a loop of this thread, cancellable from the replica."""
        loop = asyncio.new_event_loop()
        try:

            async def wrapped() -> Any:
                return await awaitable

            task = loop.create_task(wrapped())
            with self._lock:
                self._cancel_async = functools.partial(loop.call_soon_threadsafe, task.cancel)
                if self.cancelled.is_set():
                    task.cancel()
            return loop.run_until_complete(task)
        finally:
            with self._lock:
                self._cancel_async = None
            loop.close()


class Replica:
    """The Ray actor class of a replica (made remote by the pool that starts it)."""

    def __init__(self, spec: ReplicaSpec) -> None:
        self.spec = spec
        self.started_at = time.time()
        self.executor = ThreadPoolExecutor(max_workers=spec.max_concurrency, thread_name_prefix="dramatiq-ray-replica")
        self.calls: OrderedDict[str, _Call] = OrderedDict()
        self.running = 0
        self.served = 0
        self.idle_since = time.monotonic()
        self._batcher: Any = None

    # --- lifecycle -----------------------------------------------------------------------------------------

    async def start(self) -> dict[str, Any]:
        """Run ``setup`` (once) and return where this replica runs.

        Raises:
          ReplicaSetupError: setup raised; its traceback is in the error.
        """
        global _state
        import ray

        if _state is _NO_STATE:
            try:
                state = await asyncio.get_running_loop().run_in_executor(self.executor, self._setup)
            except Exception as error:
                text = traceback.format_exc()
                print(
                    f"dramatiq-ray: replica setup of {self.spec.target.actor_name!r} failed:\n{text}", file=sys.stderr
                )
                raise ReplicaSetupError(
                    f"The setup of actor {self.spec.target.actor_name!r}'s replicas raised {type_name(error)}: "
                    f"{error}. Fix setup (or the resources it needs); replicas are started again with backoff.",
                    remote_traceback=text,
                ) from None
            _state = state
        context = ray.get_runtime_context()
        return {"node": context.get_node_id(), "pid": os.getpid(), "started_at": self.started_at}

    def _setup(self) -> Any:
        fn = self.spec.target.resolve()  # fail here, not on the first message, when the code is not importable
        if isinstance(fn, ReplicaActor):
            return fn.setup()  # the class form: the object whose perform() runs every message
        return self.spec.setup() if self.spec.setup is not None else None

    async def load(self) -> dict[str, Any]:
        """How busy this replica is: calls running, calls waiting for a thread, messages served, idle seconds."""
        idle = 0.0 if self.running else time.monotonic() - self.idle_since
        capacity = self.spec.max_concurrency * (self.spec.batch.max_size if self.spec.batch else 1)
        return {
            "in_flight": self.running,
            "waiting": max(0, self.running - capacity),
            "served": self.served,
            "idle_s": idle,
        }

    # --- calls ---------------------------------------------------------------------------------------------

    async def run(
        self,
        key: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        message: Any,
        plan: SpillPlan | None,
        steering: Steering | None = None,
    ) -> Any:
        """Run one message attempt (``key``: message id and attempt), or wait for the same attempt already
        running or finished here. ``steering``: where :func:`~dramatiq_ray.report_progress` writes, as in a Ray
        task (one message per call of the body, so not for batches)."""
        self._forget_old()
        call = self.calls.get(key)
        if call is None:
            call = _Call()
            self.calls[key] = call
            call.future = asyncio.ensure_future(self._execute(call, args, kwargs, message, plan, steering))
        assert call.future is not None
        try:
            return await asyncio.shield(call.future)
        except asyncio.CancelledError:
            if not call.future.done():
                self._cancel(key, call)
            raise

    async def _execute(
        self,
        call: _Call,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        message: Any,
        plan: SpillPlan | None,
        steering: Steering | None,
    ) -> Any:
        self.running += 1
        try:
            if self.spec.batch is not None:
                return await self._batched(call, args, kwargs, message, plan)
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(
                self.executor, self._run_in_thread, call, args, kwargs, message, plan, steering
            )
        finally:
            self.running -= 1
            self.served += 1
            call.finished_at = time.monotonic()
            if not self.running:
                self.idle_since = time.monotonic()

    def _run_in_thread(
        self,
        call: _Call,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        message: Any,
        plan: SpillPlan | None,
        steering: Steering | None,
    ) -> Any:
        token = _current_call.set(call)
        try:
            return execute(self.spec.target, args, kwargs, message, plan, steering, run_awaitable=call.run_awaitable)
        except asyncio.CancelledError:
            raise RayTaskCancelledError(
                f"The call of actor {self.spec.target.actor_name!r} was cancelled on its replica."
            ) from None
        finally:
            _current_call.reset(token)

    def _cancel(self, key: str, call: _Call) -> None:
        call.cancel()
        self.calls.pop(key, None)  # a cancelled attempt is not an outcome to hand to a redelivery
        grace = self.spec.cancel_grace_s
        asyncio.get_running_loop().call_later(grace, self._restart_if_running, call)

    def _restart_if_running(self, call: _Call) -> None:
        if call.future is not None and not call.future.done():
            print(
                f"dramatiq-ray: a cancelled call of actor {self.spec.target.actor_name!r} still runs "
                f"{self.spec.cancel_grace_s} s later; this replica exits so that a new one replaces it.",
                file=sys.stderr,
            )
            sys.stderr.flush()
            os._exit(1)

    def _forget_old(self) -> None:
        """Drop finished outcomes past their time, and the oldest finished ones past the count."""
        horizon = time.monotonic() - self.spec.keep_outcomes_s
        excess = len(self.calls) - self.spec.keep_outcomes
        for key, call in list(self.calls.items()):
            if call.finished_at is not None and (excess > 0 or call.finished_at < horizon):
                del self.calls[key]
                excess -= 1

    # --- micro-batching ------------------------------------------------------------------------------------

    async def _batched(
        self, call: _Call, args: tuple[Any, ...], kwargs: dict[str, Any], message: Any, plan: SpillPlan | None
    ) -> Any:
        if len(args) != 1 or kwargs:
            raise ConfigurationError(
                f"Actor {self.spec.target.actor_name!r} batches its messages: each message must carry exactly one "
                "positional argument (the body receives a list of them), not "
                f"{len(args)} positional and {len(kwargs)} keyword arguments."
            )
        if self._batcher is None:
            from .replica_batch import Batcher

            assert self.spec.batch is not None
            self._batcher = Batcher(self.spec, self.executor)
        result: Any = await self._batcher.submit(args[0], message, plan)
        return result


def kill_quietly(handle: Any) -> None:
    """``ray.kill`` a replica or pool, ignoring one that is already gone."""
    import ray

    with contextlib.suppress(Exception):
        ray.kill(handle, no_restart=True)
