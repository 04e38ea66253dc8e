"""Every example runs with its one command (``python -m examples.<name>``), says what happened, and exits 0 only on
success; without the services it needs, it says how to get them and exits 2."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests._services import REPO_ROOT, free_port

pytestmark = pytest.mark.cli

EXAMPLES = ("basic", "s3", "cluster", "pipelines", "arrays", "big_inputs", "webhooks", "inference", "steering")
#: The examples start Ray and dramatiq workers: generous, because a timeout here is a failure, not a bound.
RUN_TIMEOUT = 540


def run_example(name: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", f"examples.{name}"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )


def succeeded(result: subprocess.CompletedProcess[str]) -> str:
    """The example's output, after checking it exited 0 and stopped its workers cleanly."""
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "the workers exited with code 0." in result.stdout, output
    return result.stdout


@pytest.fixture
def example_env(python_subprocess_env: dict[str, str], redis_url: str, redis_namespace: str, tmp_path: Path) -> Any:
    return {
        **python_subprocess_env,
        "REDIS_URL": redis_url,
        "EXAMPLE_NAMESPACE": redis_namespace,
        "RESULTS_DIR": str(tmp_path / "results"),
    }


def blobs_in(directory: Path) -> list[Path]:
    return sorted(directory.rglob("*.json"))


@pytest.mark.timeout(RUN_TIMEOUT + 60)
def test_basic_example_runs_bodies_on_ray_and_spills_the_large_result_to_disk(example_env: Any, tmp_path: Path) -> None:
    out = succeeded(run_example("basic", example_env))

    assert "All results are as expected." in out
    assert "add(2, 3) = 5; the result was kept in Redis" in out
    ray_pids = re.findall(r"computed in Ray worker process (\d+) \(this sender is process (\d+)\)", out)
    assert len(ray_pids) == 2 and all(ray != sender for ray, sender in ray_pids), out
    assert "Redis holds only the pointer resultfs://sha256/" in out
    assert len(blobs_in(tmp_path / "results")) == 1


@pytest.mark.timeout(RUN_TIMEOUT + 60)
def test_s3_example_writes_the_large_result_to_the_bucket(example_env: Any, s3_server: Any, s3_bucket: str) -> None:
    env = {**example_env, "S3_BUCKET": s3_bucket, "S3_ENDPOINT_URL": s3_server.endpoint_url, "S3_PREFIX": "ex"}

    out = succeeded(run_example("s3", env))

    assert "The result is as expected." in out
    pointed = re.search(rf"Redis holds only the pointer s3://{s3_bucket}/(ex/\S+)", out)
    assert pointed, out
    listed = s3_server.client().list_objects_v2(Bucket=s3_bucket, Prefix="ex/")
    assert [item["Key"] for item in listed.get("Contents", [])] == [pointed.group(1)]


def test_s3_example_with_a_missing_bucket_says_how_to_create_it(example_env: Any, s3_server: Any) -> None:
    env = {**example_env, "S3_BUCKET": "no-such-bucket-here", "S3_ENDPOINT_URL": s3_server.endpoint_url}

    result = run_example("s3", env)

    assert result.returncode == 2, result.stdout + result.stderr
    assert "aws s3 mb s3://no-such-bucket-here" in result.stdout
    assert "Starting workers" not in result.stdout


@pytest.mark.timeout(RUN_TIMEOUT + 60)
def test_cluster_example_attaches_to_a_running_head_with_its_runtime_env(example_env: Any, ray_head: Any) -> None:
    # Given a Ray head started like `ray start --head`
    env = {**example_env, "RAY_ADDRESS": ray_head.address}

    # When the example runs against it
    out = succeeded(run_example("cluster", env))

    # Then both bodies ran on that cluster, with the runtime_env, and the cluster is left running
    assert len(re.findall(rf"ran on the Ray cluster at [0-9.]+:{ray_head.port},", out)) == 2, out
    assert out.count("EXAMPLE_GREETING='hello from the runtime_env'") == 2, out
    assert ray_head.proc.poll() is None


def test_cluster_example_without_a_cluster_says_how_to_start_one(example_env: Any) -> None:
    env = {**example_env, "RAY_ADDRESS": f"127.0.0.1:{free_port()}"}

    result = run_example("cluster", env)

    assert result.returncode == 2, result.stdout + result.stderr
    assert "ray start --head" in result.stdout
    assert "Starting workers" not in result.stdout


