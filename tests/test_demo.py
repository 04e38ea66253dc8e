"""The README's demo: runs on embedded defaults, and against a real Redis; exits 0 only when all went as expected."""

from __future__ import annotations

import subprocess
import sys


def run_demo(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dramatiq_ray.demo", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_demo_on_embedded_defaults_ends_every_message_as_expected(python_subprocess_env) -> None:
    result = run_demo(python_subprocess_env)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "All 12 messages ended as expected" in out
    assert "12/12 messages done" in out
    labels = ("add", "report", "flaky", "declined", "stuck")
    rows = {line.split("  ")[0]: line for line in out.splitlines() if line.startswith(labels)}
    assert "(spilled)" in rows["report (~5 MB)"]
    assert "failed: PermanentError" in rows["declined"]
    assert "failed: TimeLimitExceeded" in rows["stuck"]
    assert " 3 " in rows["flaky"]


def test_demo_runs_against_a_real_redis(python_subprocess_env, redis_url, redis_namespace) -> None:
    env = {**python_subprocess_env, "DRAMATIQ_RAY_DEMO_NAMESPACE": redis_namespace}
    result = run_demo(env, "--broker", redis_url, "--no-progress")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"broker {redis_url}" in result.stdout
    assert "All 12 messages ended as expected" in result.stdout
    assert "messages done" not in result.stdout


def test_demo_help_explains_the_options(python_subprocess_env) -> None:
    result = run_demo(python_subprocess_env, "--help")
    assert result.returncode == 0
    for option in ("--broker", "--store", "--threads", "--no-progress"):
        assert option in result.stdout
