"""Waiting for a ``ray_job`` runner's job and collecting its outcome.

The worker thread looks at the job every ``wait_slice`` seconds (so Dramatiq's time limit and shutdown interrupts
land, and a cancel is seen), and stops a job without progress for ``stuck_timeout`` seconds. Progress is a change
of the job's status or growth of its logs (anything the body prints counts). Once the job has ended, its outcome
is read from the store: the result, or the body's exception in the form :mod:`dramatiq_ray.callpath.crossing`
owns.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

import dramatiq

from ...callpath import crossing
from ...callpath import logs as body_logs
from ...callpath.wrapper import Call
from ...errors import RayJobStuckError, RaySystemError, RayTaskCancelledError
from ...payloads.marker import SPILLED_KEY, VALUE_KEY, InlineValue, SpilledResult, is_inline_shape, is_spilled_shape
from ...payloads.stores.base import BlobStore
from .jobs_api import JobsApi

__all__ = ["LOG_TAIL", "collect", "forget", "wait"]

logger = logging.getLogger(__name__)

#: How many characters of a failed job's logs go into the error.
LOG_TAIL = 2000


def wait(
    api: JobsApi, client: Any, sid: str, actor_name: str, *, stuck_timeout: float, call: Call | None = None
) -> str:
    """Wait for job ``sid`` to end and return its final status (``SUCCEEDED``, ``FAILED`` or ``STOPPED``).

    Raises:
      RayJobStuckError: it made no progress for ``stuck_timeout`` seconds (it was stopped).
      MessageCancelledError: the message was cancelled (the caller stops the job, as for any interrupt).
      RayUnavailableError: its status could not be read for the Jobs API's ``status_grace``.
    """
    last_status, last_log_size = "", -1
    progress_at = time.monotonic()
    logs_checked = 0.0
    log_every = max(api.wait_slice, stuck_timeout / 10)
    failing_since: list[float] = []
    while True:
        status = api.status(client, sid, actor_name, failing_since)
        if status is None:
            time.sleep(api.wait_slice)
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
                size = len(api.call(f"reading the logs of job {sid}", client.get_job_logs, sid))
                if size != last_log_size:
                    last_log_size, progress_at = size, now
        if now - progress_at > stuck_timeout:
            api.stop(client, sid, actor_name)
            raise RayJobStuckError(
                f"Ray job {sid} of actor {actor_name!r} made no progress (status {status}, no new log output) "
                f"for {stuck_timeout:g} s and was stopped; see ray job logs {sid}."
            )
        time.sleep(api.wait_slice)


def forget(store: BlobStore, job_dir: str) -> None:
    """Delete a collected job's spec (its arguments). The outcome stays for a concurrent delivery of the same
    message that adopted the same job (a large result in it is a pointer, so it is small); ``gc`` collects it
    by age."""
    try:
        store.delete_named(f"{job_dir}/spec.json")
    except Exception as error:
        logger.warning("Could not delete %s/spec.json from %s: %s", job_dir, store.describe(), error)


def collect(
    api: JobsApi, client: Any, store: BlobStore, sid: str, job_dir: str, status: str, actor_name: str, message_id: str
) -> Any:
    """The body's result (a marker when it was spilled or is not JSON) from the outcome of the ended job ``sid``,
    with the records it logged re-emitted here; or raise its exception (see :mod:`dramatiq_ray.callpath.crossing`).

    Raises:
      RayTaskCancelledError: it was stopped before it wrote an outcome.
      RaySystemError: it ended without an outcome otherwise (the error has the end of its logs).
    """
    raw = store.get_named(f"{job_dir}/outcome.json")
    if raw is None:
        if status == "STOPPED":
            raise RayTaskCancelledError(f"Ray job {sid} of actor {actor_name!r} was stopped.")
        logs = api.log_tail(client, sid, LOG_TAIL)
        raise RaySystemError(
            f"Ray job {sid} of actor {actor_name!r} ended {status} without an outcome. Last log lines:\n{logs}"
        )
    forget(store, job_dir)
    outcome = dramatiq.get_encoder().decode(raw)
    body_logs.emit(body_logs.BodyLogs.from_dict(outcome.get("logs")), actor_name=actor_name, message_id=message_id)
    if outcome.get("ok"):
        result: Any = outcome.get("result")
        if is_inline_shape(result):
            return InlineValue(result[VALUE_KEY]["codec"], result[VALUE_KEY]["data"])
        return SpilledResult(result[SPILLED_KEY]) if is_spilled_shape(result) else result
    raise crossing.from_document(outcome, actor_name, "the Ray job")
