"""Finding, starting and stopping the real services the test suite talks to.

Every service is found the same way: an explicit environment variable, else the conventional local address
if it answers, else (where possible) a private instance started on a free loopback port, else the test is
skipped with a visible reason, or failed when ``CI=true`` or ``DRAMATIQ_RAY_REQUIRE_SERVICES=1``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from dramatiq_ray.execution.local_head import free_port  # one port picker: never the same port twice

REPO_ROOT = Path(__file__).resolve().parent.parent


def services_required() -> bool:
    return os.environ.get("CI", "").lower() == "true" or os.environ.get("DRAMATIQ_RAY_REQUIRE_SERVICES") == "1"


def unavailable(reason: str) -> None:
    """Skip, or fail when services are required, with a reason the test report shows."""
    if services_required():
        pytest.fail(f"required service unavailable: {reason}", pytrace=False)
    pytest.skip(f"service unavailable: {reason}")


def wait_until(predicate: Any, *, timeout: float, interval: float = 0.05, what: str = "condition") -> Any:
    """Poll ``predicate`` until it returns something truthy; raise ``TimeoutError`` naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


# --- Redis ---------------------------------------------------------------------------------------------------


def redis_answers(url: str) -> bool:
    import redis

    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=2)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """Yield a Redis URL: ``REDIS_URL``, the local default, or a private ``redis-server`` on a free port."""
    explicit = os.environ.get("REDIS_URL")
    if explicit:
        if not redis_answers(explicit):
            unavailable(f"REDIS_URL={explicit} does not answer PING")
        yield explicit
        return
    default = "redis://127.0.0.1:6379/0"
    if redis_answers(default):
        yield default
        return
    binary = shutil.which("redis-server")
    if binary is None:
        unavailable("no Redis at 127.0.0.1:6379, REDIS_URL is unset and redis-server is not installed")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="dramatiq-ray-redis-") as workdir:
        proc = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", workdir],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        url = f"redis://127.0.0.1:{port}/0"
        try:
            wait_until(lambda: redis_answers(url), timeout=15, what="redis-server to answer")
            yield url
        finally:
            proc.terminate()
            proc.wait(timeout=15)


# --- RabbitMQ ------------------------------------------------------------------------------------------------


def rabbitmq_answers(url: str) -> bool:
    import pika

    try:
        params = pika.URLParameters(url)
        params.socket_timeout = 2
        params.blocked_connection_timeout = 2
        connection = pika.BlockingConnection(params)
        connection.close()
        return True
    except Exception:
        return False


