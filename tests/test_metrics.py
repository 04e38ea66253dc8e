"""Metrics: counters and histograms in prometheus_client's default registry, and no-ops without it."""

from __future__ import annotations

import subprocess
import sys

from prometheus_client import REGISTRY

from dramatiq_ray import metrics


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_metrics_spill_counts_results_and_bytes_by_store() -> None:
    before_results = sample("dramatiq_ray_results_spilled_total", store="metrics-test")
    before_bytes = sample("dramatiq_ray_bytes_spilled_total", store="metrics-test")
    metrics.record_spill("metrics-test", 1000)
    metrics.record_spill("metrics-test", 24)
    assert sample("dramatiq_ray_results_spilled_total", store="metrics-test") == before_results + 2
    assert sample("dramatiq_ray_bytes_spilled_total", store="metrics-test") == before_bytes + 1024


def test_metrics_fallbacks_and_hydration_failures_are_labelled() -> None:
    metrics.record_spill_fallback("metrics-test-fallback")
    metrics.record_hydration_failure("metrics-test-fallback", ConnectionError("down"))
    assert sample("dramatiq_ray_spill_fallbacks_total", store="metrics-test-fallback") == 1
    assert sample("dramatiq_ray_hydration_failures_total", store="metrics-test-fallback", error="ConnectionError") == 1


def test_metrics_ray_wait_is_a_histogram_per_actor() -> None:
    metrics.observe_ray_wait("metrics_test_actor", 0.2)
    assert sample("dramatiq_ray_task_wait_seconds_count", actor_name="metrics_test_actor") == 1
    assert sample("dramatiq_ray_task_wait_seconds_bucket", actor_name="metrics_test_actor", le="0.25") == 1
    assert sample("dramatiq_ray_task_wait_seconds_bucket", actor_name="metrics_test_actor", le="0.1") == 0


def test_metrics_retries_and_denials_are_counted_by_exception_type() -> None:
    metrics.record_retry("metrics_test_retry", KeyError("k"))
    metrics.record_retry_denied("metrics_test_retry", ValueError("v"))
    assert sample("dramatiq_ray_retries_total", actor_name="metrics_test_retry", exception="KeyError") == 1
    assert sample("dramatiq_ray_retry_denials_total", actor_name="metrics_test_retry", exception="ValueError") == 1


def test_metrics_are_no_ops_without_prometheus_client(python_subprocess_env) -> None:
    script = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'prometheus_client':\n"
        "            raise ImportError('blocked')\n"
        "sys.meta_path.insert(0, Block())\n"
        "from dramatiq_ray import metrics\n"
        "metrics.record_spill('s', 1); metrics.observe_ray_wait('a', 1.0); metrics.record_retry('a', KeyError())\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", script], env=python_subprocess_env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_metrics_after_a_run_count_ray_waits_spills_and_retries(stub_broker, start_worker, ray_local, tmp_path) -> None:
    # Given the three middleware on a broker, and an actor that fails once, then returns a large result from Ray
    import dramatiq
    from dramatiq.results.backends import StubBackend

    from dramatiq_ray import FilesystemStore, RayExecutionMiddleware, Results, Retries, current_message

    stub_broker.add_middleware(Results(backend=StubBackend(), store=FilesystemStore(tmp_path), max_inline_bytes=100))
    stub_broker.add_middleware(Retries(max_attempts=2, backoff=0))
    stub_broker.add_middleware(RayExecutionMiddleware())

    @dramatiq.actor(broker=stub_broker, store_results=True)
    def metrics_e2e() -> str:
        message = current_message()
        if message is None or not message.options.get("retries"):
            raise KeyError("first attempt fails")
        return "m" * 1000

    before = {
        "wait": sample("dramatiq_ray_task_wait_seconds_count", actor_name="metrics_e2e"),
        "spilled": sample("dramatiq_ray_results_spilled_total", store="FilesystemStore"),
        "retries": sample("dramatiq_ray_retries_total", actor_name="metrics_e2e", exception="KeyError"),
        "hydrations": sample("dramatiq_ray_hydrations_total", store="FilesystemStore"),
    }
    start_worker(stub_broker)
    # When it runs to the end and its result is read
    assert metrics_e2e.send().get_result(block=True, timeout=60_000) == "m" * 1000
    # Then both attempts were timed, one spill, one retry and one hydration were counted
    assert sample("dramatiq_ray_task_wait_seconds_count", actor_name="metrics_e2e") == before["wait"] + 2
    assert sample("dramatiq_ray_results_spilled_total", store="FilesystemStore") == before["spilled"] + 1
    assert sample("dramatiq_ray_retries_total", actor_name="metrics_e2e", exception="KeyError") == before["retries"] + 1
    assert sample("dramatiq_ray_hydrations_total", store="FilesystemStore") == before["hydrations"] + 1
