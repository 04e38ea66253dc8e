"""How an actor's exception crosses back to the worker (``dramatiq_ray.callpath.crossing``): one form, carried by
Ray's pickling (Ray tasks, replicas) or as data in a Ray job's outcome, and both carriers give the worker the same
exception. No Ray cluster: the carriers are driven as the runners drive them."""

from __future__ import annotations

import pickle
from typing import Any

import dramatiq
import pytest
from ray import cloudpickle

from dramatiq_ray import RemoteExceptionError
from dramatiq_ray.callpath.crossing import from_document, portable, received, to_document
from tests.test_execution_failures import CarriesALock, QuotaExceeded  # the same exceptions both ways


def by_ray(error: Exception) -> BaseException:
    """What the worker gets when Ray carries the body's exception (a Ray task, a replica)."""
    try:
        raise error
    except Exception as caught:
        sent = portable(caught, "act")
    back = pickle.loads(cloudpickle.dumps(sent))
    return back if isinstance(back, RemoteExceptionError) else received(back, "Traceback ...")


def by_job(error: Exception) -> BaseException:
    """What the worker gets when a Ray job's outcome carries it (through the broker's JSON encoder)."""
    encoder = dramatiq.JSONEncoder()
    try:
        raise error
    except Exception as caught:
        document = encoder.decode(encoder.encode(to_document(caught, encoder)))
    return from_document(document, "act", "the Ray job")


def seen(error: BaseException) -> tuple[Any, ...]:
    """What a user sees of an exception: its type (or the type name it stands for), args and attributes."""
    if isinstance(error, RemoteExceptionError):
        return (RemoteExceptionError, error.type_name)
    state = {key: value for key, value in vars(error).items() if key != "__notes__"}
    return (type(error), error.args, state)


@pytest.mark.parametrize(
    "make",
    [lambda: ValueError("bad value 7"), lambda: QuotaExceeded("ada", 3), lambda: CarriesALock("holding a lock")],
    ids=["plain", "custom-constructor", "unpicklable"],
)
def test_exception_crosses_alike_by_ray_and_by_a_jobs_outcome(make) -> None:
    assert seen(by_ray(make())) == seen(by_job(make()))


def test_exception_that_crossed_carries_the_remote_traceback_as_a_note() -> None:
    error = by_job(QuotaExceeded("ada", 3))

    assert isinstance(error, QuotaExceeded)
    assert (error.user, error.limit, str(error)) == ("ada", 3, "ada is over 3")
    assert any(note.startswith("Remote traceback (from the Ray job)") for note in error.__notes__)


def test_exception_that_cannot_cross_is_remote_exception_error_with_a_short_message_and_the_traceback() -> None:
    error = by_job(CarriesALock("x" * 100_000))

    assert isinstance(error, RemoteExceptionError)
    assert error.type_name.endswith("CarriesALock")
    assert "(100000 characters)" in str(error)
    assert "x" * 1000 not in str(error)
    assert "CarriesALock" in error.remote_traceback


def test_exception_whose_class_does_not_import_in_the_worker_is_remote_exception_error() -> None:
    document = {"type": "absent_module.Gone", "args": ["gone"], "state": {}, "message": "gone", "traceback": "tb"}

    error = from_document(document, "act", "the Ray job")

    assert isinstance(error, RemoteExceptionError)
    assert (error.type_name, error.remote_traceback) == ("absent_module.Gone", "tb")


def test_outcome_of_a_job_of_an_older_version_still_rebuilds_its_exception() -> None:
    document = {"type": "builtins.ValueError", "args": ["bad"], "message": "bad", "traceback": "tb"}

    error = from_document(document, "act", "the Ray job")

    assert type(error) is ValueError
    assert error.args == ("bad",)
