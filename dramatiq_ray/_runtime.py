"""Attaching a Dramatiq worker process to Ray: once, after the fork, under a lock; again after a lost connection.

Ray is imported only inside functions here: a process that imports ``dramatiq_ray`` and then forks (the
``dramatiq`` CLI's parent) must never have touched Ray.

Where the address comes from: the middleware's explicit ``address``, else ``RAY_ADDRESS``, else the embedded
default. Under the ``dramatiq`` CLI the embedded default is one Ray head shared by every worker process of that
CLI, started by :func:`run_shared_head` (a fork function of the middleware) and stopped with the workers; an
in-process ``Worker`` starts a private local Ray instead.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import ConfigurationError, RayUnavailableError

logger = logging.getLogger(__name__)

#: How long a CLI worker waits for the shared head to come up before giving up, in seconds.
SHARED_HEAD_TIMEOUT = 180.0


class RayRuntime:
    """The connection of one worker process to Ray.

    Parameters:
      address: Ray address (``"host:port"``, ``"auto"``, ``"local"``, ``"ray://host:10001"``), or ``None`` for
        ``RAY_ADDRESS``, else the embedded default.
      init_kwargs: extra keyword arguments for ``ray.init``.
    """

    def __init__(self, *, address: str | None = None, init_kwargs: dict[str, Any] | None = None) -> None:
        self.address = address
        self.init_kwargs = dict(init_kwargs or {})
        self.under_cli = False
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._owned = False
        self._stale = False
        self._generation = 0

    def resolved_address(self) -> str | None:
        """The address to attach to, or ``None`` for the embedded default."""
        return self.address or os.environ.get("RAY_ADDRESS") or None

    @property
    def attached(self) -> bool:
        return self._pid == os.getpid() and not self._stale

    @property
    def owned(self) -> bool:
        """Whether this process called ``ray.init`` itself (and so shuts Ray down at worker shutdown)."""
        return self._owned and self._pid == os.getpid()

    def attach(self) -> int:
        """Attach this process to Ray unless it already is; return the connection's generation number.

        Raises:
          RayUnavailableError: when Ray cannot be reached.
        """
        if self.attached:
            return self._generation
        with self._lock:
            if self.attached:
                return self._generation
            import ray

            if self._pid == os.getpid() and self._stale and self._owned:
                logger.warning("Re-attaching to Ray after a lost connection.")
                with contextlib.suppress(Exception):
                    ray.shutdown()
            if ray.is_initialized() and not (self._stale and self._owned and self._pid == os.getpid()):
                # Someone else in this process (an application, a test session) owns Ray: use it, never stop it.
                self._owned = False
            else:
                self._init(ray)
                self._owned = True
            self._pid = os.getpid()
            self._stale = False
            self._generation += 1
            return self._generation

    def _init(self, ray: Any) -> None:
        address = self.resolved_address()
        if address is None:
            address = wait_for_shared_head(os.getppid()) if self._in_cli_worker() else "local"
        prepare_auth(address)
        _keep_dramatiq_signal_handling()
        kwargs = {"logging_level": logging.WARNING, **self.init_kwargs, "address": address}
        logger.info("Attaching to Ray at %s.", address)
        try:
            # ray.init waits minutes for a head that does not answer: refuse at once, the message is retried.
            check_reachable(address)
            with _keep_signal_handlers():
                ray.init(**kwargs)
        except (ConnectionError, RuntimeError, TimeoutError, OSError) as error:
            with contextlib.suppress(Exception):
                ray.shutdown()
            logger.error("Could not attach to Ray at %s: %s", address, error)
            raise RayUnavailableError(
                f"Could not attach to Ray at {address}: {error}. Check that the Ray head is running and reachable "
                "(ray status), or set RAY_ADDRESS / the middleware's address."
            ) from error

    def _in_cli_worker(self) -> bool:
        return self.under_cli and multiprocessing.parent_process() is not None

    def names_local_node(self, text: str) -> bool:
        """Whether ``text`` (a Ray error) names the node this process is attached through. When that node died
        (a head killed and restarted), this process's connection is gone too, even though the error is not a
        connection error: every later task would wait forever on it."""
        try:
            import ray

            return str(ray.get_runtime_context().get_node_id()) in text
        except Exception:
            return True

    def lost(self, generation: int) -> None:
        """Mark the connection of ``generation`` as lost: the next :meth:`attach` connects again."""
        with self._lock:
            if generation == self._generation and self._pid == os.getpid():
                self._stale = True

    def detach(self) -> None:
        """Shut Ray down in this process, only if this process started it."""
        with self._lock:
            if self._owned and self._pid == os.getpid():
                import ray

                logger.info("Detaching from Ray.")
                with contextlib.suppress(Exception):
                    ray.shutdown()
            self._pid = None
            self._owned = False
            self._stale = False


class _DropSigtermNotice(logging.Filter):
    """``ray.init`` outside the main thread warns that it did not install its SIGTERM handler: in a Dramatiq
    worker that is what we want, so the warning would only mislead."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "SIGTERM handler is not set" not in record.getMessage()


