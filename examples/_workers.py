"""Start the real ``dramatiq`` command as a subprocess for an example, and stop it the way an init system would.

Each example's ``__main__`` uses this so that one command shows the whole flow; in production you run
``dramatiq <module>`` yourself (under systemd, Kubernetes, ...) and send messages from your application.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

#: Generous: the first start of Ray on a small machine can take a while.
READY_TIMEOUT = 300


def say(text: str) -> None:
    print(text, flush=True)


@contextlib.contextmanager
def dramatiq_workers(module: str, *, processes: int, threads: int, env: dict[str, str] | None = None) -> Iterator[None]:
    """Run ``dramatiq <module> --processes N --threads M`` until the block ends, then stop it with SIGTERM.

    Raises:
      RuntimeError: the workers exited early or did not become ready; the message includes their log.
    """
    command = [sys.executable, "-m", "dramatiq", module, "--processes", str(processes), "--threads", str(threads)]
    full_env = {**os.environ, **(env or {})}
    # The worker processes (and the Ray workers they start) import the example by module path.
    full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), full_env.get("PYTHONPATH")]))
    full_env["PYTHONUNBUFFERED"] = "1"
    with tempfile.NamedTemporaryFile(prefix="dramatiq-ray-example-", suffix=".log", delete=False) as log:
        log_path = Path(log.name)
    say(f"Starting workers: {' '.join(['dramatiq', *command[3:]])}")
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            command, cwd=REPO_ROOT, env=full_env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        _wait_ready(proc, log_path, processes)
        say(f"  {processes} worker process(es) with {threads} threads each are ready.")
        yield
    finally:
        say("Stopping the workers (SIGTERM, as systemd or Kubernetes would)...")
        code = _stop(proc)
        say(f"  the workers exited with code {code}.")
        if code != 0:
            say(f"  their log ({log_path}) ends with:\n{_tail(log_path)}")
        else:
            log_path.unlink(missing_ok=True)


def _wait_ready(proc: subprocess.Popen[bytes], log_path: Path, processes: int) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while log_path.read_text(errors="replace").count("is ready for action") < processes:
        if proc.poll() is not None:
            raise RuntimeError(f"The workers exited early with code {proc.returncode}:\n{_tail(log_path)}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"The workers were not ready after {READY_TIMEOUT} s:\n{_tail(log_path)}")
        time.sleep(0.2)


def _stop(proc: subprocess.Popen[bytes]) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    return proc.returncode


def _tail(log_path: Path, lines: int = 40) -> str:
    return "\n".join(log_path.read_text(errors="replace").splitlines()[-lines:])


def redis_answers(url: str) -> bool:
    """Whether Redis answers at ``url``; if not, say how to get one."""
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=3).ping()
    except redis.RedisError as error:
        say(f"Cannot reach Redis at {url} ({error}). Start one (docker run -p 6379:6379 redis) or set REDIS_URL.")
        return False
    return True
