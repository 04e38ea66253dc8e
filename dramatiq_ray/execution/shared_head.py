"""The one local Ray head a ``dramatiq`` CLI shares among its worker processes: a fork function of the
middleware starts it beside the workers and publishes its address; the workers wait for it on their first
message (the CLI starts fork processes only after every worker has booted)."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path

from ..errors import ConfigurationError
from .local_head import LocalHead

logger = logging.getLogger(__name__)

#: How long a CLI worker waits for the shared head to come up before giving up, in seconds.
SHARED_HEAD_TIMEOUT = 180.0


def shared_head_dir(cli_pid: int) -> Path:
    """Where the shared head of the ``dramatiq`` CLI with pid ``cli_pid`` keeps its temp dir and address."""
    return Path(tempfile.gettempdir()) / f"dramatiq-ray-{cli_pid}"


def run_shared_head() -> int:
    """Fork function: run one local Ray head for every worker process of this ``dramatiq`` CLI.

    Runs in a process the CLI forks beside its workers; its parent is the CLI's main process, whose pid names
    the directory where the address is published. Returns when the CLI stops it (SIGTERM), stopping the head and
    removing that directory, the head's temp dir with it; also when the head fails to start, after raising
    :class:`~dramatiq_ray.RayUnavailableError`.
    """
    return _run(dashboard=False)


def run_shared_head_with_dashboard() -> int:
    """Fork function: :func:`run_shared_head`, with the dashboard (the Ray Jobs API) that the ``ray_job`` runner
    submits to; its address is published beside the head's."""
    return _run(dashboard=True)


def _run(*, dashboard: bool) -> int:
    directory = shared_head_dir(os.getppid())
    if directory.exists():
        shutil.rmtree(directory, ignore_errors=True)
    head = LocalHead(temp_dir=directory / "ray", dashboard=dashboard)
    try:
        address = head.start()
        if dashboard:
            _publish(directory / "dashboard", head.dashboard_url)
        _publish(directory / "address", address)  # last: a reader that sees it sees the rest
        logger.info("Shared Ray head for this dramatiq process group is up at %s.", address)
        while head.running():
            time.sleep(1)
        output = head.log_path.read_text(errors="replace")[-4000:] if head.log_path.exists() else ""
        logger.error("The shared Ray head exited unexpectedly; its output ends with:\n%s", output)
        return 1
    finally:
        _ignore_stop_signals()
        try:
            head.stop()
        except Exception:
            logger.exception("Stopping the shared Ray head failed.")
        shutil.rmtree(directory, ignore_errors=True)


def _publish(path: Path, value: str) -> None:
    staging = path.with_suffix(".tmp")
    staging.write_text(value)
    staging.replace(path)


def _ignore_stop_signals() -> None:
    """Let the cleanup finish: when the CLI's main process exits it terminates its fork processes again, and
    Dramatiq's handler for that second SIGTERM would raise ``SystemExit`` in the middle of stopping the head."""
    if threading.current_thread() is not threading.main_thread():
        return
    for name in ("SIGTERM", "SIGHUP", "SIGINT"):
        if hasattr(signal, name):
            with contextlib.suppress(OSError, ValueError):
                signal.signal(getattr(signal, name), signal.SIG_IGN)


def wait_for_shared_head(cli_pid: int, timeout: float = SHARED_HEAD_TIMEOUT) -> str:
    """Wait for the shared head of this CLI to publish its address, and return it.

    Raises:
      ConfigurationError: when no shared head appears (the middleware was not on the broker when the CLI
        collected fork functions, or the head failed to start).
    """
    path = shared_head_dir(cli_pid) / "address"
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise ConfigurationError(
                f"No shared Ray head appeared at {path} within {timeout:.0f} s. Pass address= to "
                "RayExecutionMiddleware or set RAY_ADDRESS to attach to a running Ray cluster."
            )
        time.sleep(0.2)
    return path.read_text().strip()


def shared_head_dashboard(cli_pid: int, timeout: float = SHARED_HEAD_TIMEOUT) -> str:
    """Wait for the shared head of this CLI, and return its dashboard's (Ray Jobs API's) address.

    Raises:
      ConfigurationError: no shared head appeared, or it runs no dashboard.
    """
    wait_for_shared_head(cli_pid, timeout)
    path = shared_head_dir(cli_pid) / "dashboard"
    if not path.exists():
        raise ConfigurationError(
            "The shared Ray head of this dramatiq CLI runs no dashboard, so the ray_job runner cannot submit jobs: "
            "set job_address / RAY_JOB_ADDRESS, or RAY_ADDRESS to a cluster whose head runs one."
        )
    return path.read_text().strip()
