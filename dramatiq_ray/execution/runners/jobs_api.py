"""The Ray Jobs API as the ``ray_job`` runner uses it: where it is (given, derived from the Ray address, or the
``dramatiq`` CLI's shared head), whether it answers, and each call bounded in time.

Every call runs in a helper thread that the worker thread waits for in slices, so a hung dashboard holds no worker
thread past ``api_timeout`` and a time limit or shutdown still lands.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from typing import Any

from ...errors import ConfigurationError, RayUnavailableError
from ..connection import RayRuntime

__all__ = ["DEFAULT_DASHBOARD_PORT", "JOBS_API_TIMEOUT", "STATUS_GRACE", "JobsApi", "job_address_for"]

logger = logging.getLogger(__name__)

#: The dashboard port Ray uses unless told otherwise; the Jobs API is served there.
DEFAULT_DASHBOARD_PORT = 8265
#: The longest one Jobs API call may take, in seconds, before it counts as failed (the dashboard is hung).
JOBS_API_TIMEOUT = 30.0
#: How long a job's status may fail to be read, in seconds, before the worker gives up on the job (the Jobs API
#: is down, not just restarting).
STATUS_GRACE = 120.0


def job_address_for(ray_address: str | None) -> str | None:
    """The Jobs API address derived from a Ray address (``host:port`` or ``ray://host:port``), else ``None``."""
    if not ray_address:
        return None
    host, sep, port = ray_address.removeprefix("ray://").rpartition(":")
    if not sep or not host or not port.isdigit():
        return None
    return f"http://{host}:{DEFAULT_DASHBOARD_PORT}"


class JobsApi:
    """The Jobs API of one ``ray_job`` runner, shared by the worker's threads.

    Parameters:
      job_address: the Jobs API (dashboard) address, ``None`` to derive it from the Ray address in use.
      runtime: the worker process's connection to Ray, which says the Ray address in use (``None``: none
        configured) and whether this is a ``dramatiq`` CLI worker (whose embedded default is the CLI's shared head).
      python: the Python executable a job's entrypoint runs with (on the head node); ``None``: this worker's own
        interpreter (``sys.executable``) when the Jobs API is on this host, else ``python``.
      wait_slice: seconds between two looks at a call that has not returned.
      api_timeout: seconds one call may take before it fails with ``RayUnavailableError``.
      status_grace: seconds during which failures to read a job's status are retried before the worker gives up.
    """

    def __init__(
        self,
        *,
        job_address: str | None,
        runtime: RayRuntime,
        python: str | None,
        wait_slice: float,
        api_timeout: float = JOBS_API_TIMEOUT,
        status_grace: float = STATUS_GRACE,
    ) -> None:
        self.job_address = job_address
        self.runtime = runtime
        self.python = python
        self.wait_slice = wait_slice
        self.api_timeout = api_timeout
        self.status_grace = status_grace
        self._client: tuple[int, Any] | None = None
        self._lock = threading.Lock()

    def embedded(self) -> bool:
        """Whether the Jobs API is the dashboard of this CLI's shared head (no address configured anywhere)."""
        return self.job_address is None and self.runtime.resolved_address() is None and self.runtime.in_cli_worker()

    def address(self) -> str:
        """The Jobs API address in use.

        Raises:
          ConfigurationError: none was given and none can be derived from the Ray address.
        """
        if self.embedded():
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

        if self.embedded():
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
        """This process's ``JobSubmissionClient`` (made once per process).

        Raises:
          RayUnavailableError: the Jobs API cannot be reached.
        """
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
            client = self.call("connecting", JobSubmissionClient, address)
        except (ConnectionError, RuntimeError, OSError) as error:
            raise RayUnavailableError(f"Could not reach the Ray Jobs API at {address}: {error}") from error
        with self._lock:
            self._client = (os.getpid(), client)
        return client

    def call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
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

    def status(self, client: Any, sid: str, actor_name: str, failing_since: list[float]) -> str | None:
        """The job's status, or ``None`` when it could not be read this time (a dashboard restarting, a dropped
        connection): the job keeps running and the next look tries again, for up to ``status_grace`` seconds.

        Raises:
          RayUnavailableError: the status could not be read for ``status_grace`` seconds.
        """
        try:
            status = str(self.call(f"reading the status of job {sid}", client.get_job_status, sid).value)
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

    def stop(self, client: Any, sid: str, actor_name: str) -> None:
        """Stop job ``sid`` (best effort: a failure is logged)."""
        logger.info("Stopping Ray job %s of actor %r.", sid, actor_name)
        try:
            self.call(f"stopping job {sid}", client.stop_job, sid)
        except Exception as error:
            logger.warning("Could not stop Ray job %s of actor %r: %s", sid, actor_name, error)

    def log_tail(self, client: Any, sid: str, size: int) -> str:
        """The last ``size`` characters of the job's logs, or ``""`` when they cannot be read."""
        try:
            return str(self.call(f"reading the logs of job {sid}", client.get_job_logs, sid))[-size:]
        except Exception:
            return ""
