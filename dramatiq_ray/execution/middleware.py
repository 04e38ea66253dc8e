"""RayExecutionMiddleware: actor bodies run on Ray while a Dramatiq worker processes their messages.

The worker thread stays in charge of the message. The call path's wrapper asks this middleware for a runner
(:mod:`.runners.ray_task` or :mod:`.runners.ray_job`); the runner waits in short slices (so Dramatiq's time limit
and shutdown interrupts land), stops the remote work when interrupted, and hands the return value or exception
back to Dramatiq as if the body had run locally. Retries, results and acks stay Dramatiq's.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import dramatiq
from dramatiq.broker import MessageProxy
from dramatiq.middleware import Middleware

from ..callpath import wrapper as callpath
from ..callpath.logs import level_of
from ..callpath.wrapper import Runner
from ..errors import ConfigurationError, RayOptionsError
from ..payloads.options import require_blob_store
from ..results.access import find_spilling_backend
from . import checks
from .connection import RayRuntime, keep_dramatiq_signal_handling
from .options import check_message_options, check_options, merge_runtime_envs
from .replica_options import check_message_options as check_replica_message_options
from .replica_options import check_replicas
from .runners.ray_job import JOB_INSTEAD, JOB_NEED, JobRunner
from .runners.ray_task import RayTaskRunner, task_options
from .runners.replicas import ReplicaRunner
from .shared_head import run_shared_head, run_shared_head_with_dashboard

__all__ = ["RayExecutionMiddleware", "merge_runtime_envs"]

logger = logging.getLogger(__name__)


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
      replicas (dramatiq_ray.Replicas): actor only: run the body on warm replicas, long-lived Ray actors with
        the actor's ``ray_options`` resources that run ``setup`` once (see docs/replicas.md). A message cannot
        change their resources: its ``ray_options`` may not set them.

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
      job_python: ``ray_job`` only: the Python executable that runs the job's entrypoint on the Ray head;
        ``None``: this worker's own interpreter when the head is on this host, else ``python`` (on a cluster,
        set it to the head's interpreter that has dramatiq-ray installed).
      stuck_timeout: ``ray_job`` only: seconds without progress (no status change, no new log output) after
        which a job is stopped and its message failed retryably (``RayJobStuckError``).
      max_in_flight: at most this many Ray tasks in flight per worker process; more messages wait for a slot
        (interruptibly). ``None``: as many as the worker threads in use.
      log_level: the log records a body on Ray logs at this level or above (a number or a name such as
        ``"INFO"``) come back and are re-emitted in the worker thread, through the logger of the same name, with
        the actor name and message id (see the observability docs). ``None``: the worker's root logger level at
        the time of each call (``INFO`` under the ``dramatiq`` CLI, ``DEBUG`` with ``-v``).

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
        job_python: str | None = None,
        stuck_timeout: float = 300,
        log_level: int | str | None = None,
    ) -> None:
        _check_settings(
            address=address,
            runtime_env=runtime_env,
            enabled_by_default=enabled_by_default,
            wait_slice=wait_slice,
            ray_init_kwargs=ray_init_kwargs,
            runner=runner,
            max_in_flight=max_in_flight,
            job_address=job_address,
            job_python=job_python,
            stuck_timeout=stuck_timeout,
            log_level=log_level,
        )
        self.log_level = level_of(log_level) if log_level is not None else None
        self.default_options = check_options(default_options, actor_name="*", where="middleware default_options")
        self.runtime_env = dict(runtime_env or {})
        self.enabled_by_default = enabled_by_default
        self.wait_slice = float(wait_slice)
        self.runtime = RayRuntime(address=address, init_kwargs=ray_init_kwargs)
        keep_dramatiq_signal_handling()  # in case the application imports Ray before the first message
        self.max_in_flight = max_in_flight
        self.runner = runner
        self._owner: callpath.CallPath | None = None
        self._runner: Runner
        if runner == "ray_job":
            self._runner = JobRunner(
                runtime_env=merge_runtime_envs(self.runtime_env, self.default_options.get("runtime_env")),
                job_address=job_address,
                runtime=self.runtime,
                python=job_python,
                stuck_timeout=float(stuck_timeout),
                wait_slice=self.wait_slice,
                log_level=self.log_level,
            )
        else:
            self._runner = RayTaskRunner(
                runtime=self.runtime,
                default_options=self.default_options,
                runtime_env=self.runtime_env,
                wait_slice=self.wait_slice,
                max_in_flight=max_in_flight,
                log_level=self.log_level,
            )
        self._replicas = ReplicaRunner(
            runtime=self.runtime,
            options_for=lambda actor: task_options(actor, self.default_options, self.runtime_env),
            wait_slice=self.wait_slice,
        )

    @property
    def actor_options(self) -> set[str]:
        return {"ray", "ray_options", "replicas"}

    @property
    def forks(self) -> list[Callable[[], int]]:
        # Under the dramatiq CLI, the embedded default is one head for all worker processes, run beside them.
        if self.runtime.resolved_address() is not None:
            return []
        if self.runner == "ray_job":
            # The embedded default runs ray_job too: the shared head then serves the Jobs API, unless one is given.
            return [] if self._runner.job_address else [run_shared_head_with_dashboard]  # type: ignore[attr-defined]
        return [run_shared_head]

    def runner_for(self, actor: dramatiq.Actor[Any, Any], message: MessageProxy) -> Runner | None:
        """The runner of this message's body, or ``None`` when it runs in the worker (option ``ray=False``)."""
        explicit = message.options.get("ray", actor.options.get("ray"))
        if actor.options.get("replicas") is not None:
            return None if explicit is False else self._replicas
        on_ray = self.enabled_by_default if explicit is None else explicit
        return self._runner if on_ray else None

    # --- declaring and sending -----------------------------------------------------------------------------

    def before_declare_actor(self, broker: dramatiq.Broker, actor: dramatiq.Actor[Any, Any]) -> None:
        _check_ray_flag(actor.options, actor_name=actor.actor_name, where="actor options")
        check_options(actor.options.get("ray_options"), actor_name=actor.actor_name, where="actor options")
        check_replicas(actor.options.get("replicas"), actor_name=actor.actor_name)

    def after_declare_actor(self, broker: dramatiq.Broker, actor: dramatiq.Actor[Any, Any]) -> None:
        callpath.install(actor)

    def _callpath(self, broker: dramatiq.Broker) -> callpath.CallPath:
        # Joined at worker boot; a broker driven without a worker boot (hooks called by hand) joins on first use.
        if self._owner is None:
            self._owner = callpath.join(broker, self, runners=self)
        return self._owner

    def before_enqueue(self, broker: dramatiq.Broker, message: dramatiq.Message[Any], delay: int) -> None:
        # Everything a message may carry is checked here, as the worker will apply it: a message Ray would refuse
        # is refused at send instead of failing (and being retried) in the worker.
        _check_ray_flag(message.options, actor_name=message.actor_name, where="message options")
        actor = broker.actors.get(message.actor_name)  # None: sent by name from a process that does not declare it
        on_replicas = actor is not None and actor.options.get("replicas") is not None
        check_replica_message_options(message.options, actor_name=message.actor_name, on_replicas=on_replicas)
        if message.options.get("ray_options") is None:
            return
        check_message_options(
            message.options["ray_options"],
            actor_name=message.actor_name,
            actor_options=actor.options.get("ray_options") if actor is not None else None,
        )

    # --- processing ----------------------------------------------------------------------------------------

    def after_process_boot(self, broker: dramatiq.Broker) -> None:
        self.runtime.under_cli = True

    def before_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self._owner = callpath.join(broker, self, runners=self)
        if isinstance(self._runner, JobRunner):
            self._check_job_runner(broker)
            return
        # Attach now, in the main thread, unless this is a CLI worker waiting for the shared head (which the CLI
        # starts only after every worker has booted): then the first message attaches.
        if self.runner != "ray_core" or (self.runtime.resolved_address() is None and self.runtime.in_cli_worker()):
            return
        try:
            self.runtime.attach()
        except Exception as error:
            logger.warning("Could not attach to Ray at worker boot (%s); will try again on the first message.", error)

    def _check_job_runner(self, broker: dramatiq.Broker) -> None:
        """A worker whose ray_job runner cannot work does not start: it would fail every message."""
        backend = find_spilling_backend(broker)
        runner = self._runner
        assert isinstance(runner, JobRunner)
        try:
            require_blob_store(backend.store if backend is not None else None, JOB_NEED, instead=JOB_INSTEAD)
            if backend is not None and backend.encryption is not None:
                raise ConfigurationError(
                    "The ray_job runner keeps each job's input and outcome in the blob store unencrypted, so it "
                    "cannot run with Results(encryption=...): use runner='ray_core' for encrypted results."
                )
            runner.check()
        except ConfigurationError as error:
            logger.error("This worker does not start: %s", error.message)
            raise

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self._replicas.stop()

    def after_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self.runtime.detach()

    def before_process_message(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        owner = self._callpath(broker)
        if owner.drives(self):
            owner.begin(message)

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: MessageProxy,
        *,
        result: Any | None = None,
        exception: BaseException | None = None,
    ) -> None:
        owner = self._callpath(broker)
        if owner.drives(self):
            owner.end()

    def after_skip_message(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        owner = self._callpath(broker)
        if owner.drives(self):
            owner.end()


def _check_ray_flag(options: dict[str, Any], *, actor_name: str, where: str) -> None:
    if "ray" in options and not isinstance(options["ray"], bool):
        raise RayOptionsError(f"The ray option of actor {actor_name!r} must be True or False in {where}.")


def _check_settings(**settings: Any) -> None:
    """Raise one ``ConfigurationError`` listing every invalid constructor argument."""
    address = settings["address"]
    runtime_env = settings["runtime_env"]
    enabled_by_default = settings["enabled_by_default"]
    wait_slice = settings["wait_slice"]
    ray_init_kwargs = settings["ray_init_kwargs"]
    runner = settings["runner"]
    max_in_flight = settings["max_in_flight"]
    job_address = settings["job_address"]
    job_python = settings["job_python"]
    stuck_timeout = settings["stuck_timeout"]
    problems = []
    if max_in_flight is not None and (
        isinstance(max_in_flight, bool) or not isinstance(max_in_flight, int) or max_in_flight < 1
    ):
        problems.append(f"max_in_flight must be an integer >= 1 or None, not {max_in_flight!r}")
    if ray_init_kwargs and {"address", "runtime_env"} & set(ray_init_kwargs):
        problems.append("ray_init_kwargs cannot set address or runtime_env: pass them as parameters")
    for name, problem in (
        ("address", checks.address_problem(address)),
        ("runner", checks.runner_problem(runner)),
        ("job_address", checks.job_address_problem(job_address)),
        ("job_python", checks.job_python_problem(job_python)),
        ("stuck_timeout", checks.stuck_timeout_problem(stuck_timeout)),
        ("wait_slice", checks.wait_slice_problem(wait_slice)),
        ("log_level", checks.log_level_problem(settings["log_level"])),
    ):
        if problem:
            problems.append(f"{name} {problem}")
    if runtime_env is not None and not isinstance(runtime_env, dict):
        problems.append(f"runtime_env must be a dict, not {type(runtime_env).__name__}")
    if not isinstance(enabled_by_default, bool):
        problems.append(f"enabled_by_default must be True or False, not {enabled_by_default!r}")
    if problems:
        raise ConfigurationError("Invalid RayExecutionMiddleware settings: " + "; ".join(problems) + ".", problems)
