"""How failures come back from Ray: user exceptions as themselves, Ray's failures as distinct retryable types,
time limits and shutdowns that really stop the remote work, and bad options refused early."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import dramatiq
import psutil
import pytest
from dramatiq.middleware import ShutdownNotifications, TimeLimitExceeded

from dramatiq_ray import (
    ConfigurationError,
    RayExecutionMiddleware,
    RayNodeDiedError,
    RayObjectLostError,
    RayOptionsError,
    RayOutOfMemoryError,
    RaySystemError,
    RayTaskCancelledError,
    RayUnavailableError,
    RayWorkerCrashedError,
    RemoteExceptionError,
)
from dramatiq_ray.execution.outcome import translate
from tests._services import wait_until

JOIN_TIMEOUT_MS = 120_000


class QuotaExceeded(Exception):
    """A user exception defined in an importable module, with a custom constructor."""

    def __init__(self, user: str, limit: int) -> None:
        super().__init__(f"{user} is over {limit}")
        self.user = user
        self.limit = limit


class CarriesALock(Exception):
    """An exception that cannot be pickled: one of its attributes is a lock."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.lock = threading.Lock()


@pytest.fixture
def broker(stub_broker: Any, ray_local: Any) -> Any:
    stub_broker.add_middleware(RayExecutionMiddleware())
    return stub_broker


def failure_of(broker: Any, actor: Any, *args: Any) -> BaseException:
    """Send one message to ``actor``, process it, and return the exception that failed it."""
    actor.send(*args)
    with pytest.raises(BaseException) as caught:
        broker.join(actor.queue_name, fail_fast=True, timeout=JOIN_TIMEOUT_MS)
    return caught.value


def remote_process_gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


# --- user exceptions -----------------------------------------------------------------------------------------


def test_user_exception_arrives_as_its_own_type_and_message_with_the_remote_traceback(broker, start_worker) -> None:
    @dramatiq.actor(broker=broker, max_retries=0)
    def fails(value: int) -> None:
        raise ValueError(f"bad value {value}")

    start_worker(broker)
    error = failure_of(broker, fails, 7)

    assert type(error) is ValueError
    assert str(error) == "bad value 7"
    assert any("Remote traceback" in note and "bad value 7" in note for note in error.__notes__)


def test_user_exception_with_custom_constructor_keeps_its_attributes(broker, start_worker) -> None:
    @dramatiq.actor(broker=broker, max_retries=0)
    def over_quota() -> None:
        raise QuotaExceeded("ada", 3)

    start_worker(broker)
    error = failure_of(broker, over_quota)

    assert type(error) is QuotaExceeded
    assert (error.user, error.limit, str(error)) == ("ada", 3, "ada is over 3")


def test_exception_that_cannot_cross_becomes_remote_exception_error_with_the_traceback(broker, start_worker) -> None:
    @dramatiq.actor(broker=broker, max_retries=0)
    def fails_badly() -> None:
        raise CarriesALock("holding a lock")

    start_worker(broker)
    error = failure_of(broker, fails_badly)

    assert isinstance(error, RemoteExceptionError)
    assert error.type_name.endswith("CarriesALock")
    assert "holding a lock" in error.remote_traceback
    assert "fails_badly" in error.remote_traceback


# --- Ray's own failures ------------------------------------------------------------------------------------


def test_crashed_ray_worker_fails_the_message_once_with_worker_crashed_error(broker, start_worker, tmp_path) -> None:
    # Given an actor whose Ray worker process dies, and no Ray retries asked for
    runs = tmp_path / "runs"

    @dramatiq.actor(broker=broker, max_retries=0)
    def crashes() -> None:
        with open(runs, "a") as file:
            file.write("run\n")
        os._exit(1)

    start_worker(broker)
    error = failure_of(broker, crashes)

    # Then the failure is a retryable Ray system error, and Ray did not run the body again by itself
    assert isinstance(error, RayWorkerCrashedError)
    assert isinstance(error, RaySystemError)
    assert runs.read_text().count("run") == 1