@pytest.mark.timeout(RUN_TIMEOUT + 60)
def test_pipelines_example_passes_large_results_between_steps_by_pointer(example_env: Any, tmp_path: Path) -> None:
    out = succeeded(run_example("pipelines", example_env))

    assert "All results are as expected" in out
    assert re.search(r"generate +result: spilled", out) and re.search(r"square +result: spilled", out), out
    assert re.search(r"summarize +result: inline", out), out
    assert "4 of 4 were spilled and read back" in out
    # generate's and square's lists and the four distinct tiles
    assert len(blobs_in(tmp_path / "results")) == 6


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_without_redis_says_how_to_get_one(example_env: Any, name: str) -> None:
    env = {**example_env, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}

    result = run_example(name, env)

    assert result.returncode == 2, result.stdout + result.stderr
    assert "Cannot reach Redis" in result.stdout and "set REDIS_URL" in result.stdout


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_readme_gives_its_one_command_and_its_settings(name: str) -> None:
    readme = (REPO_ROOT / "examples" / name / "README.md").read_text()
    tasks = (REPO_ROOT / "examples" / name / "tasks.py").read_text()

    assert f"python -m examples.{name}" in readme
    for variable in re.findall(r'^[A-Z_]+ = os\.environ\.get\("([A-Z0-9_]+)"', tasks, re.MULTILINE):
        assert variable in readme, f"examples/{name}/README.md does not mention {variable}"


@pytest.mark.timeout(RUN_TIMEOUT + 60)
def test_arrays_example_returns_numpy_arrays_computed_on_ray(example_env: Any, tmp_path: Path) -> None:
    out = succeeded(run_example("arrays", example_env))

    assert "All results were as expected." in out
    assert "simulate(512) = ndarray float64 (512, 512)" in out and "codec=npy" in out
    assert "'shape': [256, 256], 'dtype': 'float64'" in out
    assert "thumbnail(16) = ndarray uint8 (16, 16)" in out


@pytest.mark.timeout(RUN_TIMEOUT + 60)
def test_big_inputs_example_sends_arguments_by_reference_and_releases_them(example_env: Any, tmp_path: Path) -> None:
    out = succeeded(run_example("big_inputs", example_env))

    assert "All results were as expected." in out
    assert "first: 33554432 bytes" in out and "worker saw a reference" in out
    assert "small: 1024 bytes" in out and "worker saw the value inline" in out
    assert "Argument blobs left once every message is done: 0." in out


@pytest.mark.timeout(RUN_TIMEOUT + 60)
def test_inference_example_loads_its_model_once_per_replica(example_env: Any) -> None:
    out = succeeded(run_example("inference", example_env))

    assert "All answers are as expected." in out
    assert re.search(r"the model was loaded [12] time\(s\), not 40: once per replica", out), out


@pytest.mark.timeout(RUN_TIMEOUT + 60)
def test_webhooks_example_delivers_signed_webhooks_and_awaits_results_from_asyncio(example_env: Any) -> None:
    out = succeeded(run_example("webhooks", example_env))

    assert "All webhooks arrived, signed and as expected." in out
    assert "asyncio.gather over the 7 results: ['dict', 'dict', 'dict', 'dict', 'dict', 'list', 'ResultFailure']" in out
    assert "render(1) webhook: status=succeeded, result={'value': {'frame': 1, 'pixels': 1000}}" in out
    assert "report(5000) webhook: spilled, pointer=resultfs://sha256/" in out
    assert "divide(1, 0) webhook: status=failed after 2 attempts, error={'type': 'ZeroDivisionError'" in out
    assert "Verified POSTs: 8, refused: 0, duplicates: 0." in out


@pytest.mark.timeout(RUN_TIMEOUT + 60)
def test_steering_example_cancels_a_running_render_and_reports_progress_over_http(example_env: Any) -> None:
    out = succeeded(run_example("steering", example_env))

    assert "Cancel and progress behaved as expected." in out
    assert re.search(r"it ended cancelled at 'frame \d+ of 600'", out), out
    assert "409 {'cancel': 'finished'}" in out


@pytest.mark.timeout(RUN_TIMEOUT + 60)
def test_tracing_example_prints_the_bodys_log_records_then_the_trace_tree(python_subprocess_env: Any) -> None:
    result = run_example("tracing", python_subprocess_env)
    assert result.returncode == 0, result.stdout + result.stderr

    out = result.stdout
    assert re.search(r"\[examples\.tracing\.train\] \[INFO\] \[train \S+ on Ray pid \d+\] epoch 3: loss 0\.125", out)
    tree = out[out.index("span ") :].splitlines()
    names = [re.match(r"(.*?)\s+(PRODUCER|CONSUMER|INTERNAL) ", line).group(1) for line in tree[1:4]]  # type: ignore[union-attr]
    assert names == ["send default", "└─ process default", "   └─ run train"]
    assert "      └─ epoch 3" in tree[-1]
