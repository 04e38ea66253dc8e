"""``dramatiq-ray replicas``: operators list pools and drain one."""

from __future__ import annotations

import io
from typing import Any

import dramatiq

from dramatiq_ray import Replicas
from dramatiq_ray.cli import main
from dramatiq_ray.execution.replica_pool import NAMESPACE
from tests._services import wait_until
from tests.replicas.conftest import RESULT_TIMEOUT_MS


def run_command(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(["replicas", *argv], out=out)
    return code, out.getvalue()


def test_replicas_command_lists_pools_and_drains_one(replica_broker, start_worker, ray_local: Any) -> None:
    @dramatiq.actor(broker=replica_broker, store_results=True, replicas=Replicas(version="v7"))
    def listed() -> int:
        return 1

    start_worker(replica_broker)
    assert listed.send().get_result(block=True, timeout=RESULT_TIMEOUT_MS) == 1

    code, out = run_command()
    assert code == 0, out
    (row,) = [line for line in out.splitlines() if line.startswith("listed ")]
    assert "v7" in row and "1/1 ready" in row and "in flight 0" in row

    code, out = run_command("--drain", "listed")
    assert code == 0, out
    assert "Draining pool:listed:v7" in out

    def gone() -> bool:
        try:
            ray_local.get_actor("pool:listed:v7", namespace=NAMESPACE)
        except ValueError:
            return True
        return False

    wait_until(gone, timeout=120, what="the drained pool to exit")


def test_replicas_command_refuses_to_drain_an_unknown_actor(ray_local: Any, no_lingering_replicas: None) -> None:
    code, out = run_command("--drain", "nobody")

    assert code == 1
    assert "No pool of actor 'nobody'" in out
