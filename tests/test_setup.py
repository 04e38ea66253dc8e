"""dramatiq_ray.setup(broker, settings): one call installs Results, Retries and RayExecutionMiddleware."""

from __future__ import annotations

import os
from pathlib import Path

import dramatiq
import pytest
from dramatiq.middleware import Retries as StockRetries
from dramatiq.results import Results as DramatiqResults
from dramatiq.results.backends import StubBackend

import dramatiq_ray
from dramatiq_ray import ConfigurationError, DigestOnlyResultError, RayExecutionMiddleware, Results, Retries
from dramatiq_ray.results import DigestStore, FilesystemStore, SpillingBackend, get_pointer


def test_setup_installs_all_three_middleware_with_the_settings(stub_broker, tmp_path: Path) -> None:
    installed = dramatiq_ray.setup(
        stub_broker,
        {
            "RESULT_STORAGE_BACKEND": "filesystem",
            "RESULT_STORAGE_FILESYSTEM_PATH": str(tmp_path),
            "MAX_RESULT_SIZE_BYTES": 100,
            "MAX_TASK_ATTEMPTS": 4,
            "RETRY_BACKOFF_SECONDS": 2,
            "RETRY_EXCEPTION_DENYLIST": ["KeyError"],
            "RAY_RUNTIME_ENV": {"env_vars": {"A": "1"}},
        },
    )
    assert isinstance(installed.results, Results)
    assert isinstance(installed.results.backend, SpillingBackend)
    assert installed.results.backend.store == FilesystemStore(tmp_path)
    assert installed.results.backend.max_inline_bytes == 100
    assert installed.retries.max_attempts == 4
    assert installed.retries.backoff == 2000
    assert installed.retries.denied_by(KeyError("k")) is not None
    assert installed.execution.runtime_env == {"env_vars": {"A": "1"}}
    for middleware in (installed.results, installed.retries, installed.execution):
        assert middleware in stub_broker.middleware


def test_setup_defaults_to_a_digest_store_and_a_stub_backend_on_a_stub_broker(stub_broker) -> None:
    installed = dramatiq_ray.setup(stub_broker, {})
    assert installed.results is not None
    assert isinstance(installed.results.backend.backend, StubBackend)
    assert installed.results.backend.store == DigestStore()


def test_setup_replaces_the_stock_retries_and_results(stub_broker) -> None:
    stub_broker.add_middleware(DramatiqResults(backend=StubBackend()))
    dramatiq_ray.setup(stub_broker, {})

    @dramatiq.actor(broker=stub_broker, max_attempts=2, ray_options={"num_cpus": 1}, max_inline_bytes=10)
    def declared_after_setup() -> None: ...

    kinds = [type(m) for m in stub_broker.middleware]
    assert StockRetries not in kinds
    assert kinds.count(Retries) == 1
    # The one stock Results left is the companion ours stands beside (it keeps nothing), right after ours
    assert kinds.count(DramatiqResults) == 1 and kinds.index(DramatiqResults) == kinds.index(Results) + 1
    assert kinds.count(Results) == 1
    assert kinds.count(RayExecutionMiddleware) == 1


def test_setup_with_invalid_settings_leaves_the_broker_untouched(stub_broker) -> None:
    before = list(stub_broker.middleware)
    with pytest.raises(ConfigurationError) as caught:
        dramatiq_ray.setup(stub_broker, {"MAX_TASK_ATTEMPTS": 0, "RESULT_STORAGE_BACKEND": "filesystem"})
    assert len(caught.value.problems) == 2
    assert stub_broker.middleware == before


