"""The durable ``ray_job`` runner: each message's body runs as a Ray Job that outlives the worker.

The submission id is derived from the message id and attempt (``dramatiq-<message_id>-<retries>``), so a
redelivered message (its worker died) finds the job still running, or finished, and adopts it instead of starting
the body again. The job's input (the spec: actor path, arguments, message) and its outcome live in the configured
blob store as named objects under ``jobs/<submission_id>/``; the job and every worker reach it.

The worker thread waits in short slices (so Dramatiq's time limit and shutdown interrupts land), stops the job
when interrupted, and stops a job without progress for ``stuck_timeout`` seconds. Progress is a change of the
job's status or growth of its logs (anything the body prints counts).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from typing import Any

import dramatiq
from dramatiq.broker import MessageProxy

from ... import _otel, metrics
from ...callpath import crossing
from ...callpath import logs as body_logs
from ...callpath.body import target_for
from ...callpath.wrapper import Call
from ...errors import (
    ConfigurationError,
    RayJobStuckError,
    RaySystemError,
    RayTaskCancelledError,
    RayUnavailableError,
)
from ...payloads.marker import (
    SPILLED_KEY,
    VALUE_KEY,
    InlineValue,
    SpilledResult,
    is_inline_shape,
    is_spilled_shape,
)
from ...payloads.options import require_blob_store
from ...payloads.stores.base import BlobStore
from ..connection import RayRuntime
from ..options import check_message_options, check_options, merge_runtime_envs
from .job_entry import CHANNEL_ENV, ENCODER_ENV, PLAN_ENV, encode_channel, encode_encoder, encode_plan

logger = logging.getLogger(__name__)

#: What needs a store that keeps blobs, and the way out, for this runner (see :func:`require_blob_store`).
JOB_NEED = (
    "The ray_job runner keeps each job's input and outcome in the results' blob store, reachable from the Ray head"
)
JOB_INSTEAD = "use runner='ray_core'"
#: The dashboard port Ray uses unless told otherwise; the Jobs API is served there.
DEFAULT_DASHBOARD_PORT = 8265
#: How many characters of a failed job's logs go into the error.
LOG_TAIL = 2000
#: The longest one Jobs API call may take, in seconds, before it counts as failed (the dashboard is hung).
JOBS_API_TIMEOUT = 30.0
#: How long a job's status may fail to be read, in seconds, before the worker gives up on the job (the Jobs API
#: is down, not just restarting).
STATUS_GRACE = 120.0


def submission_id(message: dramatiq.Message[Any] | MessageProxy) -> str:
    """The Ray job submission id of one attempt of ``message``: the same for a redelivery, new for a retry."""
    return f"dramatiq-{message.message_id}-{int(message.options.get('retries', 0))}"


def job_address_for(ray_address: str | None) -> str | None:
    """The Jobs API address derived from a Ray address (``host:port`` or ``ray://host:port``), else ``None``."""
    if not ray_address:
        return None
    host, sep, port = ray_address.removeprefix("ray://").rpartition(":")
    if not sep or not host or not port.isdigit():
        return None
    return f"http://{host}:{DEFAULT_DASHBOARD_PORT}"


class JobRunner:
    """Run message bodies as Ray Jobs; one per middleware, shared by the worker's threads.

    Parameters:
      runtime_env: the ``runtime_env`` of every job (the actor's and message's ``ray_options`` ones are merged
        over it).
      job_address: the Jobs API (dashboard) address, ``None`` to derive it from ``ray_address``.
      runtime: the worker process's connection to Ray, which says the Ray address in use (``None``: none
        configured) and whether this is a ``dramatiq`` CLI worker (whose embedded default is the CLI's shared head).
      python: the Python executable the job's entrypoint runs with (on the head node); ``None``: this worker's
        own interpreter (``sys.executable``) when the Jobs API is on this host, else ``python``.
      stuck_timeout: seconds without progress after which a job is stopped and failed (retryably).
      wait_slice: seconds between two looks at the job.
      api_timeout: seconds one Jobs API call may take before it fails with ``RayUnavailableError``.
      status_grace: seconds during which failures to read a job's status are retried before the worker gives up.
      log_level: the body's log records at this level or above come back with the job's outcome and are
        re-emitted in the worker; ``None``: the worker's root logger level at the time of the call.

    Every Jobs API call runs in a helper thread that the worker thread waits for in slices, so a hung dashboard
    holds no worker thread past ``api_timeout`` and a time limit or shutdown still lands.
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
        self.job_address = job_address
        self.runtime = runtime
        self.python = python
        self.stuck_timeout = stuck_timeout
        self.wait_slice = wait_slice
        self.api_timeout = api_timeout
        self.status_grace = status_grace
        self.log_level = log_level
        self._client: tuple[int, Any] | None = None
        self._lock = threading.Lock()

    def _embedded(self) -> bool:
        """Whether the Jobs API is the dashboard of this CLI's shared head (no address configured anywhere)."""
        return self.job_address is None and self.runtime.resolved_address() is None and self.runtime.in_cli_worker()

    def address(self) -> str:
        """The Jobs API address in use.

        Raises:
          ConfigurationError: none was given and none can be derived from the Ray address.
        """
        if self._embedded():
            from ..shared_head import shared_head_dashboard

            return shared_head_dashboard(os.getppid())
        address = self.job_address or job_address_for(self.runtime.resolved_address())
        if address is None:
            raise ConfigurationError(
                "The ray_job runner needs the Ray Jobs API (dashboard) address: pass job_address= to "
                "RayExecutionMiddleware (e.g. 'http://head:8265') or an explicit Ray address to derive it from."
            )
        return address

    def entrypoint_python(self) -> str:
        """The interpreter of the job's entrypoint: the configured one, else this worker's own when the head is on
        this host (a venv that is not activated still imports dramatiq_ray), else ``python`` from the head's
        PATH."""
        if self.python:
            return self.python
        host = self.address().split("://", 1)[-1].rsplit(":", 1)[0].strip("[]")
        return sys.executable if host in ("127.0.0.1", "localhost", "::1") else "python"

    def check(self) -> None:
        """Check, at worker boot, that this runner can work: its Jobs API address is known and answers.

        Raises:
          ConfigurationError: it cannot (the message says what to set).
        """
        from ..connection import check_reachable

        if self._embedded():
            return  # the shared head starts after every worker has booted: the first message waits for it
        address = self.address()
        try:
            check_reachable(address.split("://", 1)[-1].rstrip("/"))
        except ConnectionError as error:
            raise ConfigurationError(
                f"The ray_job runner cannot reach the Ray Jobs API at {address} ({error}). Start the Ray head with "
                "its dashboard, or set job_address / RAY_JOB_ADDRESS to where it runs."
            ) from None

    def client(self) -> Any:
        # Not under the lock while connecting: a hung dashboard would hold every other thread at the lock.
        cached = self._client
        if cached is not None and cached[0] == os.getpid():
            return cached[1]
        from ray.job_submission import JobSubmissionClient

        from ..connection import prepare_auth

        address = self.address()
        with self._lock:
            prepare_auth(self.runtime.resolved_address() or address)
        try:
            client = self._api("connecting", JobSubmissionClient, address)
        except (ConnectionError, RuntimeError, OSError) as error:
            raise RayUnavailableError(f"Could not reach the Ray Jobs API at {address}: {error}") from error
        with self._lock:
            self._client = (os.getpid(), client)
        return client

    def _api(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Call ``fn`` (one Jobs API call) in a helper thread and wait for it in slices, at most ``api_timeout``
        seconds.

        Raises:
          RayUnavailableError: the call did not return in time (the helper thread is left to finish on its own).
          Exception: whatever the call raised.
        """
        outcome: dict[str, Any] = {}
        done = threading.Event()

        def call() -> None:
            try:
                outcome["value"] = fn(*args, **kwargs)
            except BaseException as error:
                outcome["error"] = error
            finally:
                done.set()

        threading.Thread(target=call, name="dramatiq-ray-jobs-api", daemon=True).start()
        deadline = time.monotonic() + self.api_timeout
        while not done.wait(max(0.0, min(self.wait_slice, deadline - time.monotonic()))):
            if time.monotonic() >= deadline:
                raise RayUnavailableError(
                    f"The Ray Jobs API did not answer ({what}) within {self.api_timeout:g} s; the message is retried. "
                    "Check that the Ray head's dashboard is healthy."
                )
        if "error" in outcome:
            raise outcome["error"]
        return outcome["value"]

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
            if self._embedded()
            else None,
            self.runtime_env,
            check_options(actor.options.get("ray_options"), actor_name=actor.actor_name, where="actor").get(
                "runtime_env"
            ),
            check_message_options(message.options.get("ray_options"), actor_name=actor.actor_name).get("runtime_env"),
        )
        sid = submission_id(message)
        job_dir = f"jobs/{sid}"
        client = self.client()
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
        env = {**runtime_env, "env_vars": env_vars}
        try:
            self._api(
                f"submitting job {sid}",
                client.submit_job,
                entrypoint=f"{self.entrypoint_python()} -m dramatiq_ray.execution.runners.job_entry {job_dir}",
                submission_id=sid,
                runtime_env=env,
                metadata={"dramatiq_actor": actor.actor_name, "dramatiq_message_id": message.message_id},
            )
            logger.info(
                "Actor %r runs as Ray job %s; logs: ray job logs --address %s %s",
                actor.actor_name,
                sid,
                self.address(),
                sid,
            )
        except RuntimeError as error:
            if "already exists" not in str(error):
                raise RaySystemError(f"Ray refused job {sid} of actor {actor.actor_name!r}: {error}") from None
            logger.info(
                "Adopting Ray job %s of actor %r (a redelivery of its message); logs: ray job logs --address %s %s",
                sid,
                actor.actor_name,
                self.address(),
                sid,
            )
        except RayUnavailableError:
            # The submission may have reached the dashboard: the retry's job (a new attempt) must not run beside it.
            self.stop(client, sid, actor.actor_name)
            raise
        except (ConnectionError, OSError) as error:
            raise RayUnavailableError(f"Could not submit job {sid} to the Ray Jobs API: {error}") from error
        try:
            status = self._wait(client, sid, actor.actor_name, call)
        except BaseException:
            # Time limit, shutdown or any other interrupt: the job stops too.
            self.stop(client, sid, actor.actor_name)
            raise
        return self._collect(client, store, sid, job_dir, status, actor.actor_name, message.message_id)

    def _status(self, client: Any, sid: str, actor_name: str, failing_since: list[float]) -> str | None:
        """The job's status, or ``None`` when it could not be read this time (a dashboard restarting, a dropped
        connection): the job keeps running and the next look tries again, for up to ``status_grace`` seconds.

        Raises:
          RayUnavailableError: the status could not be read for ``status_grace`` seconds.
        """
        try:
            status = str(self._api(f"reading the status of job {sid}", client.get_job_status, sid).value)
        except Exception as error:
            now = time.monotonic()
            if not failing_since:
                failing_since.append(now)
            if now - failing_since[0] > self.status_grace:
                raise RayUnavailableError(
                    f"The status of Ray job {sid} of actor {actor_name!r} could not be read for "
                    f"{self.status_grace:g} s ({type(error).__name__}: {error}); the message is retried."
                ) from error
            logger.warning(
                "Could not read the status of Ray job %s of actor %r (%s: %s); trying again.",
                sid,
                actor_name,
                type(error).__name__,
                error,
            )
            return None
        failing_since.clear()
        return status

    def _wait(self, client: Any, sid: str, actor_name: str, call: Call | None = None) -> str:
        last_status, last_log_size = "", -1
        progress_at = time.monotonic()
        logs_checked = 0.0
        log_every = max(self.wait_slice, self.stuck_timeout / 10)
        failing_since: list[float] = []
        while True:
            status = self._status(client, sid, actor_name, failing_since)
            if status is None:
                time.sleep(self.wait_slice)
                continue
            if status in ("SUCCEEDED", "FAILED", "STOPPED"):
                return status
            if call is not None and call.cancel_requested():
                # dramatiq_ray.cancel: the caller stops the job (as for any interrupt), the message fails as
                # cancelled.
                raise call.cancelled(f"while its Ray job {sid} ran")
            now = time.monotonic()
            if status != last_status or status == "PENDING":
                # A job waiting for resources or for its runtime_env is not stuck.
                last_status, progress_at = status, now
            elif now - logs_checked >= log_every:
                logs_checked = now
                with contextlib.suppress(Exception):
                    size = len(self._api(f"reading the logs of job {sid}", client.get_job_logs, sid))
                    if size != last_log_size:
                        last_log_size, progress_at = size, now
            if now - progress_at > self.stuck_timeout:
                self.stop(client, sid, actor_name)
                raise RayJobStuckError(
                    f"Ray job {sid} of actor {actor_name!r} made no progress (status {status}, no new log output) "
                    f"for {self.stuck_timeout:g} s and was stopped; see ray job logs {sid}."
                )
            time.sleep(self.wait_slice)

    def stop(self, client: Any, sid: str, actor_name: str) -> None:
        logger.info("Stopping Ray job %s of actor %r.", sid, actor_name)
        try:
            self._api(f"stopping job {sid}", client.stop_job, sid)
        except Exception as error:
            logger.warning("Could not stop Ray job %s of actor %r: %s", sid, actor_name, error)

    @staticmethod
    def _forget(store: BlobStore, job_dir: str) -> None:
        """Delete a collected job's spec (its arguments). The outcome stays for a concurrent delivery of the same
        message that adopted the same job (a large result in it is a pointer, so it is small); ``gc`` collects it
        by age."""
        try:
            store.delete_named(f"{job_dir}/spec.json")
        except Exception as error:
            logger.warning("Could not delete %s/spec.json from %s: %s", job_dir, store.describe(), error)

    def _collect(
        self, client: Any, store: BlobStore, sid: str, job_dir: str, status: str, actor_name: str, message_id: str
    ) -> Any:
        raw = store.get_named(f"{job_dir}/outcome.json")
        if raw is None:
            if status == "STOPPED":
                raise RayTaskCancelledError(f"Ray job {sid} of actor {actor_name!r} was stopped.")
            logs = ""
            with contextlib.suppress(Exception):
                logs = self._api(f"reading the logs of job {sid}", client.get_job_logs, sid)[-LOG_TAIL:]
            raise RaySystemError(
                f"Ray job {sid} of actor {actor_name!r} ended {status} without an outcome. Last log lines:\n{logs}"
            )
        self._forget(store, job_dir)
        outcome = dramatiq.get_encoder().decode(raw)
        body_logs.emit(body_logs.BodyLogs.from_dict(outcome.get("logs")), actor_name=actor_name, message_id=message_id)
        if outcome.get("ok"):
            result: Any = outcome.get("result")
            if is_inline_shape(result):
                return InlineValue(result[VALUE_KEY]["codec"], result[VALUE_KEY]["data"])
            return SpilledResult(result[SPILLED_KEY]) if is_spilled_shape(result) else result
        raise crossing.from_document(outcome, actor_name, "the Ray job")