def test_ray_retries_run_when_the_actor_asks_for_them(broker, start_worker, tmp_path: Path) -> None:
    marker = tmp_path / "crashed-once"

    @dramatiq.actor(broker=broker, max_retries=0, ray_options={"max_retries": 1})
    def crashes_once() -> None:
        if not marker.exists():
            marker.write_text("crashed")
            os._exit(1)

    start_worker(broker)
    crashes_once.send()
    broker.join(crashes_once.queue_name, fail_fast=True, timeout=JOIN_TIMEOUT_MS)

    assert marker.exists()


@pytest.mark.parametrize(
    ("make_ray_error", "expected"),
    [
        (lambda rx: rx.TaskCancelledError(), RayTaskCancelledError),
        (lambda rx: rx.WorkerCrashedError(), RayWorkerCrashedError),
        (lambda rx: rx.NodeDiedError("node gone"), RayNodeDiedError),
        (lambda rx: rx.OutOfMemoryError("oom"), RayOutOfMemoryError),
        (lambda rx: rx.ObjectLostError("ab" * 14, None, ""), RayObjectLostError),
        (lambda rx: rx.OwnerDiedError("ab" * 14, None, ""), RayObjectLostError),
        (lambda rx: rx.LocalRayletDiedError(), RayUnavailableError),
    ],
)
def test_ray_system_failures_become_distinct_retryable_types(ray_local, make_ray_error, expected) -> None:
    # These failures are hard to provoke on one healthy node, so Ray's own exception objects are built here.
    ray_error = make_ray_error(ray_local.exceptions)

    translated = translate(ray_error, actor_name="train")

    assert type(translated) is expected
    assert isinstance(translated, RaySystemError)
    assert "train" in str(translated)
    assert translated.__cause__ is ray_error


# --- interrupts stop the remote work -------------------------------------------------------------------------


def test_time_limit_raises_time_limit_exceeded_and_kills_the_remote_process(broker, start_worker, tmp_path) -> None:
    pid_file = tmp_path / "pid"

    @dramatiq.actor(broker=broker, max_retries=0, time_limit=1_500)
    def sleeps() -> None:
        import time

        pid_file.write_text(str(os.getpid()))
        time.sleep(600)

    start_worker(broker)
    error = failure_of(broker, sleeps)

    assert isinstance(error, TimeLimitExceeded)
    remote_pid = int(pid_file.read_text())
    assert remote_pid != os.getpid()
    wait_until(lambda: remote_process_gone(remote_pid), timeout=60, what="the cancelled Ray worker to exit")


def test_worker_shutdown_cancels_the_remote_task(stub_broker, ray_local, start_worker, tmp_path) -> None:
    stub_broker.add_middleware(ShutdownNotifications())
    stub_broker.add_middleware(RayExecutionMiddleware())
    pid_file = tmp_path / "pid"

    @dramatiq.actor(broker=stub_broker, notify_shutdown=True)
    def sleeps() -> None:
        import time

        pid_file.write_text(str(os.getpid()))
        time.sleep(600)

    worker = start_worker(stub_broker)
    sleeps.send()
    remote_pid = int(wait_until(lambda: pid_file.exists() and pid_file.read_text(), timeout=60, what="the task"))

    worker.stop()

    wait_until(lambda: remote_process_gone(remote_pid), timeout=60, what="the cancelled Ray worker to exit")


# --- bad options are refused early ---------------------------------------------------------------------------


def test_unknown_ray_option_is_refused_at_declaration_naming_the_actor(broker) -> None:
    with pytest.raises(RayOptionsError, match=r"actor 'train'.*'num_cpu' is not a Ray task option"):

        @dramatiq.actor(broker=broker, ray_options={"num_cpu": 2})
        def train() -> None: ...

    assert "train" not in broker.actors


@pytest.mark.parametrize(
    "ray_options",
    [
        {"num_cpus": -1},
        {"memory": "2GB"},
        {"resources": {"CPU": 2}},
        {"num_returns": 2},
        ["num_cpus", 1],
        {"scheduling_strategy": "NOWHERE"},
    ],
)
def test_invalid_ray_option_values_are_refused_at_declaration(broker, ray_options) -> None:
    with pytest.raises(RayOptionsError, match="actor 'train'"):

        @dramatiq.actor(broker=broker, ray_options=ray_options)
        def train() -> None: ...


