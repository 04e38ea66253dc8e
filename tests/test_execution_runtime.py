"""Attaching to Ray: where the address comes from, the shared head under the CLI, and never stopping a Ray this
process did not start."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

from dramatiq_ray import ConfigurationError, RayExecutionMiddleware, RayUnavailableError
from dramatiq_ray.execution.connection import RayRuntime
from dramatiq_ray.execution.local_head import LocalHead
from dramatiq_ray.execution.shared_head import run_shared_head, shared_head_dir, wait_for_shared_head
from tests._services import wait_until


def test_explicit_address_wins_over_ray_address(monkeypatch) -> None:
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.9:6379")

    assert RayRuntime(address="10.0.0.5:6379").resolved_address() == "10.0.0.5:6379"


def test_ray_address_is_used_when_no_address_is_given(monkeypatch) -> None:
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.9:6379")

    assert RayRuntime().resolved_address() == "10.0.0.9:6379"


def test_no_address_anywhere_means_the_embedded_default(monkeypatch) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)

    assert RayRuntime().resolved_address() is None


def test_embedded_default_contributes_the_shared_head_fork(monkeypatch) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)

    assert RayExecutionMiddleware().forks == [run_shared_head]


def test_embedded_default_of_the_ray_job_runner_runs_the_shared_head_with_its_dashboard(monkeypatch) -> None:
    from dramatiq_ray.execution.shared_head import run_shared_head_with_dashboard

    monkeypatch.delenv("RAY_ADDRESS", raising=False)

    assert RayExecutionMiddleware(runner="ray_job").forks == [run_shared_head_with_dashboard]
    assert RayExecutionMiddleware(runner="ray_job", job_address="http://head:8265").forks == []


def test_explicit_address_contributes_no_fork(monkeypatch) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)

    assert RayExecutionMiddleware(address="ray://head:10001").forks == []


def test_missing_shared_head_fails_retryably_with_a_hint() -> None:
    # A head still starting on a busy machine is not a configuration error: the message is retried
    with pytest.raises(RayUnavailableError, match="RAY_ADDRESS") as caught:
        wait_for_shared_head(cli_pid=-1, timeout=0.3)
    assert not isinstance(caught.value, ConfigurationError)


@pytest.fixture
def private_tempdir(monkeypatch, tmp_path: Path) -> Path:
    """Point the shared head's directory at a temp dir of this test."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


def test_shared_head_address_in_a_directory_others_can_write_is_refused(private_tempdir: Path) -> None:
    # Given another local user who created the predictable directory first and published an address of theirs
    directory = shared_head_dir(4242)
    directory.mkdir()
    directory.chmod(0o777)
    (directory / "address").write_text("10.6.6.6:6379")

    # Then a worker does not attach there
    with pytest.raises(ConfigurationError, match="accessible to other users"):
        wait_for_shared_head(cli_pid=4242, timeout=5)


def test_shared_head_directory_that_is_a_symbolic_link_is_refused(private_tempdir: Path) -> None:
    elsewhere = private_tempdir / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    (elsewhere / "address").write_text("10.6.6.6:6379")
    shared_head_dir(4242).symlink_to(elsewhere)

    with pytest.raises(ConfigurationError, match="symbolic link"):
        wait_for_shared_head(cli_pid=4242, timeout=5)


def test_shared_head_address_is_published_in_a_private_directory(private_tempdir: Path) -> None:
    from dramatiq_ray.execution.shared_head import _make_private_dir

    # Given a stale directory of ours that others could write (an earlier CLI with the same pid)
    directory = shared_head_dir(4242)
    directory.mkdir()
    directory.chmod(0o777)
    (directory / "address").write_text("stale")

    _make_private_dir(directory)

    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert list(directory.iterdir()) == []


def test_runtime_reuses_a_ray_it_did_not_start_and_never_shuts_it_down(ray_local) -> None:
    # Given a Ray this process already runs (the test session's)
    runtime = RayRuntime(address="10.255.255.1:6379")

    # When the runtime attaches and detaches
    runtime.attach()
    owned = runtime.owned
    runtime.detach()

    # Then it used that Ray, without connecting elsewhere, and left it running
    assert not owned
    assert ray_local.is_initialized()


