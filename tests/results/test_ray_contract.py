"""The contract with the Ray execution middleware: oversized values are spilled inside the Ray task, and piped
pointers reach a Ray-run body as values."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import dramatiq
import pytest

from dramatiq_ray import FilesystemStore, RayExecutionMiddleware, Results, get_pointer

RESULT_TIMEOUT_MS = 120_000


class PidRecordingStore(FilesystemStore):
    """A filesystem store that also records which process wrote each blob."""

    def put(self, digest: str, data: bytes) -> str:
        with open(os.path.join(self.path, "writers.log"), "a") as log:
            log.write(f"{os.getpid()}\n")
        return super().put(digest, data)


@pytest.fixture
def ray_broker(stub_broker, stub_backend, tmp_path: Path, ray_local: Any) -> Any:
    (tmp_path / "blobs").mkdir()
    store = PidRecordingStore(tmp_path / "blobs")
    stub_broker.add_middleware(Results(backend=stub_backend, store=store, max_inline_bytes=1_000))
    stub_broker.add_middleware(RayExecutionMiddleware())
    return stub_broker


def writers(broker: Any) -> list[int]:
    store = broker.get_results_backend().store
    return [int(line) for line in Path(store.path, "writers.log").read_text().split()]


def test_ray_run_actor_spills_its_oversized_result_inside_the_ray_task(ray_broker, start_worker) -> None:
    @dramatiq.actor(store_results=True, max_retries=0)
    def render(n: int) -> str:
        return "r" * n

    start_worker(ray_broker, threads=2)
    probe_writers = writers(ray_broker)  # the worker's store probe at boot
    message = render.send(50_000)
    assert message.get_result(block=True, timeout=RESULT_TIMEOUT_MS) == "r" * 50_000
    assert get_pointer(message).startswith("resultfs://")
    [writer] = writers(ray_broker)[len(probe_writers) :]
    assert writer != os.getpid()


def test_ray_run_actor_receives_a_piped_spilled_value_as_the_value(ray_broker, start_worker) -> None:
    @dramatiq.actor(max_retries=0)
    def produce(n: int) -> str:
        return "p" * n

    @dramatiq.actor(store_results=True, max_retries=0)
    def measure(value: Any) -> int:
        return len(value) if isinstance(value, str) else -1

    start_worker(ray_broker, threads=2)
    pipe = dramatiq.pipeline([produce.message(20_000), measure.message()]).run()
    assert pipe.get_result(block=True, timeout=RESULT_TIMEOUT_MS) == 20_000
