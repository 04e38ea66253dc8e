"""The services a run talks to, started and stopped by the harness: Redis (found), a Ray cluster, moto's S3 server,
the GCS emulator, and ``dramatiq`` worker processes.

Everything a run creates is its own: a unique Redis key namespace, buckets with unique names, a Ray cluster with its
own temp dir on free ports (stopped by process group, never ``ray stop``), worker processes it started.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from dramatiq_ray.execution.local_head import free_port  # one port picker: never the same port twice

REPO_ROOT = Path(__file__).resolve().parent.parent

# Fake credentials for the moto server, set before any boto3 client exists so that Ray workers inherit them.
for _name, _value in {
    "AWS_ACCESS_KEY_ID": "benchmarks",
    "AWS_SECRET_ACCESS_KEY": "benchmarks",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}.items():
    os.environ.setdefault(_name, _value)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def wait_until(predicate: Callable[[], Any], *, timeout: float, what: str, interval: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns something truthy; raise ``TimeoutError`` naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def subprocess_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def stop_process_group(proc: subprocess.Popen[bytes], *, grace: float, leader_only: bool = False) -> None:
    """SIGTERM the process group ``proc`` leads (``leader_only``: ``proc`` alone, which stops the rest itself), wait
    up to ``grace`` seconds for ``proc`` to exit, then SIGKILL the group."""
    with contextlib.suppress(ProcessLookupError):
        if leader_only:
            os.kill(proc.pid, signal.SIGTERM)
        else:
            os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=30)


# --- Redis ---------------------------------------------------------------------------------------------------


class RedisNamespace:
    """A Redis URL (``REDIS_URL`` or 127.0.0.1:6379) and a key namespace of this run, deleted by :meth:`close`."""

    def __init__(self) -> None:
        import redis

        self.url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
        self.namespace = unique("dramatiq-ray-bench")
        self.client = redis.Redis.from_url(self.url)
        try:
            self.client.ping()
        except redis.RedisError as error:
            raise SystemExit(f"Redis does not answer at {self.url} ({error}); start it or set REDIS_URL.") from None

    def flush(self) -> None:
        keys = list(self.client.scan_iter(match=f"{self.namespace}*", count=1000))
        for start in range(0, len(keys), 500):
            self.client.delete(*keys[start : start + 500])

    def close(self) -> None:
        self.flush()
        self.client.close()


# --- Ray -----------------------------------------------------------------------------------------------------


class RayCluster:
    """A Ray cluster of ``ray start`` processes on free ports with a temp dir of its own.

    Each node is a ``ray start --block`` leading its own process group, so stopping is a signal to that group.
    The cluster uses token authentication, as ``ray start`` clusters of Ray 2.5x+ do by default, with a token of
    its own in its temp dir: every node and driver gets ``RAY_AUTH_MODE=token`` and ``RAY_AUTH_TOKEN_PATH`` from
    :meth:`driver_env`, so nothing depends on a token left in the user's home directory.
    """

    def __init__(self, *, num_cpus: int, object_store_mib: int = 1024, num_gpus: int = 0) -> None:
        self.temp_dir = tempfile.mkdtemp(prefix="drb-")  # short: Ray's socket paths must fit in 107 bytes
        self.token_path = Path(self.temp_dir) / "auth_token"
        self.token_path.write_text(secrets.token_hex(32))  # the form `ray get-auth-token --generate` writes
        self.token_path.chmod(0o600)
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.object_store_mib = object_store_mib
        self.nodes: list[subprocess.Popen[bytes]] = []
        self._logs: list[IO[bytes]] = []
        self.num_cpus = 0
        gpus = [f"--num-gpus={num_gpus}"] if num_gpus else []  # logical GPUs: Ray assigns ids, no hardware needed
        self._start_node(["--head", f"--port={self.port}", "--include-dashboard=false", *gpus], num_cpus)

    def add_node(self, *, num_cpus: int) -> None:
        """Join a second ``ray start`` on this machine with its own CPUs (a simulated two-node cluster)."""
        before = self._alive_nodes()
        self._start_node([f"--address={self.address}"], num_cpus, before=before)

    def _start_node(self, args: list[str], num_cpus: int, *, before: int = 0) -> None:
        ray = Path(sys.executable).parent / "ray"
        log = open(Path(self.temp_dir) / f"node-{len(self.nodes)}.log", "wb")  # noqa: SIM115 - closed in stop()
        self._logs.append(log)
        # Every port on a free one: other Ray heads may run on this machine at the same time (parallel tests), and
        # Ray's defaults (dashboard 8265, client server 10001, agents) would collide.
        ports = [
            f"--dashboard-agent-listen-port={free_port()}",
            f"--dashboard-agent-grpc-port={free_port()}",
            f"--runtime-env-agent-port={free_port()}",
            f"--metrics-export-port={free_port()}",
        ]
        if "--head" in args:
            ports += [f"--dashboard-port={free_port()}", f"--ray-client-server-port={free_port()}"]
        command = [
            str(ray) if ray.exists() else "ray",
            "start",
            "--block",
            *args,
            *ports,
            f"--num-cpus={num_cpus}",
            f"--object-store-memory={self.object_store_mib * 1024 * 1024}",
            f"--temp-dir={self.temp_dir}",
            "--disable-usage-stats",
        ]
        proc = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=self.driver_env()
        )
        self.nodes.append(proc)
        self.num_cpus += num_cpus
        try:
            wait_until(lambda: self._alive_nodes() > before, timeout=120, interval=0.1, what="a Ray node to start")
        except TimeoutError:
            self.stop()
            raise

    def _alive_nodes(self) -> int:
        """How many nodes have logged that they started (raising when one exited)."""
        started = 0
        for index, proc in enumerate(self.nodes):
            log = (Path(self.temp_dir) / f"node-{index}.log").read_text(errors="replace")
            if proc.poll() is not None:
                raise RuntimeError(f"ray start exited with {proc.returncode}:\n{log[-3000:]}")
            started += "Ray runtime started" in log
        return started

    def driver_env(self, **extra: str) -> dict[str, str]:
        return subprocess_env(
            RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(self.token_path), RAY_ADDRESS=self.address, **extra
        )

    def stop(self, *, grace: float = 1.0) -> None:
        """Stop every node: SIGTERM, then SIGKILL after ``grace`` seconds.

        A longer grace buys nothing: on SIGTERM ``ray start`` drains its node for up to 30 s (Ray's
        ``RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S``, for Serve) and its raylet and GCS server were seen alive 8 s
        later, so every stop ended in the SIGKILL anyway. The cluster's temp dir goes with it."""
        for proc in reversed(self.nodes):
            stop_process_group(proc, grace=grace)
        for log in self._logs:
            log.close()
        self.nodes.clear()
        shutil.rmtree(self.temp_dir, ignore_errors=True)


