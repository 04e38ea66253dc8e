"""Fixtures of the fault suite: the fault app's environment, a Redis server of our own that can be restarted,
the check that every message had exactly its expected outcome, and the check that nothing we started lingers.

Every test under this directory is marked ``faults``.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import dramatiq
import psutil
import pytest

from dramatiq_ray import FilesystemStore, SpillingBackend
from tests import _services
from tests._services import free_port, redis_answers, wait_until

RESULT_TIMEOUT_MS = 240_000


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.faults)


# --- the fault app -------------------------------------------------------------------------------------------


@pytest.fixture
def store_root(tmp_path: Path) -> Path:
    root = tmp_path / "blobs"
    root.mkdir()
    return root


@pytest.fixture
def fault_env(redis_url: str, redis_namespace: str, queue_name: str, store_root: Path) -> dict[str, str]:
    """Environment of ``tests.faults.app`` for a Redis broker; override the broker URL for RabbitMQ."""
    return {
        "DRAMATIQ_RAY_TEST_BROKER_URL": redis_url,
        "DRAMATIQ_RAY_TEST_RESULTS_URL": redis_url,
        "DRAMATIQ_RAY_TEST_NAMESPACE": redis_namespace,
        "DRAMATIQ_RAY_TEST_QUEUE": queue_name,
        "DRAMATIQ_RAY_TEST_STORE_PATH": str(store_root),
        "DRAMATIQ_RAY_TEST_MAX_INLINE_BYTES": "1024",
    }


def work_message(queue_name: str, value: int, *, size: int = 0, hold_seconds: float = 0.0) -> dramatiq.Message[Any]:
    return dramatiq.Message(
        queue_name=queue_name,
        actor_name="work",
        args=(value, size, hold_seconds),
        kwargs={},
        options={},
    )


class Ledger:
    """What the fault app did, read from the outside: results (through a SpillingBackend like the app's) and the
    attempt log its actor writes."""

    def __init__(self, redis_url: str, namespace: str, store_root: Path, max_inline_bytes: int = 1024) -> None:
        from dramatiq.results.backends import RedisBackend

        self.namespace = namespace
        self.redis = RedisBackend(url=redis_url, namespace=f"{namespace}-results")
        self.backend = SpillingBackend(self.redis, store=FilesystemStore(store_root), max_inline_bytes=max_inline_bytes)

    def attempts(self) -> list[int]:
        return [int(item) for item in self.redis.client.lrange(f"{self.namespace}:attempts", 0, -1)]

    def assert_every_outcome(self, expected: Iterable[tuple[dramatiq.Message[Any], Any]]) -> int:
        """Every message has exactly its expected result, stored once; return how many were checked."""
        from tests.faults.app import expected as expected_value

        checked = 0
        for message, (value, size) in expected:
            assert self.backend.get_result(message, block=True, timeout=RESULT_TIMEOUT_MS) == expected_value(
                value, size
            ), f"wrong result for message {value}"
            # Dramatiq's Redis backend keeps a one-element list per message: more would be a result stored twice.
            assert self.redis.client.llen(self.redis.build_message_key(message)) == 1
            checked += 1
        return checked

    def close(self) -> None:
        self.redis.client.close()


@pytest.fixture
def ledger(redis_url: str, redis_namespace: str, store_root: Path) -> Iterator[Ledger]:
    found = Ledger(redis_url, redis_namespace, store_root)
    yield found
    found.close()


# --- processes -----------------------------------------------------------------------------------------------


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def descendants(pid: int) -> set[int]:
    with contextlib.suppress(psutil.Error):
        return {child.pid for child in psutil.Process(pid).children(recursive=True)}
    return set()


def assert_all_gone(pids: Iterable[int], *, what: str) -> None:
    """Every process in ``pids`` exits (or is a zombie) within a generous timeout."""
    pids = set(pids)
    wait_until(lambda: not [pid for pid in pids if alive(pid)], timeout=60, what=f"{what} to exit")


def cli_worker_pids(cli: Any) -> set[int]:
    """The worker processes of a dramatiq CLI run: its direct children running our app module."""
    found = set()
    for child in psutil.Process(cli.proc.pid).children():
        with contextlib.suppress(psutil.Error):
            found.add(child.pid)
    return found


# --- a Redis of our own --------------------------------------------------------------------------------------


class RestartableRedis:
    """A private ``redis-server`` on a free port, with an append-only file synced on every write, so that a
    restart keeps what was written (as a production Redis configured for Dramatiq would). Never the shared one."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            _services.unavailable("redis-server is not installed; the Redis restart case needs one of its own")
        self.binary = str(binary)
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.workdir = tempfile.mkdtemp(prefix="dramatiq-ray-faults-redis-")
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--dir",
                self.workdir,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(lambda: redis_answers(self.url), timeout=30, what="the private redis-server to answer")

    def kill(self) -> None:
        """SIGKILL, as a crash would; what was acknowledged by Redis is in the append-only file."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=30)
            self.proc = None

    def restart(self) -> None:
        self.kill()
        self.start()
        self.restarts += 1

    def close(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=30)
            self.proc = None
        shutil.rmtree(self.workdir, ignore_errors=True)


@pytest.fixture
def private_redis() -> Iterator[RestartableRedis]:
    server = RestartableRedis()
    server.start()
    yield server
    pid = server.proc.pid if server.proc is not None else None
    server.close()
    if pid is not None:
        assert not alive(pid)


@pytest.fixture
def messages_of() -> Callable[..., list[tuple[dramatiq.Message[Any], tuple[int, int]]]]:
    def build(
        queue_name: str,
        values: Iterable[int],
        *,
        size_of: Callable[[int], int] = lambda v: 0,
        hold_seconds: float = 0.0,
    ) -> list[tuple[dramatiq.Message[Any], tuple[int, int]]]:
        return [
            (work_message(queue_name, value, size=size_of(value), hold_seconds=hold_seconds), (value, size_of(value)))
            for value in values
        ]

    return build
