"""Retries policy without a worker: configuration, option checks, delays and denylist matching."""

from __future__ import annotations

import random

import dramatiq
import pytest
from dramatiq.errors import Retry
from dramatiq.middleware import TimeLimitExceeded
from dramatiq.middleware.retries import DEFAULT_MAX_BACKOFF

from dramatiq_ray import (
    ConfigurationError,
    RayNodeDiedError,
    RayOutOfMemoryError,
    RaySystemError,
    RayWorkerCrashedError,
    RemoteExceptionError,
    Retries,
    RetryOptionsError,
)
from dramatiq_ray.execution.outcome import RAY_SYSTEM_FAILURE_NAMES


class PermanentError(Exception):
    pass


class NotFoundError(PermanentError):
    pass


def foreign_class(module: str, name: str) -> type[Exception]:
    """An exception class that claims to live in ``module`` (two modules defining the same class name)."""
    return type(name, (Exception,), {"__module__": module})


ALPHA_FOO = foreign_class("alpha.errors", "Foo")
BETA_FOO = foreign_class("beta.errors", "Foo")
PERMANENT = f"{__name__}.PermanentError"


# --- configuration -------------------------------------------------------------------------------------------


def test_retries_max_attempts_counts_the_first_run() -> None:
    retries = Retries(max_attempts=3)
    assert retries.max_retries == 2
    assert retries.max_attempts == 3


def test_retries_keeps_dramatiqs_defaults_when_nothing_is_given() -> None:
    retries = Retries()
    assert (retries.max_retries, retries.min_backoff, retries.max_backoff) == (20, 15_000, DEFAULT_MAX_BACKOFF)
    assert retries.backoff == 15_000


def test_retries_accepts_agreeing_max_attempts_and_max_retries() -> None:
    assert Retries(max_attempts=4, max_retries=3).max_retries == 3


def test_retries_rejects_disagreeing_max_attempts_and_max_retries() -> None:
    with pytest.raises(ConfigurationError, match="must equal max_retries \\+ 1"):
        Retries(max_attempts=3, max_retries=3)


def test_retries_max_retries_none_means_no_limit() -> None:
    retries = Retries(max_retries=None)
    assert retries.max_retries is None
    assert retries.max_attempts is None


