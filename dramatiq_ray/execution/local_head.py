"""A local Ray head in a subprocess, stopped with everything it started.

Stopping a head needs nothing beyond the standard library: ``ray start`` runs in a session of its own, and on Linux
its processes are found in ``/proc``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from ..errors import RayUnavailableError
from .processes import KILL, Process, exited, free_port, processes, send_signal, this_process_and_its_ancestors

logger = logging.getLogger(__name__)


#: What Ray's own startup says when one of its components did not come up in time (transient under load).
_STARTUP_TIMEOUT = "timed out during startup"


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
      num_gpus: logical GPUs to advertise (``None``: those Ray detects). Ray hands each task or actor that asks
        for GPUs its own ids in ``CUDA_VISIBLE_DEVICES``, with or without real GPUs.
      resources: custom resources to advertise.
      port: GCS port (``None``: a free one, kept across :meth:`stop` / :meth:`start`).
      dashboard: also run the dashboard (which serves the Ray Jobs API) on a free port, :attr:`dashboard_url`.
    """

    def __init__(
        self,
        *,
        temp_dir: str | Path,
        num_cpus: int | None = None,
        num_gpus: int | None = None,
        resources: dict[str, float] | None = None,
        port: int | None = None,
        dashboard: bool = False,
    ) -> None:
        self.temp_dir = Path(temp_dir)
        self.dashboard = dashboard
        self.dashboard_port = free_port()
        self.num_cpus = num_cpus
        self.num_gpus = num_gpus
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
        if self.num_gpus is not None:
            command.append(f"--num-gpus={self.num_gpus}")
        if self.resources:
            command.append(f"--resources={json.dumps(self.resources)}")
        return command

    def start(self, timeout: float = 120) -> str:
        """Start the head and wait until it is up; return its address.

        A head whose own components time out while it starts (Ray's "timed out during startup", seen on a busy
        machine) is stopped and started once more before giving up.

        Raises:
          RayUnavailableError: when the head does not come up within ``timeout`` seconds; its message ends with
            the head's output. Whatever the head had started is stopped first.
        """
        try:
            return self._start(timeout)
        except RayUnavailableError as error:
            if _STARTUP_TIMEOUT not in str(error):
                raise
            logger.warning("The local Ray head timed out while starting; starting it once more.")
            return self._start(timeout)

    def _start(self, timeout: float) -> str:
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
            if exited(self.proc) or time.monotonic() > deadline:
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
        return self.proc is not None and not exited(self.proc)

    def pids(self) -> set[int]:
        """Every live process of this head: ``ray start`` and the processes of its session, whatever names its
        temp dir, and their descendants (Ray's worker processes). Without ``/proc``: ``ray start`` only."""
        table = processes()
        if table is None:
            return {self.proc.pid} if self.running() and self.proc is not None else set()
        return set(self._members(table))

    def _session(self, table: dict[int, Process]) -> int | None:
        """The session id of the last ``ray start``, while it can only be this head's: until ``ray start`` is
        reaped its pid stays taken; after that, a process with that pid means the number was free, so nothing
        was left in the session."""
        if self._leader is None or not hasattr(os, "setsid"):
            return None
        if self._leader_reaped and self._leader in table:
            return None
        return self._leader

    def _members(self, table: dict[int, Process]) -> dict[int, Process]:
        # The temp dir as a whole path or as a parent: a head in "drh-1" must not claim what names "drh-12".
        names_temp_dir = re.compile(re.escape(str(self.temp_dir)) + r"(?![\w.-])").search
        session = self._session(table)
        children: dict[int, list[Process]] = {}
        for process in table.values():
            children.setdefault(process.ppid, []).append(process)
        stack = [
            process
            for process in table.values()
            if process.session == session or any(names_temp_dir(part) for part in process.cmdline)
        ]
        found: dict[int, Process] = {}
        while stack:
            process = stack.pop()
            if process.pid not in found:
                found[process.pid] = process
                stack.extend(children.get(process.pid, ()))
        for pid in this_process_and_its_ancestors(table):
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
        table = processes()
        before = self._members(table) if table is not None else {}
        proc = self.proc
        if proc is not None and not exited(proc):
            send_signal(proc.pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while not exited(proc) and time.monotonic() < deadline:
                time.sleep(0.1)
            if not exited(proc):
                logger.warning("The Ray head did not stop within %.0f s of SIGTERM; killing it.", timeout)
        if proc is not None and not self._leader_reaped:
            send_signal(proc.pid, KILL, group=True)  # its pid is still taken, so the group is still this head's
        for process in self._leftovers(before):
            send_signal(process.pid, KILL)
        if proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=timeout)
            self._leader_reaped = proc.returncode is not None
        deadline = time.monotonic() + timeout
        while (left := list(self._leftovers(before))) and time.monotonic() < deadline:
            for process in left:
                send_signal(process.pid, KILL)
            time.sleep(0.1)
        if left:
            logger.warning("Ray head processes still alive after SIGKILL: %s", sorted(p.pid for p in left))
        self.proc = None

    def _leftovers(self, before: dict[int, Process]) -> list[Process]:
        """The processes of this head alive now, and those seen before that are still the same processes."""
        table = processes()
        if table is None:
            return []
        found = self._members(table)
        for pid, process in before.items():
            if pid not in found and (now := table.get(pid)) is not None and now.started == process.started:
                found[pid] = now
        return list(found.values())


# --- the shared head of one dramatiq CLI ---------------------------------------------------------------------
