"""Processes without psutil: free loopback ports, and the live processes of this machine as ``/proc`` shows them
(Linux; elsewhere only process groups are known)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

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


PROC = Path("/proc")
KILL = getattr(signal, "SIGKILL", signal.SIGTERM)


@dataclass(frozen=True)
class Process:
    """One live process as ``/proc`` shows it."""

    pid: int
    ppid: int
    session: int
    #: When it started, in clock ticks since boot: with the pid, it tells a process from a later one reusing its pid.
    started: int
    cmdline: tuple[str, ...]


def read_process(pid: int) -> Process | None:
    """The process ``pid``, or ``None`` when it is gone, a zombie, or cannot be read."""
    try:
        stat = (PROC / str(pid) / "stat").read_bytes()
        cmdline = (PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return None
    # "pid (comm) state ppid pgrp session ...": comm may hold spaces and parentheses, so split after its last ")".
    fields = stat[stat.rfind(b")") + 2 :].split()
    if len(fields) < 20 or fields[0] in (b"Z", b"X"):
        return None
    return Process(
        pid=pid,
        ppid=int(fields[1]),
        session=int(fields[3]),
        started=int(fields[19]),
        cmdline=tuple(part.decode(errors="replace") for part in cmdline.split(b"\0") if part),
    )


def processes() -> dict[int, Process] | None:
    """Every live process on this machine, or ``None`` where there is no ``/proc`` to read them from (not Linux)."""
    if not sys.platform.startswith("linux") or not PROC.is_dir():
        return None
    table = {}
    for entry in os.scandir(PROC):
        if entry.name.isdigit() and (process := read_process(int(entry.name))) is not None:
            table[process.pid] = process
    return table


def this_process_and_its_ancestors(table: dict[int, Process]) -> set[int]:
    found, pid = set(), os.getpid()
    while pid > 0 and pid not in found:
        found.add(pid)
        pid = table[pid].ppid if pid in table else 0
    return found


def exited(proc: subprocess.Popen[bytes]) -> bool:
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


def send_signal(pid: int, signum: int, *, group: bool = False) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if group and hasattr(os, "killpg"):
            os.killpg(pid, signum)
        else:
            os.kill(pid, signum)
