"""Attaching to Ray: where the address comes from, the shared head under the CLI, and never stopping a Ray this
process did not start."""

from __future__ import annotations

import pytest

from dramatiq_ray import ConfigurationError, RayExecutionMiddleware
from dramatiq_ray.execution.connection import RayRuntime
from dramatiq_ray.execution.local_head import run_shared_head, wait_for_shared_head


def test_explicit_address_wins_over_ray_address(monkeypatch) -> None:
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.9:6379")

    assert RayRuntime(address="10.0.0.5:6379").resolved_address() == "10.0.0.5:6379"


def test_ray_address_is_used_when_no_address_is_given(monkeypatch) -> None:
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.9:6379")

    assert RayRuntime().resolved_address() == "10.0.0.9:6379"


def test_no_address_anywhere_means_the_embedded_default(monkeypatch) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)

    assert RayRuntime().resolved_address() is None


def test_embedded_default_contributes_the_shared_head_fork(monkeypatch) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)

    assert RayExecutionMiddleware().forks == [run_shared_head]


def test_explicit_address_contributes_no_fork(monkeypatch) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)

    assert RayExecutionMiddleware(address="ray://head:10001").forks == []


def test_missing_shared_head_fails_with_a_hint() -> None:
    with pytest.raises(ConfigurationError, match="RAY_ADDRESS"):
        wait_for_shared_head(cli_pid=-1, timeout=0.3)


def test_runtime_reuses_a_ray_it_did_not_start_and_never_shuts_it_down(ray_local) -> None:
    # Given a Ray this process already runs (the test session's)
    runtime = RayRuntime(address="10.255.255.1:6379")

    # When the runtime attaches and detaches
    runtime.attach()
    owned = runtime.owned
    runtime.detach()

    # Then it used that Ray, without connecting elsewhere, and left it running
    assert not owned
    assert ray_local.is_initialized()


def test_attaching_twice_in_one_process_attaches_once(ray_local) -> None:
    runtime = RayRuntime()

    assert runtime.attach() == runtime.attach()


def test_lost_connection_leads_to_a_new_attachment(ray_local) -> None:
    runtime = RayRuntime()
    generation = runtime.attach()

    runtime.lost(generation)

    assert runtime.attach() == generation + 1
    assert ray_local.is_initialized()


IN_PROCESS_WORKER = """
import dramatiq, ray
from dramatiq.brokers.stub import StubBroker
from dramatiq_ray import RayExecutionMiddleware

broker = StubBroker()
broker.add_middleware(RayExecutionMiddleware(ray_init_kwargs={"num_cpus": 1, "include_dashboard": False}))

@dramatiq.actor(broker=broker)
def noop():
    pass

worker = dramatiq.Worker(broker, worker_threads=1)
worker.start()
noop.send()
broker.join(noop.queue_name, fail_fast=True)
started_here = ray.is_initialized()
worker.stop()
print(started_here, ray.is_initialized())
"""


def test_in_process_worker_starts_a_private_ray_and_shuts_it_down_at_worker_stop(python_subprocess_env) -> None:
    import subprocess
    import sys

    env = {key: value for key, value in python_subprocess_env.items() if key != "RAY_ADDRESS"}
    result = subprocess.run(
        [sys.executable, "-c", IN_PROCESS_WORKER], env=env, capture_output=True, text=True, timeout=240
    )

    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["True", "False"]


def test_free_port_never_hands_out_the_same_port_twice() -> None:
    # A Ray head is started with half a dozen ports picked one after another; a repeat makes the head refuse to
    # start ("used by other components"), which was seen when two probes in a row returned the same port.
    from dramatiq_ray.execution.local_head import free_port

    ports = [free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)


def test_ray_compat_workarounds_apply_only_on_the_ray_versions_they_were_checked_on() -> None:
    from dramatiq_ray.execution.ray_compat import CHECKED_ON, checked, ray_version

    low, high = CHECKED_ON
    assert checked(low) and checked(high)
    assert not checked((low[0], low[1] - 1)) and not checked((high[0], high[1] + 1))
    assert checked(ray_version()), "the installed Ray is outside the versions the workarounds were checked on"


def test_ray_compat_auth_reload_runs_on_a_checked_ray(ray_local) -> None:
    from dramatiq_ray.execution.ray_compat import reload_auth_config

    # Ray is imported (the session's local Ray), so its configuration can be read again
    assert reload_auth_config() is True


def test_ray_compat_auth_reload_on_an_unchecked_ray_only_warns(ray_local, caplog) -> None:
    from dramatiq_ray.execution.ray_compat import reload_auth_config

    assert reload_auth_config(version=(9, 0)) is False
    assert "outside the versions" in caplog.text