def test_setup_ray_log_level_reaches_the_middleware_from_the_environment(
    stub_broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DRAMATIQ_RAY_RAY_LOG_LEVEL", "debug")
    installed = dramatiq_ray.setup(stub_broker)
    assert installed.execution.log_level == 10


def test_setup_invalid_ray_log_level_is_refused(stub_broker) -> None:
    with pytest.raises(ConfigurationError, match="RAY_LOG_LEVEL"):
        dramatiq_ray.setup(stub_broker, {"RAY_LOG_LEVEL": "LOUD"})


def test_setup_reads_environment_variables(stub_broker, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRAMATIQ_RAY_MAX_TASK_ATTEMPTS", "6")
    installed = dramatiq_ray.setup(stub_broker)
    assert installed.retries.max_attempts == 6


def test_setup_needs_a_result_backend_for_a_rabbitmq_broker(rabbitmq_broker) -> None:
    before = list(rabbitmq_broker.middleware)
    with pytest.raises(ConfigurationError, match="pass result_backend="):
        dramatiq_ray.setup(rabbitmq_broker, {})
    assert rabbitmq_broker.middleware == before


def test_setup_on_redis_runs_on_ray_and_spills_to_the_configured_store(
    redis_broker, start_worker, ray_local, tmp_path: Path
) -> None:
    # Given a Redis broker set up from settings, with a filesystem store and a small threshold
    installed = dramatiq_ray.setup(
        redis_broker,
        {"RESULT_STORAGE_BACKEND": "filesystem", "RESULT_STORAGE_FILESYSTEM_PATH": str(tmp_path),
         "MAX_RESULT_SIZE_BYTES": 1024},
    )  # fmt: skip

    @dramatiq.actor(broker=redis_broker, store_results=True)
    def big(n: int) -> dict[str, object]:
        return {"pid": os.getpid(), "blob": "z" * n}

    start_worker(redis_broker)
    # When a large result is produced
    message = big.send(10_000)
    value = message.get_result(block=True, timeout=60_000)
    # Then it ran on Ray, came back whole, and the result backend holds a pointer into the store
    assert value["pid"] != os.getpid()
    assert value["blob"] == "z" * 10_000
    pointer = get_pointer(message, backend=installed.results.backend)
    assert pointer is not None and pointer.startswith("resultfs://sha256/")
    assert len(list(tmp_path.rglob("*.json"))) == 1


def test_setup_logs_its_settings_without_credentials(stub_broker, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="dramatiq_ray")
    dramatiq_ray.setup(
        stub_broker,
        {"RAY_ADDRESS": "ray://user:hunter2@head:10001", "RAY_RUNTIME_ENV": {"env_vars": {"TOKEN": "hunter2"}}},
    )
    assert "dramatiq-ray installed" in caplog.text
    assert "head:10001" in caplog.text
    assert "hunter2" not in caplog.text


def test_setup_defaults_warn_once_at_worker_boot_that_large_results_keep_only_a_digest(
    redis_broker, start_worker, ray_local, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a broker set up with the default settings (RESULT_STORAGE_BACKEND='digest')
    caplog.set_level("WARNING")
    dramatiq_ray.setup(redis_broker, {})

    @dramatiq.actor(broker=redis_broker, store_results=True)
    def big() -> str:
        return "x" * (5 * 1024 * 1024)

    # When a worker boots
    start_worker(redis_broker)

    # Then it says once, naming the setting, that large results keep only their digest and their values are lost
    said = [r for r in caplog.records if r.levelname == "WARNING" and "RESULT_STORAGE_BACKEND" in r.getMessage()]
    assert len(said) == 1, [r.getMessage() for r in caplog.records]
    assert "DigestStore" in said[0].getMessage() and "values are lost" in said[0].getMessage()
    # And a 5 MB result succeeds, kept as a digest only, whose reading names the settings and the classes
    message = big.send()
    with pytest.raises(DigestOnlyResultError) as raised:
        message.get_result(block=True, timeout=60_000)
    for name in ("RESULT_STORAGE_BACKEND", "MAX_RESULT_SIZE_BYTES", "DigestStore", "FilesystemStore", "S3Store"):
        assert name in str(raised.value)


def test_setup_with_a_filesystem_store_says_nothing_about_digests_at_worker_boot(
    redis_broker, start_worker, ray_local, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("WARNING")
    dramatiq_ray.setup(
        redis_broker, {"RESULT_STORAGE_BACKEND": "filesystem", "RESULT_STORAGE_FILESYSTEM_PATH": str(tmp_path)}
    )
    start_worker(redis_broker)
    assert "RESULT_STORAGE_BACKEND" not in caplog.text