def test_attaching_twice_in_one_process_attaches_once(ray_local) -> None:
    runtime = RayRuntime()

    assert runtime.attach() == runtime.attach()


def test_lost_connection_leads_to_a_new_attachment(ray_local) -> None:
    runtime = RayRuntime()
    generation = runtime.attach()

    runtime.lost(generation)

    assert runtime.attach() == generation + 1
    assert ray_local.is_initialized()


def test_thread_waiting_for_another_threads_attach_can_be_interrupted() -> None:
    from dramatiq.middleware.threading import raise_thread_exception

    class Interrupted(BaseException):
        pass

    # Given a thread inside attach, holding the connection's lock (as while it waits minutes for the shared head)
    runtime = RayRuntime(address="10.255.255.1:6379")
    runtime._lock.acquire()
    outcome: list[BaseException] = []
    started = threading.Event()

    def attach() -> None:
        started.set()
        try:
            runtime.attach()
        except BaseException as error:
            outcome.append(error)

    waiter = threading.Thread(target=attach, daemon=True)
    waiter.start()
    started.wait(10)
    try:
        # When a time limit (Dramatiq's async exception) is raised in another thread waiting for that lock
        wait_until(lambda: waiter.ident is not None, timeout=10, what="the waiter")
        raise_thread_exception(waiter.ident, Interrupted)
        waiter.join(timeout=30)

        # Then it lands while the lock is still held
        assert not waiter.is_alive()
        assert [type(error) for error in outcome] == [Interrupted]
    finally:
        runtime._lock.release()
        waiter.join(timeout=30)


#: A worker with two threads on a Ray it started: one message runs a long body; another thread of the process
#: loses the connection (marked as a thread seeing a connection error marks it); the next message re-attaches.
#: Prints what failed the long message and the short message's result.
CONCURRENT_RECONNECT = """
import os, sys, time
import dramatiq
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import Middleware
from dramatiq_ray import RayExecutionMiddleware

class Record(Middleware):
    outcomes = {}
    def after_process_message(self, broker, message, *, result=None, exception=None):
        self.outcomes[message.actor_name] = type(exception).__name__ if exception else repr(result)

broker = StubBroker()
broker.emit_after("process_boot")
execution = RayExecutionMiddleware(wait_slice=0.2, ray_init_kwargs={"num_cpus": 2, "include_dashboard": False})
broker.add_middleware(execution)
broker.add_middleware(Record())

@dramatiq.actor(broker=broker, max_retries=0)
def slow(marker):
    open(marker, "w").close()
    time.sleep(600)

@dramatiq.actor(broker=broker, max_retries=0)
def quick():
    return 42

worker = dramatiq.Worker(broker, worker_threads=2, worker_timeout=100)
worker.start()
slow.send(sys.argv[1])
deadline = time.monotonic() + 120
while not os.path.exists(sys.argv[1]) and time.monotonic() < deadline:
    time.sleep(0.05)
execution.runtime.lost(execution.runtime.attach())  # attached: the current generation
quick.send()
deadline = time.monotonic() + 120
while len(Record.outcomes) < 2 and time.monotonic() < deadline:
    time.sleep(0.05)
print(Record.outcomes.get("slow"), Record.outcomes.get("quick"), flush=True)
worker.stop()
"""


def test_lost_connection_fails_other_threads_in_flight_messages_retryably_before_reattaching(
    python_subprocess_env, tmp_path: Path
) -> None:
    env = {key: value for key, value in python_subprocess_env.items() if key != "RAY_ADDRESS"}
    result = subprocess.run(
        [sys.executable, "-c", CONCURRENT_RECONNECT, str(tmp_path / "started")],
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )

    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["RayUnavailableError", "42"], result.stderr[-3000:]


IN_PROCESS_WORKER = """
import dramatiq, ray
from dramatiq.brokers.stub import StubBroker
from dramatiq_ray import RayExecutionMiddleware

broker = StubBroker()
broker.add_middleware(RayExecutionMiddleware(ray_init_kwargs={"num_cpus": 1, "include_dashboard": False}))

@dramatiq.actor(broker=broker)
def noop():
    pass

worker = dramatiq.Worker(broker, worker_threads=1)
worker.start()
noop.send()
broker.join(noop.queue_name, fail_fast=True)
started_here = ray.is_initialized()
worker.stop()
print(started_here, ray.is_initialized())
"""