@pytest.mark.parametrize(
    "options",
    [
        {"max_attempts": 0},
        {"max_attempts": True},
        {"max_retries": -1},
        {"backoff": -5},
        {"max_backoff": DEFAULT_MAX_BACKOFF + 1},
        {"backoff": 10, "min_backoff": 20},
        {"jitter": 1.5},
    ],
)
def test_retries_rejects_out_of_range_options(options: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        Retries(**options)  # type: ignore[arg-type]


def test_retries_zero_backoff_means_no_delay_unlike_dramatiqs_falsy_default() -> None:
    retries = Retries(backoff=0, jitter=0)
    assert retries.compute_delay(5, backoff=retries.backoff, max_backoff=retries.max_backoff, jitter=0) == 0


@pytest.mark.parametrize(
    ("entry", "hint"),
    [
        (42, "neither an exception class nor a dotted class name"),
        (object, "not an exception class"),
        ("not a name", "not a dotted class name"),
        ("PermanentError", "bare name but not a builtin exception"),
        ("", "not a dotted class name"),
    ],
)
def test_retries_rejects_denylist_entries_that_name_no_exception(entry: object, hint: str) -> None:
    with pytest.raises(ConfigurationError, match=hint):
        Retries(denylist=[entry])  # type: ignore[list-item]


def test_retries_rejects_a_denylist_that_is_a_single_entry_instead_of_a_list() -> None:
    with pytest.raises(ConfigurationError, match="Wrap a single entry in a list"):
        Retries(denylist="ValueError")


def test_retries_denylist_stores_full_dotted_names() -> None:
    retries = Retries(denylist=[ValueError, "KeyError", PermanentError, "myapp.errors.Gone"])
    assert retries.denylist == ("builtins.ValueError", "builtins.KeyError", PERMANENT, "myapp.errors.Gone")


# --- delays --------------------------------------------------------------------------------------------------


def delays(attempt: int, *, samples: int = 2000, jitter: float = 0.5, **limits: int) -> list[int]:
    retries = Retries(rng=random.Random(1234))
    backoff = limits.get("backoff", 1_000)
    max_backoff = limits.get("max_backoff", 3_600_000)
    return [
        retries.compute_delay(attempt, backoff=backoff, max_backoff=max_backoff, jitter=jitter) for _ in range(samples)
    ]


@pytest.mark.parametrize(("attempt", "ceiling"), [(1, 1_000), (2, 2_000), (3, 4_000), (6, 32_000)])
def test_retries_delay_doubles_per_attempt_within_the_jitter_range(attempt: int, ceiling: int) -> None:
    # Given backoff=1 s and the default jitter of 0.5, When many delays are drawn
    drawn = delays(attempt)
    # Then every delay lies in [ceiling / 2, ceiling] and the draws spread over that range
    assert all(ceiling // 2 <= delay <= ceiling for delay in drawn)
    assert min(drawn) < ceiling * 0.55
    assert max(drawn) > ceiling * 0.95


def test_retries_delay_is_capped_at_max_backoff() -> None:
    drawn = delays(30, max_backoff=60_000)
    assert all(30_000 <= delay <= 60_000 for delay in drawn)


def test_retries_delay_without_jitter_is_exact() -> None:
    assert set(delays(4, samples=50, jitter=0)) == {8_000}


def test_retries_full_jitter_spreads_delays_down_to_zero() -> None:
    drawn = delays(1, jitter=1.0)
    assert all(0 <= delay <= 1_000 for delay in drawn)
    assert min(drawn) < 50


def test_retries_delay_never_exceeds_the_brokers_seven_day_limit() -> None:
    drawn = delays(200, samples=10, jitter=0, backoff=DEFAULT_MAX_BACKOFF, max_backoff=DEFAULT_MAX_BACKOFF)
    assert drawn == [DEFAULT_MAX_BACKOFF] * 10


def test_retries_same_seed_gives_same_delays() -> None:
    assert delays(3, samples=20) == delays(3, samples=20)


# --- denylist matching ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("denylist", "exception", "entry"),
    [
        ([PermanentError], PermanentError("x"), PERMANENT),
        ([PERMANENT], PermanentError("x"), PERMANENT),
        ([PermanentError], NotFoundError("subclass"), PERMANENT),
        (["ValueError"], ValueError("bare builtin"), "builtins.ValueError"),
        ([ValueError], UnicodeDecodeError("utf-8", b"", 0, 1, "builtin subclass"), "builtins.ValueError"),
        (["alpha.errors.Foo"], ALPHA_FOO("x"), "alpha.errors.Foo"),
    ],
)
def test_retries_denylist_matches_class_name_subclass_and_bare_builtin(
    denylist: list[object], exception: BaseException, entry: str
) -> None:
    assert Retries(denylist=denylist).denied_by(exception) == entry  # type: ignore[arg-type]


def test_retries_denylist_does_not_match_a_same_named_class_from_another_module() -> None:
    retries = Retries(denylist=["alpha.errors.Foo"])
    assert retries.denied_by(BETA_FOO("same name, other module")) is None


def test_retries_denylist_does_not_match_a_base_class_of_the_denied_one() -> None:
    assert Retries(denylist=[NotFoundError]).denied_by(PermanentError("base")) is None


def test_retries_extra_entries_add_to_the_middleware_denylist() -> None:
    retries = Retries(denylist=[KeyError])
    assert retries.denied_by(PermanentError("x"), [PERMANENT]) == PERMANENT
    assert retries.denied_by(KeyError("x"), [PERMANENT]) == "builtins.KeyError"


def test_retries_never_denies_an_explicit_retry() -> None:
    assert Retries(denylist=[Exception]).denied_by(Retry(delay=5)) is None


@pytest.mark.parametrize(
    "failure",
    [RayWorkerCrashedError("worker died"), RayNodeDiedError("node died"), RayOutOfMemoryError("oom")],
)
def test_retries_ray_system_failures_stay_retryable_when_a_broad_class_is_denied(failure: RaySystemError) -> None:
    retries = Retries(denylist=[Exception, "dramatiq.errors.DramatiqError", "dramatiq_ray.errors.RayExecutionError"])
    assert retries.denied_by(failure) is None


def test_retries_ray_system_failure_is_denied_when_its_own_class_is_listed() -> None:
    retries = Retries(denylist=[RayOutOfMemoryError])
    assert retries.denied_by(RayOutOfMemoryError("oom")) == "dramatiq_ray.errors.RayOutOfMemoryError"
    assert retries.denied_by(RayNodeDiedError("node died")) is None


def test_retries_rays_own_system_exceptions_stay_retryable_when_exception_is_denied() -> None:
    from ray.exceptions import NodeDiedError, OwnerDiedError, WorkerCrashedError

    retries = Retries(denylist=[Exception])
    assert retries.denied_by(WorkerCrashedError()) is None
    assert retries.denied_by(NodeDiedError("node-1")) is None
    assert retries.denied_by(OwnerDiedError("0" * 56, "", "")) is None


@pytest.mark.parametrize("name", sorted(RAY_SYSTEM_FAILURE_NAMES))
def test_retries_every_listed_ray_system_failure_is_denied_only_by_its_own_name(name: str) -> None:
    # Given a class standing in for each Ray failure of the execution's list (Ray itself is not imported)
    module, _, class_name = name.rpartition(".")
    failure = foreign_class(module, class_name)("ray failed")
    # Then a broad entry does not deny it, and its own name does
    assert Retries(denylist=[Exception]).denied_by(failure) is None
    assert Retries(denylist=[name]).denied_by(failure) == name


def test_retries_matches_an_exception_from_a_ray_task_on_its_original_type() -> None:
    from ray.exceptions import RayTaskError

    # Given the wrapper ray.get raises for an actor body's NotFoundError
    wrapped = RayTaskError("fetch", "Traceback ...", NotFoundError("gone")).as_instanceof_cause()
    assert isinstance(wrapped, RayTaskError)
    # Then the denylist sees the original exception and its bases
    assert Retries(denylist=[PermanentError]).denied_by(wrapped) == PERMANENT
    assert Retries(denylist=["KeyError"]).denied_by(wrapped) is None


def test_retries_matches_a_plain_ray_task_error_on_its_cause() -> None:
    from ray.exceptions import RayTaskError

    # Given a RayTaskError that is not also an instance of its cause's class (Ray could not build the dual class)
    wrapped = RayTaskError("fetch", "Traceback ...", NotFoundError("gone"))
    assert not isinstance(wrapped, PermanentError)
    # Then it is matched on the cause
    assert Retries(denylist=[PermanentError]).denied_by(wrapped) == PERMANENT


def test_retries_matches_an_unpicklable_remote_exception_by_its_type_name() -> None:
    remote = RemoteExceptionError("did not pickle", type_name="myapp.errors.Gone", remote_traceback="...")
    assert Retries(denylist=["myapp.errors.Gone"]).denied_by(remote) == "myapp.errors.Gone"
    assert Retries(denylist=["other.errors.Gone"]).denied_by(remote) is None


def test_retries_time_limit_keeps_dramatiqs_semantics_when_exception_is_denied() -> None:
    # TimeLimitExceeded is not an Exception in Dramatiq: a time limit is retried like any other failure.
    assert Retries(denylist=[Exception]).denied_by(TimeLimitExceeded()) is None
    assert Retries(denylist=[TimeLimitExceeded]).denied_by(TimeLimitExceeded()) is not None


# --- actor and message options -------------------------------------------------------------------------------


def test_retries_adds_its_options_to_the_brokers_actor_options(stub_broker: dramatiq.Broker) -> None:
    stub_broker.add_middleware(Retries())
    assert {"max_attempts", "backoff", "retry_jitter", "retry_denylist", "throws", "on_retry_exhausted"} <= (
        stub_broker.actor_options
    )


@pytest.mark.parametrize(
    "options",
    [
        {"retry_denylist": [42]},
        {"retry_denylist": ["PermanentError"]},
        {"max_attempts": 0},
        {"max_attempts": 2, "max_retries": 5},
        {"retry_jitter": -0.1},
    ],
)
def test_retries_rejects_invalid_actor_options_at_declaration(
    stub_broker: dramatiq.Broker, options: dict[str, object]
) -> None:
    stub_broker.add_middleware(Retries())
    with pytest.raises(RetryOptionsError):

        @dramatiq.actor(broker=stub_broker, **options)
        def misconfigured() -> None:
            pass

    assert "misconfigured" not in stub_broker.actors


def test_retries_actor_denylist_classes_become_dotted_names(stub_broker: dramatiq.Broker) -> None:
    stub_broker.add_middleware(Retries())

    @dramatiq.actor(broker=stub_broker, retry_denylist=[PermanentError, "ValueError"])
    def fetch() -> None:
        pass

    assert fetch.options["retry_denylist"] == [PERMANENT, "builtins.ValueError"]


def test_retries_rejects_disagreeing_message_options_at_send(stub_broker: dramatiq.Broker) -> None:
    stub_broker.add_middleware(Retries())

    @dramatiq.actor(broker=stub_broker)
    def fetch() -> None:
        pass

    with pytest.raises(RetryOptionsError, match="disagree"):
        fetch.send_with_options(max_attempts=2, max_retries=4)
    assert stub_broker.queues[fetch.queue_name].qsize() == 0


def test_retries_message_denylist_classes_are_sent_as_dotted_names(stub_broker: dramatiq.Broker) -> None:
    stub_broker.add_middleware(Retries())

    @dramatiq.actor(broker=stub_broker)
    def fetch() -> None:
        pass

    message = fetch.send_with_options(retry_denylist=[PermanentError])
    assert message.options["retry_denylist"] == [PERMANENT]
