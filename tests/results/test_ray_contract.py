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


def test_ray_task_encrypts_and_decrypts_with_keys_read_from_its_environment(
    stub_broker, stub_backend, tmp_path: Path, ray_local: Any, start_worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    import base64

    from dramatiq_ray import EncryptionKeys
    from dramatiq_ray.payloads.pointers import parse_pointer

    # Given keys in an environment variable, here and (through the runtime_env) in the Ray workers: the plan that
    # travels into each task carries only the variable's name
    variable = "DRAMATIQ_RAY_TEST_RESULT_KEYS"
    text = f"k1:{base64.b64encode(os.urandom(32)).decode()}"
    monkeypatch.setenv(variable, text)
    store = FilesystemStore(tmp_path / "blobs")
    keys = EncryptionKeys.from_env(variable)
    stub_broker.add_middleware(Results(backend=stub_backend, store=store, max_inline_bytes=1_000, encryption=keys))
    stub_broker.add_middleware(RayExecutionMiddleware(runtime_env={"env_vars": {variable: text}}))

    @dramatiq.actor(store_results=True, max_retries=0)
    def produce(n: int) -> str:
        return "s" * n  # spilled, so encrypted, inside the Ray task

    @dramatiq.actor(store_results=True, max_retries=0)
    def measure(value: Any) -> list[Any]:
        return [len(value), os.getpid()]  # the piped value was decrypted inside the Ray task

    start_worker(stub_broker, threads=2)
    first = produce.message(20_000)
    pipe = dramatiq.pipeline([first, measure.message()]).run()
    length, pid = pipe.get_result(block=True, timeout=RESULT_TIMEOUT_MS)
    # Then the body ran on Ray, read the encrypted input there, and the result was encrypted there too
    assert length == 20_000 and pid != os.getpid()
    pointer = parse_pointer(get_pointer(first))
    assert pointer.key_id == "k1"
    assert b"sss" not in (tmp_path / "blobs" / pointer.location).read_bytes()
    assert first.get_result() == "s" * 20_000


def test_ray_task_with_keys_given_as_bytes_fails_saying_how_to_provide_keys(
    stub_broker, stub_backend, tmp_path: Path, ray_local: Any, start_worker
) -> None:
    from dramatiq.results import ResultFailure

    from dramatiq_ray import EncryptionKeys

    keys = EncryptionKeys({"k1": os.urandom(32)}, current="k1")
    stub_broker.add_middleware(
        Results(backend=stub_backend, store=FilesystemStore(tmp_path / "blobs"), encryption=keys)
    )
    stub_broker.add_middleware(RayExecutionMiddleware())

    @dramatiq.actor(store_results=True, max_retries=0)
    def produce() -> str:
        return "value"

    start_worker(stub_broker, threads=2)
    with pytest.raises(ResultFailure) as failed:
        produce.send().get_result(block=True, timeout=RESULT_TIMEOUT_MS)
    assert "from_env" in failed.value.orig_exc_msg
