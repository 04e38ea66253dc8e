"""Running actor bodies as Ray tasks while a Dramatiq worker processes their messages.

The worker thread stays in charge of the message: it submits the body as a Ray task, waits for it in short
slices (so Dramatiq's time limit and shutdown interrupts land), cancels it when interrupted, and hands the
return value or exception back to Dramatiq as if the body had run locally. Retries, results and acks stay
Dramatiq's.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import dramatiq
from dramatiq.broker import MessageProxy
from dramatiq.middleware import Middleware, MiddlewareError

from .. import context, metrics
from ..errors import ConfigurationError, RayOptionsError, RaySystemError, RayUnavailableError
from .body import WRAPPED_ATTR, Target, actor_function, entry_for, underlying_function
from .connection import RayRuntime
from .local_head import run_shared_head
from .options import check_options
from .outcome import translate
from .runners.ray_job import JobRunner

__all__ = ["RayExecutionMiddleware"]

logger = logging.getLogger(__name__)

RUNNERS = ("ray_core", "ray_job")


class _RejectedOptions(RayOptionsError, MiddlewareError):
    """A ``RayOptionsError`` that Dramatiq lets out of a middleware hook, so a bad actor declaration or a bad
    message fails where it is written rather than in a worker later."""


class RayExecutionMiddleware(Middleware):
    """Run every actor's body as a Ray task while a worker processes its message.

    Add it to the broker before declaring actors (Dramatiq rejects the ``ray`` and ``ray_options`` actor options
    otherwise). Calling an actor function directly (``train(config)``) still runs it in the calling process.

    Example::

        broker.add_middleware(RayExecutionMiddleware())

        @dramatiq.actor(store_results=True, ray_options={"num_cpus": 2, "memory": 2 * 1024**3})
        def train(config): ...

        @dramatiq.actor(ray=False)  # stays in the worker process
        def notify(user_id): ...

    Actor and message options (looked up message, then actor, then this middleware):
      ray (bool): run this actor on Ray (default: ``enabled_by_default``).
      ray_options (dict): Ray task options: ``num_cpus``, ``num_gpus``, ``memory``, ``resources``,
        ``runtime_env``, ``scheduling_strategy``, ``accelerator_type``, ``max_retries`` and anything else
        ``RemoteFunction.options`` accepts. ``runtime_env`` dicts are merged key by key over the broader ones.

    Parameters:
      address: Ray address (``"host:port"``, ``"auto"``, ``"ray://host:10001"`` for Ray Client). ``None``:
        ``RAY_ADDRESS``, else an embedded local Ray (under the ``dramatiq`` CLI, one head shared by all worker
        processes; with an in-process ``Worker``, a private one).
      runtime_env: a Ray ``runtime_env`` applied to every task (actor and message ones are merged over it).
      default_options: Ray task options applied to every actor's tasks.
      enabled_by_default: whether actors without a ``ray`` option run on Ray.
      wait_slice: how long, in seconds, each ``ray.wait`` blocks; interrupts (time limit, shutdown) land within
        about this long.
      ray_init_kwargs: extra keyword arguments for ``ray.init``.
      runner: how bodies are run: ``"ray_core"`` (a Ray task per message, owned by the worker process) or
        ``"ray_job"`` (a durable Ray Job per message attempt, adopted by a redelivery; needs a SpillingBackend
        with a persistent store for the job's input and outcome). Ray options other than ``runtime_env`` do
        not apply to jobs.
      job_address: ``ray_job`` only: the Ray Jobs API (dashboard) address, e.g. ``"http://head:8265"``;
        ``None``: port 8265 on the host of ``address`` / ``RAY_ADDRESS``.
      job_python: ``ray_job`` only: the Python executable that runs the job's entrypoint on the Ray head.
      stuck_timeout: ``ray_job`` only: seconds without progress (no status change, no new log output) after
        which a job is stopped and its message failed retryably (``RayJobStuckError``).
      max_in_flight: at most this many Ray tasks in flight per worker process; more messages wait for a slot
        (interruptibly). ``None``: as many as the worker threads in use.

    Raises:
      ConfigurationError: when a parameter is invalid (``RayOptionsError`` for ``default_options``).
    """

    def __init__(
        self,
        *,
        address: str | None = None,
        runtime_env: dict[str, Any] | None = None,
        default_options: dict[str, Any] | None = None,
        enabled_by_default: bool = True,
        wait_slice: float = 0.5,
        ray_init_kwargs: dict[str, Any] | None = None,
        runner: str = "ray_core",
        max_in_flight: int | None = None,
        job_address: str | None = None,
        job_python: str = "python",
        stuck_timeout: float = 300,
    ) -> None:
        problems = []
        if max_in_flight is not None and (
            isinstance(max_in_flight, bool) or not isinstance(max_in_flight, int) or max_in_flight < 1
        ):
            problems.append(f"max_in_flight must be an integer >= 1 or None, not {max_in_flight!r}")
        if ray_init_kwargs and {"address", "runtime_env"} & set(ray_init_kwargs):
            problems.append("ray_init_kwargs cannot set address or runtime_env: pass them as parameters")
        if runner not in RUNNERS:
            problems.append(f"runner must be one of {', '.join(RUNNERS)}, not {runner!r}")
        if job_address is not None and (not isinstance(job_address, str) or "://" not in job_address):
            problems.append(f"job_address must be an http(s):// address or None, not {job_address!r}")
        if not isinstance(job_python, str) or not job_python.strip():
            problems.append(f"job_python must be a non-empty string, not {job_python!r}")
        if isinstance(stuck_timeout, bool) or not isinstance(stuck_timeout, int | float) or not stuck_timeout > 0:
            problems.append(f"stuck_timeout must be a number of seconds > 0, not {stuck_timeout!r}")
        if isinstance(wait_slice, bool) or not isinstance(wait_slice, int | float) or not 0 < wait_slice <= 60:
            problems.append(f"wait_slice must be a number of seconds in (0, 60], not {wait_slice!r}")
        if runtime_env is not None and not isinstance(runtime_env, dict):
            problems.append(f"runtime_env must be a dict, not {type(runtime_env).__name__}")
        if not isinstance(enabled_by_default, bool):
            problems.append(f"enabled_by_default must be True or False, not {enabled_by_default!r}")
        if address is not None and (not isinstance(address, str) or not address.strip()):
            problems.append(f"address must be a non-empty string or None, not {address!r}")
        if problems:
            raise ConfigurationError("Invalid RayExecutionMiddleware settings: " + "; ".join(problems) + ".", problems)
        self.default_options = check_options(default_options, actor_name="*", where="middleware default_options")
        self.runtime_env = dict(runtime_env or {})
        self.enabled_by_default = enabled_by_default
        self.wait_slice = float(wait_slice)
        self.runtime = RayRuntime(address=address, init_kwargs=ray_init_kwargs)
        self.max_in_flight = max_in_flight
        self._slots = threading.BoundedSemaphore(max_in_flight) if max_in_flight else None
        self._local = threading.local()
        self._remotes: dict[str, tuple[int, Any, dict[str, Any]]] = {}
        self._remotes_lock = threading.Lock()
        self.runner = runner
        self._jobs = (
            JobRunner(
                job_address=job_address,
                ray_address=self.runtime.resolved_address,
                python=job_python,
                stuck_timeout=float(stuck_timeout),
                wait_slice=self.wait_slice,
            )
            if runner == "ray_job"
            else None
        )

    @property
    def actor_options(self) -> set[str]:
        return {"ray", "ray_options"}

    @property
    def forks(self) -> list[Callable[[], int]]:
        # Under the dramatiq CLI, the embedded default is one head for all worker processes, run beside them.
        return [run_shared_head] if self.runtime.resolved_address() is None and self._jobs is None else []

    # --- declaring and sending -----------------------------------------------------------------------------

    def before_declare_actor(self, broker: dramatiq.Broker, actor: dramatiq.Actor[Any, Any]) -> None:
        self._check(actor.options, actor_name=actor.actor_name, where="actor options")

    def after_declare_actor(self, broker: dramatiq.Broker, actor: dramatiq.Actor[Any, Any]) -> None:
        if not hasattr(actor.fn, WRAPPED_ATTR):
            actor.fn = self._wrap(actor)

    def before_enqueue(self, broker: dramatiq.Broker, message: dramatiq.Message[Any], delay: int) -> None:
        self._check(message.options, actor_name=message.actor_name, where="message options")

    def _check(self, options: dict[str, Any], *, actor_name: str, where: str) -> None:
        try:
            if "ray" in options and not isinstance(options["ray"], bool):
                raise RayOptionsError(f"The ray option of actor {actor_name!r} must be True or False in {where}.")
            check_options(options.get("ray_options"), actor_name=actor_name, where=where)
        except RayOptionsError as error:
            raise _RejectedOptions(error.message, error.problems) from None

    def _wrap(self, actor: dramatiq.Actor[Any, Any]) -> Callable[..., Any]:
        original = actor.fn

        @functools.wraps(original)
        def run(*args: Any, **kwargs: Any) -> Any:
            message = self._claim(actor.actor_name)
            if message is None:
                return original(*args, **kwargs)
            return self._run_on_ray(actor, message, args, kwargs)

        setattr(run, WRAPPED_ATTR, original)
        return run

    # --- processing ----------------------------------------------------------------------------------------

    def before_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        # Attach now, in the main thread, unless this is a CLI worker waiting for the shared head (which the CLI
        # starts only after every worker has booted): then the first message attaches.
        if self._jobs is not None or (self.runtime.resolved_address() is None and self.runtime._in_cli_worker()):
            return
        try:
            self.runtime.attach()
        except Exception as error:
            logger.warning("Could not attach to Ray at worker boot (%s); will try again on the first message.", error)

    def after_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self.runtime.detach()

    def after_process_boot(self, broker: dramatiq.Broker) -> None:
        self.runtime.under_cli = True

    def before_process_message(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        context._set(message._message)
        self._local.message = message if self._on_ray(broker, message) else None

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: MessageProxy,
        *,
        result: Any | None = None,
        exception: BaseException | None = None,
    ) -> None:
        self._local.message = None
        context._set(None)

    def after_skip_message(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        self._local.message = None
        context._set(None)

    def _on_ray(self, broker: dramatiq.Broker, message: MessageProxy) -> bool:
        actor = broker.actors.get(message.actor_name)
        if actor is None:
            return False
        return bool(message.options.get("ray", actor.options.get("ray", self.enabled_by_default)))

    def _claim(self, actor_name: str) -> MessageProxy | None:
        message: MessageProxy | None = getattr(self._local, "message", None)
        if message is None or message.actor_name != actor_name:
            return None
        self._local.message = None
        return message

    def _run_on_ray(self, actor: dramatiq.Actor[Any, Any], message: MessageProxy, args: Any, kwargs: Any) -> Any:
        if self._slots is None:
            return self._submit_and_wait(actor, message, args, kwargs)
        # Waiting for a slot in slices too, so that a time limit or shutdown lands here as well.
        acquired = False
        try:
            while not acquired:
                acquired = self._slots.acquire(timeout=self.wait_slice)
            return self._submit_and_wait(actor, message, args, kwargs)
        finally:
            if acquired:
                self._slots.release()

    def _submit_and_wait(self, actor: dramatiq.Actor[Any, Any], message: MessageProxy, args: Any, kwargs: Any) -> Any:
        if self._jobs is not None:
            return self._run_as_job(actor, message, args, kwargs)
        import ray
        from ray import exceptions as rx

        generation = self.runtime.attach()
        remote = self._remote_for(actor, generation)
        message_options = message.options.get("ray_options")
        if message_options:
            remote = self._with_message_options(actor, remote, message_options)
        plan = self._spill_plan(actor, message)
        plain_message = message._message
        try:
            ref = remote.remote(tuple(args), dict(kwargs), plain_message, plan)
        except (ConnectionError, rx.RaySystemError, rx.LocalRayletDiedError) as error:
            self.runtime.lost(generation)
            raise RayUnavailableError(f"Could not submit actor {actor.actor_name!r} to Ray: {error}") from error
        except Exception as error:
            if "pickle" in str(error).lower() or "serializ" in str(error).lower():
                raise ConfigurationError(
                    f"Actor {actor.actor_name!r} cannot be sent to Ray: {error}. Define it at module level in an "
                    "importable module (not __main__ or inside a function) so Ray workers import it, or set "
                    "ray=False on the actor."
                ) from error
            if isinstance(error, ValueError | TypeError):
                raise RayOptionsError(
                    f"Ray refused to run actor {actor.actor_name!r} with its ray_options: {error}"
                ) from error
            raise
        submitted = time.monotonic()
        try:
            # One get per slice: the result comes back in the same call that notices it is ready, and between
            # slices Python bytecode runs, so a time limit or shutdown interrupt lands.
            while True:
                try:
                    return ray.get(ref, timeout=self.wait_slice)
                except rx.GetTimeoutError:
                    continue
        except Exception as error:
            if isinstance(error, ConnectionError | rx.RaySystemError | rx.LocalRayletDiedError) or (
                isinstance(error, rx.NodeDiedError) and self.runtime.names_local_node(str(error))
            ):
                self.runtime.lost(generation)
            translated = translate(error, actor_name=actor.actor_name)
            if isinstance(translated, RaySystemError):
                metrics.record_ray_system_failure(translated)
            if translated is error:
                raise
            if isinstance(translated, RaySystemError):
                raise translated from error
            raise translated from None
        except BaseException:
            # Time limit, shutdown or any other interrupt: stop the remote work too, then let it propagate.
            self._cancel(ref, actor.actor_name)
            raise
        finally:
            metrics.observe_ray_wait(actor.actor_name, time.monotonic() - submitted)

    def _run_as_job(self, actor: dramatiq.Actor[Any, Any], message: MessageProxy, args: Any, kwargs: Any) -> Any:
        from ..results import find_spilling_backend

        assert self._jobs is not None
        backend = find_spilling_backend(actor.broker)
        runtime_env = self._base_options(actor)["runtime_env"] or {}
        message_options = check_options(
            message.options.get("ray_options"), actor_name=actor.actor_name, where="message options"
        )
        runtime_env = merge_runtime_envs(runtime_env, message_options.get("runtime_env"))
        submitted = time.monotonic()
        try:
            return self._jobs.run(
                actor, message, args, kwargs, store=backend.store if backend else None, runtime_env=runtime_env
            )
        except RaySystemError as error:
            metrics.record_ray_system_failure(error)
            raise
        finally:
            metrics.observe_ray_wait(actor.actor_name, time.monotonic() - submitted)

    def _cancel(self, ref: Any, actor_name: str) -> None:
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
        with self._remotes_lock:
            cached = self._remotes.get(actor.actor_name)
            if cached is not None and cached[0] == generation:
                return cached[1]
            import ray

            options = self._base_options(actor)
            try:
                remote = ray.remote(**options)(entry_for(_target_for(actor)))
            except (ValueError, TypeError) as error:
                raise RayOptionsError(f"Ray refused the ray_options of actor {actor.actor_name!r}: {error}") from None
            self._remotes[actor.actor_name] = (generation, remote, options.get("runtime_env") or {})
            return remote

    def _base_options(self, actor: dramatiq.Actor[Any, Any]) -> dict[str, Any]:
        actor_options = check_options(actor.options.get("ray_options"), actor_name=actor.actor_name, where="actor")
        # Dramatiq owns retries: Ray's own are off unless asked for.
        options: dict[str, Any] = {"max_retries": 0, "name": actor.actor_name}
        options.update(self.default_options)
        options.update(actor_options)
        runtime_env = merge_runtime_envs(
            self.runtime_env, self.default_options.get("runtime_env"), actor_options.get("runtime_env")
        )
        options["runtime_env"] = runtime_env or None
        return options

    def _with_message_options(self, actor: dramatiq.Actor[Any, Any], remote: Any, raw: Any) -> Any:
        options = check_options(raw, actor_name=actor.actor_name, where="message options")
        if "runtime_env" in options:
            options["runtime_env"] = merge_runtime_envs(self._remotes[actor.actor_name][2], options["runtime_env"])
        try:
            return remote.options(**options)
        except (ValueError, TypeError) as error:
            raise RayOptionsError(
                f"Ray refused the message ray_options of actor {actor.actor_name!r}: {error}"
            ) from None

    def _spill_plan(self, actor: dramatiq.Actor[Any, Any], message: MessageProxy) -> Any:
        """The results area's plan to spill an oversized result from inside the Ray task, so that only a pointer
        travels back; ``None`` when results are not stored or cannot be spilled remotely."""
        from dramatiq.results import Results

        from ..results import find_spilling_backend

        broker = actor.broker
        backend = find_spilling_backend(broker)
        results = next((m for m in broker.middleware if isinstance(m, Results)), None)
        if backend is None or results is None:
            return None
        store = message.options.get("store_results", actor.options.get("store_results", results.store_results))
        if not store:
            return None
        return backend.spill_plan(message._message)


def merge_runtime_envs(*envs: dict[str, Any] | None) -> dict[str, Any]:
    """Merge ``runtime_env`` dicts, later ones winning key by key, as Ray merges a job's and a task's:
    ``env_vars`` are merged variable by variable."""
    merged: dict[str, Any] = {}
    for env in envs:
        for key, value in (env or {}).items():
            if key == "env_vars" and isinstance(value, dict):
                merged["env_vars"] = {**merged.get("env_vars", {}), **value}
            else:
                merged[key] = value
    return merged


def _target_for(actor: dramatiq.Actor[Any, Any]) -> Target:
    """Import the actor's module in the Ray worker when that finds this very actor; else ship it by value."""
    fn = underlying_function(actor.fn)
    owner = fn if callable(fn) and hasattr(fn, "__code__") else type(fn)
    module = getattr(owner, "__module__", None)
    qualname = getattr(owner, "__qualname__", None)
    if module and qualname and module != "__main__" and "<locals>" not in qualname and module in sys.modules:
        obj: Any = sys.modules[module]
        with contextlib.suppress(AttributeError):
            for part in qualname.split("."):
                obj = getattr(obj, part)
            if actor_function(obj) is fn:
                return Target(actor.actor_name, module=module, qualname=qualname)
    logger.debug("Actor %r cannot be imported by Ray workers; its function is pickled by value.", actor.actor_name)
    return Target(actor.actor_name, fn=fn)
