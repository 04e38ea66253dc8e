"""The benchmarks' quick mode, run for real (Redis, a Ray cluster, moto, the GCS emulator, dramatiq workers), so
the harness never rots. Nothing here bounds a time: numbers are only checked to be numbers."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks.__main__ import CASES
from benchmarks._harness import CaseReport, NotAvailable, Target, describe_machine, measure_variant, percentile
from benchmarks._report import render_markdown
from tests._services import REPO_ROOT

REPO_DOCS = REPO_ROOT / "docs" / "benchmarks.md"


def _digest(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> dict[str, Any]:
    """One ``python -m benchmarks --quick`` run, with its report and docs page under a temporary directory."""
    root = tmp_path_factory.mktemp("bench")
    docs = root / "docs" / "benchmarks.md"
    repo_docs_before = _digest(REPO_DOCS)
    env = {**_env(), "REDIS_URL": redis_url}
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--out", str(root / "out"), "--docs", str(docs)],
        cwd=str(REPO_ROOT),
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-8000:]
    return {
        "report": json.loads((root / "out" / "report.json").read_text()),
        "docs": docs,
        "repo_docs_before": repo_docs_before,
    }


def _env() -> dict[str, str]:
    import os

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env.pop("RAY_ADDRESS", None)
    return env


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@pytest.mark.timeout(900)
def test_quick_run_reports_every_case_with_numeric_variants(quick_run: dict[str, Any]) -> None:
    report = quick_run["report"]
    assert [case["name"] for case in report["cases"]] == list(CASES)
    for case in report["cases"]:
        assert "error" not in case, case.get("error")
        assert case["variants"], f"{case['name']} measured nothing"
        for name, numbers in case["variants"].items():
            assert numbers and all(_is_number(value) for value in numbers.values()), (case["name"], name, numbers)


@pytest.mark.timeout(900)
def test_quick_run_measures_every_target_of_available_paths(quick_run: dict[str, Any]) -> None:
    # Given every module of ours the benchmarks measure imports in this checkout
    for module in ("dramatiq_ray.execution", "dramatiq_ray.results"):
        assert importlib.util.find_spec(module) is not None, f"{module} is missing"
    # Then no variant is reported "not available" and every target has a measured value, baseline and verdict
    for case in quick_run["report"]["cases"]:
        assert case["unavailable"] == {}, case["unavailable"]
        assert case["targets"], f"{case['name']} has no targets"
        for target in case["targets"]:
            assert _is_number(target["measured"]) and _is_number(target["baseline"]), target
            assert _is_number(target["ratio"]) and isinstance(target["passed"], bool), target


@pytest.mark.timeout(900)
def test_quick_run_measures_replicas_against_each_baseline(quick_run: dict[str, Any]) -> None:
    case = next(case for case in quick_run["report"]["cases"] if case["name"] == "replicas")
    variants = case["variants"]
    assert {
        "GPU tasks (ray_core)",
        "hand-written ActorPool",
        "replicas (ours)",
        "one message per call",
        "batched (ours)",
        "no-op, Ray tasks",
        "no-op, replicas",
        "first result after a worker restart, cold pool",
        "first result after a worker restart, warm pool (ours)",
    } <= set(variants)
    for name in ("hand-written ActorPool", "replicas (ours)"):
        assert _is_number(variants[name]["p50_ms_one_client"]), variants[name]
    targets = [target["name"] for target in case["targets"]]
    for expected in ("GPU tasks", "ActorPool, throughput", "ActorPool, p50 latency", "batching", "worker restart"):
        assert any(expected in name for name in targets), (expected, targets)


@pytest.mark.timeout(900)
def test_quick_run_describes_the_machine(quick_run: dict[str, Any]) -> None:
    machine = quick_run["report"]["machine"]
    assert machine["logical_cpus"] >= 1 and machine["memory_gib"] > 0
    assert machine["dramatiq"] and machine["ray"] and machine["python"]
    assert quick_run["report"]["mode"] == "quick"


@pytest.mark.timeout(900)
def test_quick_run_renders_markdown_with_a_table_to_the_given_path(quick_run: dict[str, Any]) -> None:
    text = quick_run["docs"].read_text()
    assert text.startswith("# Benchmarks")
    assert "| Case | Target | Measured | Baseline | Ratio | Goal | Result |" in text
    for case in quick_run["report"]["cases"]:
        assert f"## {case['title']}" in text


@pytest.mark.timeout(900)
def test_quick_run_renders_a_chart_per_case_next_to_the_page(quick_run: dict[str, Any]) -> None:
    if importlib.util.find_spec("matplotlib") is None:
        pytest.skip('matplotlib is not installed (pip install "dramatiq-ray[bench]"): charts are skipped')
    text = quick_run["docs"].read_text()
    for case in quick_run["report"]["cases"]:
        image = quick_run["docs"].parent / "img" / f"bench-{case['name']}.png"
        assert image.read_bytes().startswith(b"\x89PNG"), image
        assert f"(img/{image.name})" in text


@pytest.mark.timeout(900)
def test_quick_run_leaves_the_repository_docs_page_alone(quick_run: dict[str, Any]) -> None:
    assert _digest(REPO_DOCS) == quick_run["repo_docs_before"]


# --- the harness's arithmetic --------------------------------------------------------------------------------


def test_percentile_interpolates_between_ranks() -> None:
    assert percentile([4.0, 1.0, 3.0, 2.0], 50) == 2.5
    assert percentile([1.0, 2.0, 3.0], 99) == pytest.approx(2.98)
    assert math.isnan(percentile([], 50))


def test_target_passes_only_when_its_ratio_meets_the_goal_in_the_right_direction() -> None:
    assert Target(name="throughput", measured=90.0, baseline=100.0, goal=0.8, unit="/s").passed is True
    assert Target(name="throughput", measured=70.0, baseline=100.0, goal=0.8, unit="/s").passed is False
    latency = Target(name="p50", measured=12.0, baseline=10.0, goal=1.0, unit="ms", higher_is_better=False)
    assert latency.ratio == pytest.approx(1.2) and latency.passed is False


def test_target_without_a_measurement_is_neither_pass_nor_short() -> None:
    target = Target(name="throughput", measured=None, baseline=100.0, goal=0.8, unit="/s")
    assert target.ratio is None and target.passed is None


# --- paths that cannot be measured, and bad setups -----------------------------------------------------------


def test_variant_that_is_not_available_is_reported_with_its_reason(tmp_path: Path) -> None:
    # Given a case whose path of ours cannot be built in this checkout
    report = CaseReport(name="offload", title="Offload overhead", description="A no-op actor.")

    def missing() -> dict[str, float]:
        raise NotAvailable("dramatiq_ray.execution does not import: boom")

    # When it is measured and the page rendered
    numbers = measure_variant(report, "Ray offload (ours)", missing)
    page = tmp_path / "benchmarks.md"
    render_markdown(_report_of(report), page)
    # Then nothing is recorded as measured, and the page says why
    assert numbers is None and report.variants == {}
    assert report.unavailable == {"Ray offload (ours)": "dramatiq_ray.execution does not import: boom"}
    assert "**Ray offload (ours)**: not available (dramatiq_ray.execution does not import: boom)." in page.read_text()


def test_app_needing_ray_execution_is_not_available_when_the_module_does_not_import(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from benchmarks._app import AppConfig, build

    # Given dramatiq_ray.execution cannot be imported (None in sys.modules makes any import of it fail)
    monkeypatch.setitem(sys.modules, "dramatiq_ray.execution", None)
    config = AppConfig(redis_url="redis://127.0.0.1:6379/0", namespace="unused", queue="unused", execution="ray")
    # When the offload app is built, then the reason names the module
    with pytest.raises(NotAvailable, match=r"dramatiq_ray\.execution does not import"):
        build(config)


def test_benchmarks_refuse_to_start_without_redis_and_say_how_to_point_at_one(tmp_path: Path) -> None:
    # Given REDIS_URL names a port where nothing listens
    env = {**_env(), "REDIS_URL": "redis://127.0.0.1:1/0"}
    # When the benchmarks start
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--out", str(tmp_path), "--no-docs"],
        cwd=str(REPO_ROOT),
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    # Then they stop before starting anything, saying where they looked and what to set
    assert result.returncode != 0
    assert "Redis does not answer at redis://127.0.0.1:1/0" in result.stderr
    assert "set REDIS_URL" in result.stderr
    assert not (tmp_path / "report.json").exists()


def _report_of(case: CaseReport) -> dict[str, Any]:
    return {
        "mode": "quick",
        "started_at": "now",
        "duration_s": 0.0,
        "machine": describe_machine(),
        "cases": [case.to_json()],
    }
