"""A local Ray head in a subprocess, and the one head a ``dramatiq`` CLI shares among its worker processes.

Stopping a head needs nothing beyond the standard library: ``ray start`` runs in a session of its own, and on Linux
its processes are found in ``/proc``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
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


# --- the processes of a head, without psutil -----------------------------------------------------------------

_PROC = Path("/proc")
_KILL = getattr(signal, "SIGKILL", signal.SIGTERM)


@dataclass(frozen=True)
class _Process:
    """One live process as ``/proc`` shows it."""

    pid: int
    ppid: int
    session: int
    #: When it started, in clock ticks since boot: with the pid, it tells a process from a later one reusing its pid.
    started: int
    cmdline: tuple[str, ...]


def _read_process(pid: int) -> _Process | None:
    """The process ``pid``, or ``None`` when it is gone, a zombie, or cannot be read."""
    try:
        stat = (_PROC / str(pid) / "stat").read_bytes()
        cmdline = (_PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return None
    # "pid (comm) state ppid pgrp session ...": comm may hold spaces and parentheses, so split after its last ")".
    fields = stat[stat.rfind(b")") + 2 :].split()
    if len(fields) < 20 or fields[0] in (b"Z", b"X"):
        return None
    return _Process(
        pid=pid,
        ppid=int(fields[1]),
        session=int(fields[3]),
        started=int(fields[19]),
        cmdline=tuple(part.decode(errors="replace") for part in cmdline.split(b"\0") if part),
    )


def _processes() -> dict[int, _Process] | None:
    """Every live process on this machine, or ``None`` where there is no ``/proc`` to read them from (not Linux)."""
    if not sys.platform.startswith("linux") or not _PROC.is_dir():
        return None
    table = {}
    for entry in os.scandir(_PROC):
        if entry.name.isdigit() and (process := _read_process(int(entry.name))) is not None:
            table[process.pid] = process
    return table


def _this_process_and_its_ancestors(table: dict[int, _Process]) -> set[int]:
    found, pid = set(), os.getpid()
    while pid > 0 and pid not in found:
        found.add(pid)
        pid = table[pid].ppid if pid in table else 0
    return found


def _exited(proc: subprocess.Popen[bytes]) -> bool:
    """Whether ``proc`` has exited, without reaping it where possible: until it is reaped, its pid, and so its
    process group and session ids, cannot be taken by another process."""
    if proc.returncode is not None:
        return True
    if hasattr(os, "waitid"):
        try:
            return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
        except ChildProcessError:
            pass
    return proc.poll() is not None


def _signal(pid: int, signum: int, *, group: bool = False) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if group and hasattr(os, "killpg"):
            os.killpg(pid, signum)
        else:
            os.kill(pid, signum)


class LocalHead:
    """``ray start --head --block`` on free loopback ports with its own temp dir, stopped by pid.

    Unlike ``ray stop``, stopping it never touches another Ray on the machine, and it needs no package beyond
    Ray. ``ray start`` runs in a session (and process group) of its own; on Linux every process of the head is
    found through ``/proc``: the processes of that session, whatever names the head's temp dir on its command line,
    and their descendants. Elsewhere only the process group is known, which Ray's worker processes leave (they
    exit with the raylet when it stops cleanly).

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
        #: The pid of the last ``ray start``: the id of its session and process group, also after it exited.
        self._leader: int | None = None
        self._leader_reaped = True

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
          RayUnavailableError: when the head does not come up within ``timeout`` seconds; its message ends with
            the head's output. Whatever the head had started is stopped first.
        """
        self.temp_dir.mkdir(parents=True, exist_ok=True)
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            # A session of its own: a Ctrl-C meant for the caller does not reach the head, and stop() finds it.
            self.proc = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )
        self._leader, self._leader_reaped = self.proc.pid, False
        deadline = time.monotonic() + timeout
        while "Ray runtime started" not in self.log_path.read_bytes()[offset:].decode(errors="replace"):
            if _exited(self.proc) or time.monotonic() > deadline:
                output = self.log_path.read_bytes()[offset:].decode(errors="replace")[-4000:]
                try:
                    self.stop(timeout=10)
                except Exception:
                    logger.warning("Stopping the Ray head that did not start failed.", exc_info=True)
                raise RayUnavailableError(f"The local Ray head did not start:\n{output}")
            time.sleep(0.2)
        return self.address

    def running(self) -> bool:
        """Whether ``ray start`` is still running."""
        return self.proc is not None and not _exited(self.proc)

    def pids(self) -> set[int]:
        """Every live process of this head: ``ray start`` and the processes of its session, whatever names its
        temp dir, and their descendants (Ray's worker processes). Without ``/proc``: ``ray start`` only."""
        table = _processes()
        if table is None:
            return {self.proc.pid} if self.running() and self.proc is not None else set()
        return set(self._members(table))

    def _session(self, table: dict[int, _Process]) -> int | None:
        """The session id of the last ``ray start``, while it can only be this head's: until ``ray start`` is
        reaped its pid stays taken; after that, a process with that pid means the number was free, so nothing
        was left in the session."""
        if self._leader is None or not hasattr(os, "setsid"):
            return None
        if self._leader_reaped and self._leader in table:
            return None
        return self._leader

    def _members(self, table: dict[int, _Process]) -> dict[int, _Process]:
        # The temp dir as a whole path or as a parent: a head in "drh-1" must not claim what names "drh-12".
        names_temp_dir = re.compile(re.escape(str(self.temp_dir)) + r"(?![\w.-])").search
        session = self._session(table)
        children: dict[int, list[_Process]] = {}
        for process in table.values():
            children.setdefault(process.ppid, []).append(process)
        stack = [
            process
            for process in table.values()
            if process.session == session or any(names_temp_dir(part) for part in process.cmdline)
        ]
        found: dict[int, _Process] = {}
        while stack:
            process = stack.pop()
            if process.pid not in found:
                found[process.pid] = process
                stack.extend(children.get(process.pid, ()))
        for pid in _this_process_and_its_ancestors(table):
            found.pop(pid, None)
        return found

    def stop(self, timeout: float = 30) -> None:
        """Stop the head and every process of it.

        SIGTERM to ``ray start --block``, which stops what it started, and up to ``timeout`` seconds for it to
        exit; then SIGKILL to its process group, to every other process of its session (Ray's worker processes
        put themselves in process groups of their own), to whatever names its temp dir, and to the descendants of
        all those as they were before the SIGTERM; then up to ``timeout`` seconds for them all to be gone. Without
        ``/proc`` (not Linux), the SIGKILL reaches the process group only.

        The SIGTERM goes to ``ray start`` alone: sent to its whole process group, it leaves ``ray start`` and
        ``gcs_server`` waiting for each other, and Ray's worker processes running. The temp dir is left to its
        owner (:func:`run_shared_head` removes the shared head's).
        """
        table = _processes()
        before = self._members(table) if table is not None else {}
        proc = self.proc
        if proc is not None and not _exited(proc):
            _signal(proc.pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while not _exited(proc) and time.monotonic() < deadline:
                time.sleep(0.1)
            if not _exited(proc):
                logger.warning("The Ray head did not stop within %.0f s of SIGTERM; killing it.", timeout)
        if proc is not None and not self._leader_reaped:
            _signal(proc.pid, _KILL, group=True)  # its pid is still taken, so the group is still this head's
        for process in self._leftovers(before):
            _signal(process.pid, _KILL)
        if proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=timeout)
            self._leader_reaped = proc.returncode is not None
        deadline = time.monotonic() + timeout
        while (left := list(self._leftovers(before))) and time.monotonic() < deadline:
            for process in left:
                _signal(process.pid, _KILL)
            time.sleep(0.1)
        if left:
            logger.warning("Ray head processes still alive after SIGKILL: %s", sorted(p.pid for p in left))
        self.proc = None

    def _leftovers(self, before: dict[int, _Process]) -> list[_Process]:
        """The processes of this head alive now, and those seen before that are still the same processes."""
        table = _processes()
        if table is None:
            return []
        found = self._members(table)
        for pid, process in before.items():
            if pid not in found and (now := table.get(pid)) is not None and now.started == process.started:
                found[pid] = now
        return list(found.values())


# --- the shared head of one dramatiq CLI ---------------------------------------------------------------------


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
