"""A local Ray head in a subprocess, and the one head a ``dramatiq`` CLI shares among its worker processes."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from ..errors import ConfigurationError, RayUnavailableError

logger = logging.getLogger(__name__)

#: How long a CLI worker waits for the shared head to come up before giving up, in seconds.
SHARED_HEAD_TIMEOUT = 180.0


_handed_out_ports: set[int] = set()
_ports_lock = threading.Lock()


def free_port() -> int:
    """A free loopback port that this process has not handed out before.

    Each port is probed with a socket that is closed again at once, so two probes in a row can return the same
    port; a head whose components share a port does not start ("is trying to use a port number ... that is used
    by other components"), hence the memory of what was handed out.
    """
    with _ports_lock:
        while True:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind(("127.0.0.1", 0))
                port = int(sock.getsockname()[1])
            if port not in _handed_out_ports:
                _handed_out_ports.add(port)
                return port


class LocalHead:
    """``ray start --head --block`` on free loopback ports with its own temp dir, stopped by pid.

    Unlike ``ray stop``, stopping it never touches another Ray on the machine.

    Parameters:
      temp_dir: Ray's temp dir for this head (keep it short: Ray puts unix sockets under it).
      num_cpus: logical CPUs to advertise (``None``: all).
      resources: custom resources to advertise.
      port: GCS port (``None``: a free one, kept across :meth:`stop` / :meth:`start`).
      dashboard: also run the dashboard (which serves the Ray Jobs API) on a free port, :attr:`dashboard_url`.
    """

    def __init__(
        self,
        *,
        temp_dir: str | Path,
        num_cpus: int | None = None,
        resources: dict[str, float] | None = None,
        port: int | None = None,
        dashboard: bool = False,
    ) -> None:
        self.temp_dir = Path(temp_dir)
        self.dashboard = dashboard
        self.dashboard_port = free_port()
        self.num_cpus = num_cpus
        self.resources = resources
        self.port = port or free_port()
        self.client_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def client_address(self) -> str:
        """The Ray Client address (``ray://``) of this head."""
        return f"ray://127.0.0.1:{self.client_port}"

    @property
    def dashboard_url(self) -> str:
        """The dashboard's (and Ray Jobs API's) address; served only when started with ``dashboard=True``."""
        return f"http://127.0.0.1:{self.dashboard_port}"

    @property
    def log_path(self) -> Path:
        return self.temp_dir / "head.log"

    def command(self) -> list[str]:
        import json

        ports = {
            "--ray-client-server-port": self.client_port,
            "--dashboard-port": self.dashboard_port,
            "--dashboard-agent-listen-port": free_port(),
            "--dashboard-agent-grpc-port": free_port(),
            "--runtime-env-agent-port": free_port(),
            "--metrics-export-port": free_port(),
        }
        command = [
            sys.executable,
            "-c",
            "import sys; from ray.scripts.scripts import main; sys.exit(main())",
            "start",
            "--head",
            "--block",
            f"--port={self.port}",
            "--node-ip-address=127.0.0.1",
            f"--temp-dir={self.temp_dir}",
            f"--include-dashboard={'true' if self.dashboard else 'false'}",
            "--disable-usage-stats",
            *(f"{flag}={value}" for flag, value in ports.items()),
        ]
        if self.num_cpus is not None:
            command.append(f"--num-cpus={self.num_cpus}")
        if self.resources:
            command.append(f"--resources={json.dumps(self.resources)}")
        return command

    def start(self, timeout: float = 120) -> str:
        """Start the head and wait until it is up; return its address.

        Raises:
          RayUnavailableError: when the head does not come up within ``timeout`` seconds.
        """
        self.temp_dir.mkdir(parents=True, exist_ok=True)
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while "Ray runtime started" not in self.log_path.read_bytes()[offset:].decode(errors="replace"):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                output = self.log_path.read_text(errors="replace")[-4000:]
                self.stop()
                raise RayUnavailableError(f"The local Ray head did not start:\n{output}")
            time.sleep(0.2)
        return self.address

    def pids(self) -> set[int]:
        """Every live process of this head: ``ray start`` itself, and whatever names its temp dir, with their
        descendants (Ray's worker processes)."""
        import psutil

        roots = []
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(psutil.NoSuchProcess):
                roots.append(psutil.Process(self.proc.pid))
        marker = str(self.temp_dir)
        for proc in psutil.process_iter(["cmdline"]):
            with contextlib.suppress(psutil.Error):
                if any(marker in part for part in proc.info["cmdline"] or ()):
                    roots.append(proc)
        found: set[int] = set()
        for root in roots:
            with contextlib.suppress(psutil.Error):
                found.add(root.pid)
                found.update(child.pid for child in root.children(recursive=True))
        return found

    def stop(self, timeout: float = 30) -> None:
        """Stop the head: SIGTERM to ``ray start --block`` (which stops what it started), then SIGKILL to any
        process of this head still alive."""
        import psutil

        leftovers = self.pids()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=timeout)
        leftovers |= self.pids()
        procs = []
        for pid in leftovers:
            with contextlib.suppress(psutil.Error):
                procs.append(psutil.Process(pid))
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        psutil.wait_procs(procs, timeout=timeout)
        self.proc = None


# --- the shared head of one dramatiq CLI ---------------------------------------------------------------------


def shared_head_dir(cli_pid: int) -> Path:
    """Where the shared head of the ``dramatiq`` CLI with pid ``cli_pid`` keeps its temp dir and address."""
    return Path(tempfile.gettempdir()) / f"dramatiq-ray-{cli_pid}"


def run_shared_head() -> int:
    """Fork function: run one local Ray head for every worker process of this ``dramatiq`` CLI.

    Runs in a process the CLI forks beside its workers; its parent is the CLI's main process, whose pid names
    the directory where the address is published. Returns when the CLI stops it (SIGTERM), stopping the head.
    """
    directory = shared_head_dir(os.getppid())
    if directory.exists():
        shutil.rmtree(directory, ignore_errors=True)
    head = LocalHead(temp_dir=directory / "ray")
    try:
        address = head.start()
        staging = directory / "address.tmp"
        staging.write_text(address)
        staging.replace(directory / "address")
        logger.info("Shared Ray head for this dramatiq process group is up at %s.", address)
        while head.proc is not None and head.proc.poll() is None:
            time.sleep(1)
        logger.error("The shared Ray head exited unexpectedly; see %s.", head.log_path)
        return 1
    finally:
        head.stop()
        shutil.rmtree(directory, ignore_errors=True)


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