def test_non_boolean_ray_option_is_refused_at_declaration(broker) -> None:
    with pytest.raises(RayOptionsError, match="True or False"):

        @dramatiq.actor(broker=broker, ray="yes")
        def train() -> None: ...


def test_invalid_message_ray_options_are_refused_when_sending(broker) -> None:
    @dramatiq.actor(broker=broker)
    def train() -> None: ...

    with pytest.raises(RayOptionsError, match="message options of actor 'train'"):
        train.send_with_options(ray_options={"num_gpus": -2})


def test_option_that_ray_itself_refuses_fails_the_message_with_ray_options_error(broker, start_worker) -> None:
    # Only Ray checks what a runtime_env holds
    @dramatiq.actor(broker=broker, max_retries=0, ray_options={"runtime_env": {"pip": 5}})
    def train() -> None: ...

    start_worker(broker)
    error = failure_of(broker, train)

    assert isinstance(error, RayOptionsError)
    assert "train" in str(error)


def test_unknown_runner_is_refused_naming_the_runners() -> None:
    with pytest.raises(ConfigurationError, match="runner must be one of ray_core, ray_job, not 'ray_task'"):
        RayExecutionMiddleware(runner="ray_task")


@pytest.mark.parametrize("wait_slice", [0, -1, "0.5", 120])
def test_invalid_wait_slice_is_refused(wait_slice) -> None:
    with pytest.raises(ConfigurationError, match="wait_slice"):
        RayExecutionMiddleware(wait_slice=wait_slice)


def test_invalid_default_options_are_refused() -> None:
    with pytest.raises(RayOptionsError, match="default_options"):
        RayExecutionMiddleware(default_options={"gpus": 1})


def test_actor_that_cannot_be_pickled_by_value_fails_with_a_configuration_error(broker, start_worker) -> None:
    # Given an actor defined in a function (so shipped by value) whose body refers to a lock
    lock = threading.Lock()

    @dramatiq.actor(broker=broker, max_retries=0)
    def locked() -> None:
        with lock:
            pass

    start_worker(broker)
    error = failure_of(broker, locked)

    assert isinstance(error, ConfigurationError)
    assert "importable module" in str(error)


class PicklesWhileAvailable:
    """An argument whose pickling needs a service (here: the absence of ``unavailable``), as a lazy value or a
    client may; it fails with the TypeError Ray turns into "Could not serialize the argument"."""

    def __init__(self, unavailable: str) -> None:
        self.unavailable = unavailable

    def __reduce__(self) -> tuple[Any, ...]:
        if Path(self.unavailable).exists():
            raise TypeError("cannot pickle: the key service is unreachable")
        return (PicklesWhileAvailable, (self.unavailable,))


@pytest.fixture
def pickle_encoder() -> Any:
    """Messages encoded with Dramatiq's PickleEncoder, so an argument can be any picklable object."""
    previous = dramatiq.get_encoder()
    dramatiq.set_encoder(dramatiq.PickleEncoder())
    yield
    dramatiq.set_encoder(previous)


def test_argument_that_fails_to_serialize_fails_the_message_retryably(
    broker, start_worker, pickle_encoder, tmp_path: Path
) -> None:
    @dramatiq.actor(broker=broker, max_retries=0)
    def takes(value: Any) -> None: ...

    # Given a message whose argument pickled when it was sent, but not when the worker submits it to Ray
    unavailable = tmp_path / "unavailable"
    takes.send(PicklesWhileAvailable(str(unavailable)))
    unavailable.touch()

    start_worker(broker)
    with pytest.raises(BaseException) as caught:
        broker.join(takes.queue_name, fail_fast=True, timeout=JOIN_TIMEOUT_MS)

    # Then the message fails with a Ray system error, which the retry policy retries, not a configuration error
    assert isinstance(caught.value, RaySystemError)
    assert not isinstance(caught.value, ConfigurationError)
