"""The ``ray_core`` runner: each message's body runs as a Ray task owned by the worker process.

The worker thread submits the task, waits for it in short slices (so Dramatiq's time limit and shutdown
interrupts land), cancels it when interrupted, and hands back the return value or the original exception.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import dramatiq

from ... import _otel, metrics
from ...callpath import logs
from ...callpath.body import entry_for, pack_call, target_for
from ...callpath.wrapper import Call
from ...errors import ConfigurationError, RayOptionsError, RaySystemError, RayUnavailableError
from ..connection import RayRuntime
from ..options import check_message_options, check_options, merge_runtime_envs
from ..outcome import raise_translated

__all__ = ["RayTaskRunner", "task_options"]

logger = logging.getLogger(__name__)


class RayTaskRunner:
    """Run bodies as Ray tasks; one per middleware, shared by the worker's threads.

    Parameters:
      runtime: the worker process's connection to Ray.
      default_options: Ray task options for every actor (already checked).
      runtime_env: the ``runtime_env`` applied to every task (actor and message ones are merged over it).
      wait_slice: how long each wait for the task blocks, in seconds.
      max_in_flight: at most this many tasks in flight in this process (``None``: no limit).
      log_level: the body's log records at this level or above come back to the worker's log output; ``None``:
        the worker's root logger level at the time of the call.
    """

    def __init__(
        self,
        *,
        runtime: RayRuntime,
        default_options: dict[str, Any],
        runtime_env: dict[str, Any],
        wait_slice: float,
        max_in_flight: int | None,
        log_level: int | None = None,
    ) -> None:
        self.runtime = runtime
        self.default_options = default_options
        self.runtime_env = runtime_env
        self.wait_slice = wait_slice
        self.log_level = log_level
        self._slots = threading.BoundedSemaphore(max_in_flight) if max_in_flight else None
        self._remotes: dict[str, tuple[int, Any, dict[str, Any], dict[str, Any]]] = {}
        self._lock = threading.Lock()

    def run(self, call: Call) -> Any:
        if self._slots is None:
            return self._submit_and_wait(call)
        # Waiting for a slot in slices too, so that a time limit or shutdown lands here as well.
        acquired = False
        try:
            while not acquired:
                acquired = self._slots.acquire(timeout=self.wait_slice)
            return self._submit_and_wait(call)
        finally:
            if acquired:
                self._slots.release()

    def _submit_and_wait(self, call: Call) -> Any:
        generation = self.runtime.enter()  # first: it prepares the environment Ray reads when imported
        try:
            return self._on(generation, call)
        finally:
            self.runtime.leave(generation)

    def _on(self, generation: int, call: Call) -> Any:
        actor_name = call.actor.actor_name
        import ray
        from ray import exceptions as rx

        remote = self._remote_for(call.actor, generation)
        message_options = call.message.options.get("ray_options")
        if message_options:
            remote = self._with_message_options(actor_name, remote, message_options)
        try:
            log_level = self.log_level if self.log_level is not None else logging.getLogger().getEffectiveLevel()
            trace_ctx = _otel.current_carrier()
            ref = remote.remote(
                pack_call(call.args, call.kwargs, call.message._message, call.plan, call.steering, log_level, trace_ctx)
            )
        except (ConnectionError, rx.RaySystemError, rx.LocalRayletDiedError) as error:
            self.runtime.lost(generation)
            raise RayUnavailableError(f"Could not submit actor {actor_name!r} to Ray: {error}") from error
        except Exception as error:
            if not _pickles(entry_for(target_for(call.actor))):
                # The one submit failure that is configuration: a by-value function that cannot pickle fails the
                # same way every time.
                raise ConfigurationError(
                    f"Actor {actor_name!r} cannot be sent to Ray: {error}. Define it at module level in an "
                    "importable module (not __main__ or inside a function) so Ray workers import it, or set "
                    "ray=False on the actor."
                ) from error
            if "pickle" in str(error).lower() or "serializ" in str(error).lower():
                # The arguments or the spill plan did not serialize this time: retryable, as whatever made them
                # fail (a store client, a lazy value) may recover.
                raise RaySystemError(
                    f"Ray could not serialize the call of actor {actor_name!r} ({type(error).__name__}); the "
                    "message is retried. If it fails every time, make the actor's arguments picklable."
                ) from error
            if isinstance(error, ValueError | TypeError):
                why = f"Ray refused to run actor {actor_name!r} with its ray_options: {error}"
                raise RayOptionsError(why) from error
            raise
        submitted = time.monotonic()
        try:
            # One get per slice: the result comes back in the same call that notices it is ready, and between
            # slices Python bytecode runs, so a time limit or shutdown interrupt lands.
            while True:
                try:
                    returned = ray.get(ref, timeout=self.wait_slice)
                    if isinstance(returned, logs.WithLogs):
                        logs.emit(returned.logs, actor_name=actor_name, message_id=call.message.message_id)
                        return returned.value
                    return returned
                except rx.GetTimeoutError:
                    if call.cancel_requested():
                        # dramatiq_ray.cancel: the task's worker process is killed, the message fails as cancelled.
                        self.cancel(ref, actor_name)
                        raise call.cancelled("while its Ray task ran") from None
                    if not self.runtime.usable(generation):
                        # Another thread lost the connection and this process is about to shut it down: the task
                        # dies with it, so the message fails now, retryably, rather than under ray.shutdown().
                        self.cancel(ref, actor_name)
                        raise RayUnavailableError(
                            f"The connection to Ray was lost while actor {actor_name!r} ran; the message is retried."
                        ) from None
        except Exception as error:
            if isinstance(error, ConnectionError | rx.RaySystemError | rx.LocalRayletDiedError) or (
                isinstance(error, rx.NodeDiedError) and self.runtime.names_local_node(str(error))
            ):
                self.runtime.lost(generation)
            raise_translated(error, actor_name=actor_name, message_id=call.message.message_id)
        except BaseException:
            # Time limit, shutdown or any other interrupt: stop the remote work too, then let it propagate.
            self.cancel(ref, actor_name)
            raise
        finally:
            metrics.observe_ray_wait(actor_name, time.monotonic() - submitted)

    def cancel(self, ref: Any, actor_name: str) -> None:
        """Stop a task at once (its worker process is killed)."""
        import ray

        logger.info("Cancelling the Ray task of actor %r.", actor_name)
        try:
            ray.cancel(ref, force=True, recursive=True)
        except Exception as error:
            logger.warning("Could not cancel the Ray task of actor %r: %s", actor_name, error)

    # --- remote functions ----------------------------------------------------------------------------------

    def _remote_for(self, actor: dramatiq.Actor[Any, Any], generation: int) -> Any:
        cached = self._remotes.get(actor.actor_name)
        if cached is not None and cached[0] == generation:
            return cached[1]
        with self._lock:
            cached = self._remotes.get(actor.actor_name)
            if cached is not None and cached[0] == generation:
                return cached[1]
            import ray

            options = self.base_options(actor)
            try:
                remote = ray.remote(**options)(entry_for(target_for(actor)))
            except (ValueError, TypeError) as error:
                raise RayOptionsError(f"Ray refused the ray_options of actor {actor.actor_name!r}: {error}") from None
            self._remotes[actor.actor_name] = (generation, remote, options.get("runtime_env") or {}, options)
            return remote

    def base_options(self, actor: dramatiq.Actor[Any, Any]) -> dict[str, Any]:
        """The Ray task options of ``actor``: its own over the middleware's defaults."""
        return task_options(actor, self.default_options, self.runtime_env)

    def _with_message_options(self, actor_name: str, remote: Any, raw: Any) -> Any:
        options = check_message_options(raw, actor_name=actor_name, actor_options=self._remotes[actor_name][3])
        if "runtime_env" in options:
            options["runtime_env"] = merge_runtime_envs(self._remotes[actor_name][2], options["runtime_env"])
        try:
            return remote.options(**options)
        except (ValueError, TypeError) as error:
            raise RayOptionsError(f"Ray refused the message ray_options of actor {actor_name!r}: {error}") from None


def _pickles(fn: Any) -> bool:
    """Whether Ray can ship ``fn`` (the remote function's body, with its target) to its workers."""
    from ray import cloudpickle

    try:
        cloudpickle.dumps(fn)  # type: ignore[no-untyped-call]
    except Exception:
        return False
    return True


def task_options(
    actor: dramatiq.Actor[Any, Any], default_options: dict[str, Any], runtime_env: dict[str, Any]
) -> dict[str, Any]:
    """The Ray options of ``actor``'s body: its own ``ray_options`` over the middleware's ``default_options``, with
    the ``runtime_env`` dicts merged (middleware, defaults, actor)."""
    actor_options = check_options(actor.options.get("ray_options"), actor_name=actor.actor_name, where="actor")
    # Dramatiq owns retries: Ray's own are off unless asked for.
    options: dict[str, Any] = {"max_retries": 0, "name": actor.actor_name}
    options.update(default_options)
    options.update(actor_options)
    merged = merge_runtime_envs(runtime_env, default_options.get("runtime_env"), actor_options.get("runtime_env"))
    options["runtime_env"] = merged or None
    return options