_SIGTERM_NOTICE_FILTER = _DropSigtermNotice()


@contextlib.contextmanager
def _keep_signal_handlers() -> Iterator[None]:
    """``ray.init`` installs a SIGTERM handler that exits at once; Dramatiq's graceful shutdown needs its own."""
    if threading.current_thread() is not threading.main_thread():
        ray_worker_logger = logging.getLogger("ray._private.worker")
        ray_worker_logger.addFilter(_SIGTERM_NOTICE_FILTER)
        try:
            yield
        finally:
            ray_worker_logger.removeFilter(_SIGTERM_NOTICE_FILTER)
        return
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            if handler is not None:
                signal.signal(sig, handler)


def _keep_dramatiq_signal_handling() -> None:
    """Ray's drivers install a C-level failure signal handler that also catches SIGTERM and, when ``ray.init``
    runs outside the main thread, cannot be replaced from Python; it would end the worker process in the middle
    of Dramatiq's graceful shutdown. A Dramatiq worker keeps its own SIGTERM handling unless the user asked for
    Ray's (``RAY_DISABLE_FAILURE_SIGNAL_HANDLER=0``)."""
    if os.environ.setdefault("RAY_DISABLE_FAILURE_SIGNAL_HANDLER", "1") != "1":
        return
    with contextlib.suppress(Exception):
        from ray._private import ray_constants

        ray_constants.RAY_DISABLE_FAILURE_SIGNAL_HANDLER = True


#: How long the reachability check waits for the head's port to accept a connection, in seconds.
REACHABLE_TIMEOUT = 5.0


def check_reachable(address: str, timeout: float = REACHABLE_TIMEOUT) -> None:
    """Raise ``ConnectionError`` when ``address`` is an explicit ``host:port`` (or ``ray://host:port``) where
    nothing accepts a TCP connection; other addresses (``"local"``, ``"auto"``) are left to ``ray.init``."""
    target = address.removeprefix("ray://")
    host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as error:
        raise ConnectionError(f"nothing answers at {target} ({error})") from None


def prepare_auth(address: str) -> None:
    """Ray 2.5x+ heads started with ``ray start`` use token authentication; a driver (or Ray Client) attaching
    to one must say so. Set ``RAY_AUTH_MODE=token`` when a token is available and nothing was chosen."""
    if address == "local" or "RAY_AUTH_MODE" in os.environ:
        return
    token_file = Path(os.environ.get("RAY_AUTH_TOKEN_PATH", Path.home() / ".ray" / "auth_token"))
    if os.environ.get("RAY_AUTH_TOKEN") or token_file.exists():
        os.environ["RAY_AUTH_MODE"] = "token"
        if "ray._raylet" in sys.modules:
            # Ray read its configuration when it was imported: make it read the environment again.
            with contextlib.suppress(Exception):
                raylet: Any = sys.modules["ray._raylet"]
                raylet.Config.initialize("")
                raylet.AuthenticationTokenLoader.instance().reset_cache()


# --- a local Ray head in a subprocess ------------------------------------------------------------------------


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