def test_in_process_worker_starts_a_private_ray_and_shuts_it_down_at_worker_stop(python_subprocess_env) -> None:
    env = {key: value for key, value in python_subprocess_env.items() if key != "RAY_ADDRESS"}
    result = subprocess.run(
        [sys.executable, "-c", IN_PROCESS_WORKER], env=env, capture_output=True, text=True, timeout=240
    )

    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["True", "False"]


def test_free_port_never_hands_out_the_same_port_twice() -> None:
    # A Ray head is started with half a dozen ports picked one after another; a repeat makes the head refuse to
    # start ("used by other components"), which was seen when two probes in a row returned the same port.
    from dramatiq_ray.execution.local_head import free_port

    ports = [free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)


def test_ray_compat_workarounds_apply_only_on_the_ray_versions_they_were_checked_on() -> None:
    from dramatiq_ray.execution.ray_compat import CHECKED_ON, checked, ray_version

    low, high = CHECKED_ON
    assert checked(low) and checked(high)
    assert not checked((low[0], low[1] - 1)) and not checked((high[0], high[1] + 1))
    assert checked(ray_version()), "the installed Ray is outside the versions the workarounds were checked on"


def test_ray_compat_auth_reload_runs_on_a_checked_ray_exactly_when_it_has_token_authentication(ray_local) -> None:
    import ray._raylet

    from dramatiq_ray.execution.ray_compat import reload_auth_config

    # Ray is imported (the session's local Ray), so its configuration can be read again where there is one to read:
    # Ray 2.60 has token authentication, Ray 2.40 has none.
    assert reload_auth_config() is hasattr(ray._raylet, "AuthenticationTokenLoader")


def test_ray_compat_auth_reload_on_an_unchecked_ray_only_warns(ray_local, caplog) -> None:
    from dramatiq_ray.execution.ray_compat import reload_auth_config

    assert reload_auth_config(version=(9, 0)) is False
    assert "outside the versions" in caplog.text


# --- stopping a local head: every process and the temp dir, with nothing beyond the standard library -----------

#: A Ray driver attached to a head, as a dramatiq worker process is while its head stops: it runs tasks (so the
#: head has Ray worker processes, which put themselves in process groups of their own and do not name the temp
#: dir), prints their pids, and stays attached until its stdin closes.
DRIVER = """
import os, sys
from dramatiq_ray.execution.connection import RayRuntime
RayRuntime(address=sys.argv[1]).attach()
import ray

@ray.remote
def pid():
    return os.getpid()

print(*sorted(set(ray.get([pid.remote() for _ in range(4)]))), flush=True)
sys.stdin.read()
"""

#: Start and stop a head in a process where psutil cannot be imported, as in an install without the test extra
#: (Ray ships its own psutil, on sys.path only once Ray is imported, which the process running the head never
#: does). Prints the pids of the head's processes and of its Ray workers, seen while it ran.
HEAD_WITHOUT_PSUTIL = """
import sys
sys.modules["psutil"] = None
import json, subprocess
from dramatiq_ray.execution.local_head import LocalHead

head = LocalHead(temp_dir=sys.argv[1], num_cpus=2)
head.start()
driver = subprocess.Popen(
    [sys.executable, "-c", sys.argv[2], head.address], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
)
workers = [int(pid) for pid in driver.stdout.readline().split()]
running = sorted(head.pids())
head.stop()
driver.stdin.close()
driver.wait(timeout=120)
print(json.dumps({"workers": workers, "running": running, "after": sorted(head.pids())}))
print("psutil importable:", sys.modules["psutil"] is not None)
"""

#: Run the shared head as the dramatiq CLI runs a fork function: SIGTERM raises SystemExit (again on a second
#: SIGTERM, which the CLI's main process sends when it exits), SIGINT is ignored; psutil cannot be imported.
SHARED_HEAD_AS_A_FORK = """
import signal, sys
sys.modules["psutil"] = None
from dramatiq_ray.execution.shared_head import run_shared_head

signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
sys.exit(run_shared_head())
"""


