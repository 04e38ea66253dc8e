"""The one local Ray head a ``dramatiq`` CLI shares among its worker processes: a fork function of the
middleware starts it beside the workers and publishes its address; the workers wait for it on their first
message (the CLI starts fork processes only after every worker has booted).

The address is published in ``<temp dir>/dramatiq-ray-<CLI pid>``, a name another local user can guess and
create first: the directory is made private (mode 0700, owned by this user, not a symbolic link) and both sides
check that before they use it, refusing otherwise."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import stat
import tempfile
import threading
import time
from pathlib import Path

from ..errors import ConfigurationError, RayUnavailableError
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
    _make_private_dir(directory)
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


def _make_private_dir(directory: Path) -> None:
    """Create ``directory`` for this user alone; a stale one of ours (a CLI that had the same pid) is replaced.

    Raises:
      ConfigurationError: the path is taken by another user or is a symbolic link.
    """
    if os.path.lexists(directory):
        _check_ours(directory, private=False)
        shutil.rmtree(directory)
    os.mkdir(directory, 0o700)
    _check_ours(directory, private=True)


def _check_ours(directory: Path, *, private: bool) -> None:
    """Raise ``ConfigurationError`` unless ``directory`` is a real directory owned by this user (and, with
    ``private``, accessible to this user only)."""
    info = os.lstat(directory)
    problem = None
    if not stat.S_ISDIR(info.st_mode):
        problem = "is not a directory (a symbolic link?)"
    elif hasattr(os, "getuid") and info.st_uid != os.getuid():
        problem = f"belongs to another user (uid {info.st_uid})"
    elif private and stat.S_IMODE(info.st_mode) & 0o077:
        problem = f"is accessible to other users (mode {stat.S_IMODE(info.st_mode):o})"
    if problem is not None:
        raise ConfigurationError(
            f"The shared Ray head's directory {directory} {problem}, so dramatiq-ray does not trust it. Remove it, "
            "set TMPDIR to a private directory, or pass address= / set RAY_ADDRESS to attach to a Ray cluster."
        )


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
      RayUnavailableError: no shared head appeared within ``timeout`` seconds (it may still be starting on a
        busy machine, so the message is retried).
      ConfigurationError: its directory is not private to this user (see the module's docstring).
    """
    directory = shared_head_dir(cli_pid)
    path = directory / "address"
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise RayUnavailableError(
                f"No shared Ray head appeared at {path} within {timeout:.0f} s; the message is retried. If this "
                "persists, check the worker's log for the head's output, or pass address= to "
                "RayExecutionMiddleware or set RAY_ADDRESS to attach to a running Ray cluster."
            )
        if os.path.lexists(directory):
            _check_ours(directory, private=True)
        time.sleep(0.2)
    _check_ours(directory, private=True)
    return path.read_text().strip()


def shared_head_dashboard(cli_pid: int, timeout: float = SHARED_HEAD_TIMEOUT) -> str:
    """Wait for the shared head of this CLI, and return its dashboard's (Ray Jobs API's) address.

    Raises:
      RayUnavailableError: no shared head appeared within ``timeout`` seconds.
      ConfigurationError: it runs no dashboard, or its directory is not private to this user.
    """
    wait_for_shared_head(cli_pid, timeout)
    path = shared_head_dir(cli_pid) / "dashboard"
    if not path.exists():
        raise ConfigurationError(
            "The shared Ray head of this dramatiq CLI runs no dashboard, so the ray_job runner cannot submit jobs: "
            "set job_address / RAY_JOB_ADDRESS, or RAY_ADDRESS to a cluster whose head runs one."
        )
    return path.read_text().strip()