# --- S3 and GCS ----------------------------------------------------------------------------------------------


class S3Server:
    """moto's threaded S3 server on a free loopback port, with one bucket for this run."""

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one access-log line per request otherwise
        self.endpoint_url = f"http://127.0.0.1:{free_port()}"
        port = int(self.endpoint_url.rsplit(":", 1)[1])
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        self._server.start()
        self.bucket = unique("dramatiq-ray-bench")
        self.client().create_bucket(Bucket=self.bucket)

    def client(self) -> Any:
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint_url, region_name="us-east-1")

    def stop(self) -> None:
        self._server.stop()


class GCSServer:
    """The GCS emulator (in memory) on a free loopback port, with one bucket for this run."""

    def __init__(self) -> None:
        from gcp_storage_emulator.server import create_server

        port = free_port()
        self.endpoint_url = f"http://127.0.0.1:{port}"
        self._server = create_server("127.0.0.1", port, in_memory=True)
        self._server.start()
        self.bucket = unique("dramatiq-ray-bench")
        self.client().create_bucket(self.bucket)

    def client(self) -> Any:
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        return storage.Client(
            project="dramatiq-ray-bench",
            credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
            client_options={"api_endpoint": self.endpoint_url},
        )

    def stop(self) -> None:
        self._server.stop()


# --- dramatiq worker processes -------------------------------------------------------------------------------


class WorkerProcess:
    """The real ``dramatiq`` CLI running ``benchmarks._worker`` with one process and ``threads`` threads.

    ``config`` goes to the app through environment variables (see ``benchmarks._app``). :attr:`worker_pid` is
    the forked worker process (not the CLI parent), whose RSS the cases sample.
    """

    def __init__(self, config: dict[str, str], *, threads: int, log_dir: str, env: dict[str, str]) -> None:
        self.log_path = Path(log_dir) / f"{unique('worker')}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        executable = Path(sys.executable).parent / "dramatiq"
        command = [str(executable)] if executable.exists() else [sys.executable, "-m", "dramatiq"]
        full_env = {**env, **{f"BENCH_{key.upper()}": value for key, value in config.items()}}
        self.proc = subprocess.Popen(
            [*command, "benchmarks._worker", "--processes", "1", "--threads", str(threads)],
            cwd=str(REPO_ROOT),
            env=full_env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_until(self._ready, timeout=180, interval=0.1, what="the dramatiq worker to boot")
        import psutil

        children = psutil.Process(self.proc.pid).children()
        if len(children) != 1:
            raise RuntimeError(f"expected one dramatiq worker process, found {len(children)}")
        self.worker_pid = children[0].pid

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"dramatiq exited early with {self.proc.returncode}:\n{self.output()[-4000:]}")
        return "is ready for action" in self.output()

    def stop(self, *, grace: float = 30) -> None:
        """Stop the worker as Dramatiq's CLI is meant to be stopped: SIGTERM to the CLI, which forwards it to its
        worker process (a signal to the whole group reached that process twice, and Dramatiq takes a second
        SIGTERM as "exit now", skipping the shutdown); SIGKILL the group after ``grace`` seconds."""
        stop_process_group(self.proc, grace=grace, leader_only=True)
        self._log.close()