def processes_naming(marker: str) -> list[int]:
    """The live processes whose command line names ``marker``, read from /proc."""
    import psutil

    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        if proc.info["status"] != psutil.STATUS_ZOMBIE and any(marker in part for part in proc.info["cmdline"] or ()):
            found.append(proc.pid)
    return found


def alive(pids: Iterable[int]) -> list[int]:
    import psutil

    found = []
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                found.append(pid)
    return found


@pytest.fixture
def head_dir() -> Iterator[Path]:
    """A short temp dir for a head (Ray's unix sockets go under it), removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="drh-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def attach_driver(address: str, env: dict[str, str]) -> tuple[subprocess.Popen[str], list[int]]:
    driver = subprocess.Popen(
        [sys.executable, "-c", DRIVER, address], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
    )
    assert driver.stdout is not None
    workers = [int(pid) for pid in driver.stdout.readline().split()]
    assert workers, "the driver ran no Ray task"
    return driver, workers


def test_local_head_stop_leaves_no_process_of_the_head(head_dir, python_subprocess_env) -> None:
    # Given a head with Ray worker processes and a driver still attached
    head = LocalHead(temp_dir=head_dir, num_cpus=2)
    head.start()
    driver, workers = attach_driver(head.address, python_subprocess_env)
    try:
        running = head.pids()
        assert head.proc is not None and head.proc.pid in running
        assert set(workers) <= running, "the head's Ray workers are not counted among its processes"

        # When it stops
        head.stop()

        # Then none of its processes is left, Ray workers included
        assert not alive(running)
        assert not processes_naming(str(head_dir))
        assert head.pids() == set()
    finally:
        assert driver.stdin is not None
        driver.stdin.close()
        driver.wait(timeout=120)
        head.stop()


def test_local_head_stop_kills_a_head_that_ignores_sigterm(head_dir, python_subprocess_env) -> None:
    # Given a head whose `ray start` does not answer SIGTERM (stopped), with Ray workers and a driver attached
    head = LocalHead(temp_dir=head_dir, num_cpus=2)
    head.start()
    driver, workers = attach_driver(head.address, python_subprocess_env)
    try:
        running = head.pids()
        assert head.proc is not None and set(workers) <= running
        os.kill(head.proc.pid, signal.SIGSTOP)

        # When it stops, waiting a short while for SIGTERM
        head.stop(timeout=3)

        # Then everything of it was killed, the Ray workers in their own process groups too
        assert not alive(running)
        assert not processes_naming(str(head_dir))
    finally:
        assert driver.stdin is not None
        driver.stdin.close()
        driver.wait(timeout=120)
        head.stop()


def test_local_head_starts_and_stops_without_psutil(head_dir, python_subprocess_env) -> None:
    result = subprocess.run(
        [sys.executable, "-c", HEAD_WITHOUT_PSUTIL, str(head_dir), DRIVER],
        env=python_subprocess_env,
        capture_output=True,
        text=True,
        timeout=240,
    )

    assert result.returncode == 0, result.stderr[-3000:]
    assert "psutil importable: False" in result.stdout
    seen = json.loads(result.stdout.splitlines()[0])
    assert set(seen["workers"]) <= set(seen["running"])
    assert seen["after"] == []
    assert not alive(seen["running"])
    assert not processes_naming(str(head_dir))


def test_local_head_that_fails_to_start_raises_with_its_output_and_leaves_nothing(head_dir) -> None:
    head = LocalHead(temp_dir=head_dir, num_cpus=-3)

    with pytest.raises(RayUnavailableError, match=r"(?s)did not start.*Resource quantities must be nonnegative"):
        head.start()

    assert not processes_naming(str(head_dir))
    assert head.pids() == set()


def test_local_head_that_does_not_come_up_in_time_is_stopped_with_its_output(head_dir) -> None:
    head = LocalHead(temp_dir=head_dir, num_cpus=1)

    with pytest.raises(RayUnavailableError, match="did not start"):
        head.start(timeout=1.5)

    assert not processes_naming(str(head_dir))
    assert head.pids() == set()


def test_local_head_start_failure_is_not_hidden_by_a_failing_cleanup(head_dir, caplog) -> None:
    class CleanupFails(LocalHead):
        def stop(self, timeout: float = 30) -> None:
            super().stop(timeout)
            raise OSError("cleanup failed")

    head = CleanupFails(temp_dir=head_dir, num_cpus=-3)

    with pytest.raises(RayUnavailableError, match="Resource quantities must be nonnegative"):
        head.start()

    assert "cleanup failed" in caplog.text
    assert not processes_naming(str(head_dir))


@pytest.fixture
def shared_head_env(python_subprocess_env) -> Iterator[tuple[dict[str, str], Path]]:
    """An environment whose temp dir is private and short (Ray's unix sockets go under the shared head's dir), and
    the directory a shared head run from this process (its parent) uses there."""
    temp = Path(tempfile.mkdtemp(prefix="drs-"))
    yield {**python_subprocess_env, "TMPDIR": str(temp)}, temp / f"dramatiq-ray-{os.getpid()}"
    shutil.rmtree(temp, ignore_errors=True)


def test_shared_head_stopped_like_a_fork_process_leaves_no_process_and_no_temp_dir(shared_head_env) -> None:
    # Given the shared head running as the CLI runs its fork functions, without psutil
    env, directory = shared_head_env
    fork = subprocess.Popen(
        [sys.executable, "-c", SHARED_HEAD_AS_A_FORK], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        wait_until(lambda: (directory / "address").exists() or fork.poll() is not None, timeout=180, what="the head")
        assert fork.poll() is None, fork.communicate()[0].decode(errors="replace")[-3000:]
        running = processes_naming(str(directory))
        assert running

        # When the CLI stops it: SIGTERM, and another one while it is stopping the head
        fork.send_signal(signal.SIGTERM)
        wait_until(lambda: len(alive(running)) < len(running) or fork.poll() is not None, timeout=60, what="a stop")
        if fork.poll() is None:
            fork.send_signal(signal.SIGTERM)
        output = fork.communicate(timeout=120)[0].decode(errors="replace")

        # Then it exits cleanly, leaving no process of the head and no directory
        assert fork.returncode == 0, output[-3000:]
        assert not alive(running)
        assert not processes_naming(str(directory))
        assert not directory.exists()
    finally:
        if fork.poll() is None:
            fork.kill()
            fork.wait()


def test_shared_head_refuses_a_directory_planted_as_a_symbolic_link(shared_head_env) -> None:
    # Given the shared head's predictable path taken first by a symbolic link to a directory of someone else's
    env, directory = shared_head_env
    elsewhere = directory.parent / "elsewhere"
    elsewhere.mkdir()
    directory.symlink_to(elsewhere)
    fork = subprocess.Popen(
        [sys.executable, "-c", SHARED_HEAD_AS_A_FORK], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        wait_until(lambda: fork.poll() is not None or any(elsewhere.iterdir()), timeout=180, what="the fork")
        output = fork.communicate(timeout=120)[0].decode(errors="replace") if fork.poll() is not None else ""

        # Then it starts no head there and leaves the link alone
        assert list(elsewhere.iterdir()) == []
        assert fork.returncode not in (None, 0)
        assert "symbolic link" in output
        assert directory.is_symlink()
    finally:
        if fork.poll() is None:
            fork.kill()
            fork.wait()


def test_shared_head_that_fails_to_start_raises_and_leaves_no_temp_dir(shared_head_env) -> None:
    # Given a temp dir so long that Ray's unix socket paths under it would be too long: the head cannot start
    env, _ = shared_head_env
    long_temp = Path(env["TMPDIR"]) / ("x" * 90)
    long_temp.mkdir()
    directory = long_temp / f"dramatiq-ray-{os.getpid()}"

    result = subprocess.run(
        [sys.executable, "-c", SHARED_HEAD_AS_A_FORK],
        env={**env, "TMPDIR": str(long_temp)},
        capture_output=True,
        text=True,
        timeout=240,
    )

    assert result.returncode != 0
    assert "RayUnavailableError: The local Ray head did not start" in result.stderr
    assert "AF_UNIX path length" in result.stderr
    assert "ModuleNotFoundError" not in result.stderr
    assert not directory.exists()
    assert not processes_naming(str(directory))
