"""Fixtures for warm replicas: a broker with results and Ray execution on the session's local Ray, and the
removal of every pool and replica a test started (they are detached: nothing else would stop them)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from dramatiq.results.backends import StubBackend

from dramatiq_ray import FilesystemStore, RayExecutionMiddleware, Results
from dramatiq_ray.execution.replica_pool import NAMESPACE

RESULT_TIMEOUT_MS = 120_000


def kill_replicas(ray: Any) -> list[str]:
    """Kill every pool, then every replica, in dramatiq-ray's namespace of the Ray ``ray`` is attached to."""
    names = [
        entry["name"] for entry in ray.util.list_named_actors(all_namespaces=True) if entry["namespace"] == NAMESPACE
    ]
    for name in sorted(names, key=lambda name: not name.startswith("pool:")):  # pools first: they restart replicas
        with contextlib.suppress(Exception):
            ray.kill(ray.get_actor(name, namespace=NAMESPACE), no_restart=True)
    return names


@pytest.fixture
def no_lingering_replicas(ray_local: Any) -> Iterator[None]:
    """Kill every pool and replica the test started."""
    yield
    kill_replicas(ray_local)


@pytest.fixture
def replica_broker(stub_broker: Any, ray_local: Any, no_lingering_replicas: None, tmp_path: Path) -> Any:
    """A stub broker with results (spilling to a FilesystemStore over 1 KiB) and Ray execution."""
    store_dir = tmp_path / "blobs"
    store_dir.mkdir()
    stub_broker.add_middleware(Results(backend=StubBackend(), store=FilesystemStore(store_dir), max_inline_bytes=1024))
    stub_broker.add_middleware(RayExecutionMiddleware(wait_slice=0.2))
    return stub_broker


@pytest.fixture
def describe_pool(ray_local: Any) -> Callable[[str, str], dict[str, Any]]:
    """What the pool of an actor (and version) reports."""

    def describe(actor_name: str, version: str = "1") -> dict[str, Any]:
        pool = ray_local.get_actor(f"pool:{actor_name}:{version}", namespace=NAMESPACE)
        found: dict[str, Any] = ray_local.get(pool.describe.remote(), timeout=60)
        return found

    return describe


@pytest.fixture
def gpu_head() -> Iterator[Any]:
    """A Ray head advertising 2 logical GPUs (no real ones needed: Ray still assigns CUDA_VISIBLE_DEVICES)."""
    import shutil
    import tempfile

    from dramatiq_ray.execution.local_head import LocalHead

    temp_dir = tempfile.mkdtemp(prefix="drg-")
    head = LocalHead(temp_dir=temp_dir, num_cpus=2, num_gpus=2)
    head.start()
    yield head
    head.stop()
    leftovers = head.pids()
    shutil.rmtree(temp_dir, ignore_errors=True)
    assert not leftovers, f"Ray head processes left behind: {sorted(leftovers)}"


@pytest.fixture
def two_node_head() -> Iterator[Any]:
    """A Ray head and a second node that joins it (``ray start --address``), each with one CPU and one
    ``NODE_SLOT`` (see ``tests.apps.replicas_app``), sharing a temp dir: stopping the head stops both, and the
    test fails if any of their processes outlives it."""
    import json
    import os
    import shutil
    import subprocess
    import sys
    import tempfile
    import time

    from dramatiq_ray.execution.local_head import LocalHead
    from dramatiq_ray.execution.processes import free_port
    from tests.apps.replicas_app import NODE_SLOT

    temp_dir = tempfile.mkdtemp(prefix="drn-")
    head = LocalHead(temp_dir=temp_dir, num_cpus=1, resources={NODE_SLOT: 1})
    head.start()
    log_path = Path(temp_dir) / "second-node.log"
    node: subprocess.Popen[bytes] | None = None
    try:
        with open(log_path, "wb") as log:
            node = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    "import sys; from ray.scripts.scripts import main; sys.exit(main())",
                    "start",
                    "--block",
                    f"--address={head.address}",
                    "--node-ip-address=127.0.0.1",
                    f"--temp-dir={temp_dir}",
                    "--disable-usage-stats",
                    "--num-cpus=1",
                    f"--resources={json.dumps({NODE_SLOT: 1})}",
                    f"--dashboard-agent-listen-port={free_port()}",
                    f"--dashboard-agent-grpc-port={free_port()}",
                    f"--runtime-env-agent-port={free_port()}",
                    f"--metrics-export-port={free_port()}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                # A node joining by address must be told to authenticate (a head started locally does by default).
                env={**os.environ, "RAY_AUTH_MODE": "token"},
            )
        deadline = time.monotonic() + 120
        while "Ray runtime started" not in log_path.read_text(errors="replace"):
            assert node.poll() is None and time.monotonic() < deadline, log_path.read_text(errors="replace")[-3000:]
            time.sleep(0.2)
        yield head
    finally:
        head.stop()  # the second node's processes name the shared temp dir: they are stopped too
        if node is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                node.wait(timeout=30)  # reaped, so it is not counted as left behind
        leftovers = head.pids()
        shutil.rmtree(temp_dir, ignore_errors=True)
    assert not leftovers, f"Ray processes left behind: {sorted(leftovers)}"


@pytest.fixture
def release(start_worker: Any, tmp_path: Path) -> Iterator[Path]:
    """A file bodies wait for; created at teardown at the latest (before the workers stop), so no body holds
    a worker thread forever when a test fails early."""
    path = tmp_path / "release"
    yield path
    path.touch()