def rabbitmq_url() -> str:
    url = os.environ.get("RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
    if not rabbitmq_answers(url):
        unavailable(f"RabbitMQ does not answer at {url.split('@')[-1]} (set RABBITMQ_URL)")
    return url


def delete_rabbitmq_queues(url: str, queue_names: set[str]) -> None:
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        for name in queue_names:
            for suffix in ("", ".DQ", ".XQ"):
                channel.queue_delete(name + suffix)
    finally:
        connection.close()


# --- PostgreSQL ----------------------------------------------------------------------------------------------


def postgres_answers(url: str) -> bool:
    try:
        import psycopg
    except ImportError:
        return False
    try:
        with psycopg.connect(url, connect_timeout=2) as connection:
            connection.execute("SELECT 1")
        return True
    except Exception:
        return False


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """Yield a PostgreSQL URL (``postgresql://...``): ``DRAMATIQ_RAY_POSTGRES_URL``, else the local server at
    127.0.0.1:5432 (trust authentication, database ``test``, user ``postgres`` or ``root``), else a private
    server started with ``initdb``/``pg_ctl`` on a free port, else skip (fail when services are required)."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        unavailable('psycopg is not installed: pip install ".[sql]"')
    explicit = os.environ.get("DRAMATIQ_RAY_POSTGRES_URL")
    if explicit:
        if not postgres_answers(explicit):
            unavailable("DRAMATIQ_RAY_POSTGRES_URL does not answer")
        yield explicit
        return
    for user in ("postgres", "root"):
        local = f"postgresql://{user}@127.0.0.1:5432/test"
        if postgres_answers(local):
            yield local
            return
    with _private_postgres() as url:
        yield url


@contextlib.contextmanager
def _private_postgres() -> Iterator[str]:
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if initdb is None or pg_ctl is None:
        unavailable(
            "no PostgreSQL at 127.0.0.1:5432 (database test), DRAMATIQ_RAY_POSTGRES_URL is unset, and initdb/pg_ctl "
            "are not installed"
        )
    # PostgreSQL refuses to run as root: run it as the 'postgres' user when the tests run as root.
    prefix: list[str] = []
    if os.geteuid() == 0:
        import pwd

        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            unavailable("running as root and there is no 'postgres' user to start a private PostgreSQL as")
        prefix = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="dramatiq-ray-pg-")
    if prefix:
        os.chown(workdir, owner.pw_uid, owner.pw_gid)
    data = os.path.join(workdir, "data")
    try:
        subprocess.run(
            [*prefix, initdb, "-D", data, "-A", "trust", "-U", "postgres"], check=True, capture_output=True, timeout=120
        )
        options = f"-p {port} -k {workdir} -c listen_addresses=127.0.0.1 -c fsync=off"
        log = os.path.join(workdir, "log")
        subprocess.run([*prefix, pg_ctl, "-D", data, "-o", options, "-l", log, "-w", "start"], check=True, timeout=120)
        admin = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        wait_until(lambda: postgres_answers(admin), timeout=30, what="the private PostgreSQL to answer")
        import psycopg

        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute("CREATE DATABASE test")
        yield f"postgresql://postgres@127.0.0.1:{port}/test"
    finally:
        subprocess.run([*prefix, pg_ctl, "-D", data, "-m", "immediate", "-w", "stop"], capture_output=True, timeout=60)
        shutil.rmtree(workdir, ignore_errors=True)


# --- S3 (moto's server, over HTTP) ---------------------------------------------------------------------------


class MotoS3Server:
    """moto's threaded server on a fixed loopback port; ``stop()`` and ``start()`` simulate an outage.

    moto keeps its state in the process, so objects written before an outage are there after it.
    """

    def __init__(self) -> None:
        self.port = free_port()
        self.endpoint_url = f"http://127.0.0.1:{self.port}"
        self._server: Any = None

    def start(self) -> None:
        from moto.server import ThreadedMotoServer

        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server._server.server_close()
            self._server = None

    def client(self) -> Any:
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint_url, region_name="us-east-1")


# --- GCS (an emulator, over HTTP) ----------------------------------------------------------------------------


class GCSEmulator:
    """gcp-storage-emulator on a fixed loopback port; ``stop()`` and ``start()`` simulate an outage and keep
    the stored objects."""

    def __init__(self) -> None:
        self.port = free_port()
        self.endpoint_url = f"http://127.0.0.1:{self.port}"
        self._server: Any = None
        self._storage: Any = None

    def start(self) -> None:
        from gcp_storage_emulator.server import APIThread, create_server

        if self._server is None:
            self._server = create_server("127.0.0.1", self.port, in_memory=True)
            self._storage = self._server._storage
        else:
            self._server._api = APIThread("127.0.0.1", self.port, self._storage)
        self._server.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()

    def client(self) -> Any:
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        return storage.Client(
            project="dramatiq-ray-test",
            credentials=AnonymousCredentials(),
            client_options={"api_endpoint": self.endpoint_url},
        )


# --- the real dramatiq CLI -----------------------------------------------------------------------------------


class DramatiqCLI:
    """One ``dramatiq`` CLI run in a subprocess of its own process group; output goes to a log file."""

    def __init__(self, args: list[str], *, env: dict[str, str], log_path: Path) -> None:
        self.args = args
        self.log_path = log_path
        self._log: IO[bytes] = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        executable = Path(sys.executable).parent / "dramatiq"
        command = [str(executable)] if executable.exists() else [sys.executable, "-m", "dramatiq"]
        self.proc = subprocess.Popen(
            [*command, *args],
            cwd=str(REPO_ROOT),
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.returncode: int | None = None

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, processes: int = 1, timeout: float = 120) -> None:
        """Block until every worker process has logged that it is ready."""

        def ready() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dramatiq exited early with {self.proc.returncode}:\n{self.output()}")
            return self.output().count("is ready for action") >= processes

        wait_until(ready, timeout=timeout, interval=0.1, what="dramatiq workers to boot")

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM, as an init system would, and wait for a clean exit; SIGKILL the group if it hangs."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self.returncode = self.proc.returncode
        self._log.close()
        return self.returncode

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)


def run_in_thread(target: Any, *args: Any) -> threading.Thread:
    thread = threading.Thread(target=target, args=args, daemon=True)
    thread.start()
    return thread
