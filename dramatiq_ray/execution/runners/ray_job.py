"""The durable ``ray_job`` runner: each message's body runs as a Ray Job that outlives the worker.

The submission id is derived from the message id and attempt (``dramatiq-<message_id>-<retries>``), so a
redelivered message (its worker died) finds the job still running, or finished, and adopts it instead of starting
the body again. The job's input (the spec: actor path, arguments, message) and its outcome live in the configured
blob store as named objects under ``jobs/<submission_id>/``; the job and every worker reach it. The job applies
the message's spill plan, carried whole in its environment (:mod:`.job_entry`).

This module builds and submits the job; :mod:`.job_wait` waits for it and collects its outcome, and
:mod:`.jobs_api` reaches the Jobs API.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import dramatiq
from dramatiq.broker import MessageProxy

from ... import _otel, metrics
from ...callpath.body import target_for
from ...callpath.wrapper import Call
from ...errors import RaySystemError, RayUnavailableError
from ...payloads.options import require_blob_store
from ..connection import RayRuntime
from ..options import check_message_options, check_options, merge_runtime_envs
from . import job_wait
from .job_entry import CHANNEL_ENV, ENCODER_ENV, PLAN_ENV, encode_channel, encode_encoder, encode_plan
from .jobs_api import JOBS_API_TIMEOUT, STATUS_GRACE, JobsApi, job_address_for

__all__ = ["JOB_INSTEAD", "JOB_NEED", "JobRunner", "job_address_for", "submission_id"]

logger = logging.getLogger(__name__)

#: What needs a store that keeps blobs, and the way out, for this runner (see :func:`require_blob_store`).
JOB_NEED = (
    "The ray_job runner keeps each job's input and outcome in the results' blob store, reachable from the Ray head"
)
JOB_INSTEAD = "use runner='ray_core'"


def submission_id(message: dramatiq.Message[Any] | MessageProxy) -> str:
    """The Ray job submission id of one attempt of ``message``: the same for a redelivery, new for a retry."""
    return f"dramatiq-{message.message_id}-{int(message.options.get('retries', 0))}"


class JobRunner:
    """Run message bodies as Ray Jobs; one per middleware, shared by the worker's threads.

    Parameters:
      runtime_env: the ``runtime_env`` of every job (the actor's and message's ``ray_options`` ones are merged
        over it).
      job_address, runtime, python, api_timeout, status_grace: where the Jobs API is and how it is called (see
        :class:`~.jobs_api.JobsApi`).
      stuck_timeout: seconds without progress after which a job is stopped and failed (retryably).
      wait_slice: seconds between two looks at the job.
      log_level: the body's log records at this level or above come back with the job's outcome and are
        re-emitted in the worker; ``None``: the worker's root logger level at the time of the call.
    """

    def __init__(
        self,
        *,
        runtime_env: dict[str, Any],
        job_address: str | None,
        runtime: RayRuntime,
        python: str | None,
        stuck_timeout: float,
        wait_slice: float,
        api_timeout: float = JOBS_API_TIMEOUT,
        status_grace: float = STATUS_GRACE,
        log_level: int | None = None,
    ) -> None:
        self.runtime_env = runtime_env
        self.stuck_timeout = stuck_timeout
        self.log_level = log_level
        self.api = JobsApi(
            job_address=job_address,
            runtime=runtime,
            python=python,
            wait_slice=wait_slice,
            api_timeout=api_timeout,
            status_grace=status_grace,
        )

    @property
    def job_address(self) -> str | None:
        """The configured Jobs API address (``None``: derived)."""
        return self.api.job_address

    @property
    def api_timeout(self) -> float:
        """Seconds one Jobs API call may take."""
        return self.api.api_timeout

    @api_timeout.setter
    def api_timeout(self, value: float) -> None:
        self.api.api_timeout = value

    def address(self) -> str:
        """The Jobs API address in use (see :meth:`~.jobs_api.JobsApi.address`)."""
        return self.api.address()

    def entrypoint_python(self) -> str:
        """The interpreter of the job's entrypoint (see :meth:`~.jobs_api.JobsApi.entrypoint_python`)."""
        return self.api.entrypoint_python()

    def check(self) -> None:
        """Check, at worker boot, that this runner can work (see :meth:`~.jobs_api.JobsApi.check`).

        Raises:
          ConfigurationError: it cannot (the message says what to set).
        """
        self.api.check()

    # --- one message ---------------------------------------------------------------------------------------

    def run(self, call: Call) -> Any:
        """Run (or adopt) the job of this message's attempt and return the body's result or raise its error."""
        submitted = time.monotonic()
        try:
            return self._run(call)
        except RaySystemError as error:
            metrics.record_ray_system_failure(error)
            raise
        finally:
            metrics.observe_ray_wait(call.actor.actor_name, time.monotonic() - submitted)

    def _run(self, call: Call) -> Any:
        actor, message = call.actor, call.message
        plan = call.plan
        store = require_blob_store(plan.store if plan is not None else None, JOB_NEED, instead=JOB_INSTEAD)
        assert plan is not None  # it has a store
        runtime_env = merge_runtime_envs(
            # On this CLI's own head, jobs import the application as the workers do: from their directory.
            {"env_vars": {"PYTHONPATH": os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")]))}}
            if self.api.embedded()
            else None,
            self.runtime_env,
            check_options(actor.options.get("ray_options"), actor_name=actor.actor_name, where="actor").get(
                "runtime_env"
            ),
            check_message_options(message.options.get("ray_options"), actor_name=actor.actor_name).get("runtime_env"),
        )
        sid = submission_id(message)
        job_dir = f"jobs/{sid}"
        client = self.api.client()
        encoder = dramatiq.get_encoder()
        target = target_for(actor, by_value=False)
        spec = {
            "actor": actor.actor_name,
            "module": target.module,
            "qualname": target.qualname,
            "args": list(call.args),
            "kwargs": dict(call.kwargs),
            "message": message._message.asdict(),
            "log_level": self.log_level if self.log_level is not None else logging.getLogger().getEffectiveLevel(),
            "trace_ctx": _otel.current_carrier(),
        }
        # The job reads the spec and writes the outcome with this worker's own encoder, which it cannot know
        # otherwise (its process has Dramatiq's default), and applies this message's plan, carried whole.
        env_vars = {
            **runtime_env.get("env_vars", {}),
            PLAN_ENV: encode_plan(plan),
            ENCODER_ENV: encode_encoder(encoder),
        }
        store.put_named(f"{job_dir}/spec.json", encoder.encode(spec))
        if call.steering is not None:
            env_vars[CHANNEL_ENV] = encode_channel(call.steering.channel)
        self._submit(client, sid, job_dir, {**runtime_env, "env_vars": env_vars}, actor.actor_name, message.message_id)
        try:
            status = job_wait.wait(self.api, client, sid, actor.actor_name, stuck_timeout=self.stuck_timeout, call=call)
        except BaseException:
            # Time limit, shutdown or any other interrupt: the job stops too.
            self.api.stop(client, sid, actor.actor_name)
            raise
        return job_wait.collect(self.api, client, store, sid, job_dir, status, actor.actor_name, message.message_id)

    def _submit(
        self, client: Any, sid: str, job_dir: str, runtime_env: dict[str, Any], actor_name: str, message_id: str
    ) -> None:
        """Submit job ``sid``, or adopt it when it exists already (a redelivery of its message).

        Raises:
          RaySystemError: Ray refused the job.
          RayUnavailableError: the Jobs API could not be reached (the job, if it got there, is stopped).
        """
        try:
            self.api.call(
                f"submitting job {sid}",
                client.submit_job,
                entrypoint=f"{self.api.entrypoint_python()} -m dramatiq_ray.execution.runners.job_entry {job_dir}",
                submission_id=sid,
                runtime_env=runtime_env,
                metadata={"dramatiq_actor": actor_name, "dramatiq_message_id": message_id},
            )
            logger.info(
                "Actor %r runs as Ray job %s; logs: ray job logs --address %s %s",
                actor_name,
                sid,
                self.api.address(),
                sid,
            )
        except RuntimeError as error:
            if "already exists" not in str(error):
                raise RaySystemError(f"Ray refused job {sid} of actor {actor_name!r}: {error}") from None
            logger.info(
                "Adopting Ray job %s of actor %r (a redelivery of its message); logs: ray job logs --address %s %s",
                sid,
                actor_name,
                self.api.address(),
                sid,
            )
        except RayUnavailableError:
            # The submission may have reached the dashboard: the retry's job (a new attempt) must not run beside it.
            self.api.stop(client, sid, actor_name)
            raise
        except (ConnectionError, OSError) as error:
            raise RayUnavailableError(f"Could not submit job {sid} to the Ray Jobs API: {error}") from error
