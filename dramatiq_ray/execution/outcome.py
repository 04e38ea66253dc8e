"""Turning what ``ray.get`` raises into what the actor would have raised had it run locally.

User exceptions come back as their own type and message with Ray's remote traceback as a note; an exception
that could not cross becomes :class:`RemoteExceptionError` (both as :mod:`dramatiq_ray.callpath.crossing` says);
Ray's own failures become one :class:`RaySystemError` subclass each, which the retry policy can tell apart.
"""

from __future__ import annotations

import re
from typing import Any, NoReturn

from .. import metrics
from ..callpath import logs
from ..callpath.crossing import not_crossed, received
from ..errors import (
    RayNodeDiedError,
    RayObjectLostError,
    RayOutOfMemoryError,
    RaySystemError,
    RayTaskCancelledError,
    RayUnavailableError,
    RayWorkerCrashedError,
    RemoteExceptionError,
)

#: Ray's exceptions for failures outside the actor's code, by dotted name (so Ray need not be imported to match
#: them), most specific first, each with the :class:`RaySystemError` subclass it becomes and what it means.
#: Subclasses (``ActorDiedError``, ``OwnerDiedError``, ...) match through their MRO. The retry policy's denylist
#: reads the same list.
RAY_SYSTEM_FAILURES: tuple[tuple[str, type[RaySystemError], str], ...] = (
    ("ray.exceptions.TaskCancelledError", RayTaskCancelledError, "The Ray task was cancelled"),
    ("ray.exceptions.OutOfMemoryError", RayOutOfMemoryError, "Ray killed the task because its node ran out of memory"),
    ("ray.exceptions.NodeDiedError", RayNodeDiedError, "The Ray node running the task died"),
    ("ray.exceptions.WorkerCrashedError", RayWorkerCrashedError, "The Ray worker process running the task died"),
    ("ray.exceptions.ObjectLostError", RayObjectLostError, "The task's result was lost before it could be read"),
    ("ray.exceptions.LocalRayletDiedError", RayUnavailableError, "The local Ray node (raylet) died"),
    ("ray.exceptions.RayActorError", RaySystemError, "A Ray actor the task depended on died"),
    ("ray.exceptions.RaySystemError", RayUnavailableError, "Ray failed"),
    ("builtins.ConnectionError", RayUnavailableError, "The connection to Ray was lost"),
    ("ray.exceptions.RuntimeEnvSetupError", RaySystemError, "Ray could not set up the task's runtime_env"),
    ("ray.exceptions.TaskUnschedulableError", RaySystemError, "Ray cannot schedule the task"),
    ("ray.exceptions.ObjectStoreFullError", RaySystemError, "The Ray object store is full"),
    ("ray.exceptions.OutOfDiskError", RaySystemError, "The Ray node ran out of disk"),
)

#: The dotted names of :data:`RAY_SYSTEM_FAILURES`' Ray exceptions.
RAY_SYSTEM_FAILURE_NAMES = frozenset(name for name, _, _ in RAY_SYSTEM_FAILURES if name.startswith("ray."))


def _dotted(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


_UNSERIALIZABLE = re.compile(r"Exception (\S+) isn't serializable")


def translate(error: BaseException, *, actor_name: str) -> BaseException:
    """Return the exception to raise in the worker for an exception raised by ``ray.get``."""
    from ray import exceptions as rx

    if isinstance(error, rx.RayTaskError):
        return _task_error(error, actor_name=actor_name)
    if isinstance(error, rx.UnserializableException):
        return not_crossed(
            actor_name,
            "ray.exceptions.UnserializableException",
            str(error),
            str(error),
            "it does not unpickle in the worker",
        )
    where = f"while running actor {actor_name!r}"
    names = {_dotted(cls) for cls in type(error).__mro__}
    for ray_name, our_type, text in RAY_SYSTEM_FAILURES:
        if ray_name in names:
            translated = our_type(f"{text} {where}: {error}")
            translated.__cause__ = error
            return translated
    if isinstance(error, rx.RayError):
        translated = RaySystemError(f"Ray failed {where}: {type(error).__name__}: {error}")
        translated.__cause__ = error
        return translated
    return error


def raise_translated(error: BaseException, *, actor_name: str, message_id: str | None = None) -> NoReturn:
    """Raise what a Ray failure of ``actor_name``'s body means to Dramatiq (see :func:`translate`), counting a
    system failure in the metrics; the body's own exception is raised as itself. With ``message_id``, the log
    records the body's exception carries back (see :mod:`dramatiq_ray.callpath.logs`) are emitted first."""
    translated = translate(error, actor_name=actor_name)
    if message_id is not None:
        logs.emit_attached(translated, actor_name=actor_name, message_id=message_id)
    if isinstance(translated, RaySystemError):
        metrics.record_ray_system_failure(translated)
    if translated is error:
        raise error
    if isinstance(translated, RaySystemError):
        raise translated from error
    raise translated from None


def _task_error(error: Any, *, actor_name: str) -> BaseException:
    from ray import exceptions as rx

    remote_traceback = str(getattr(error, "traceback_str", "") or error)
    cause = getattr(error, "cause", None)
    unserializable = _UNSERIALIZABLE.search(str(cause)) if type(cause) is rx.RayError else None
    if cause is None or unserializable:
        type_name = unserializable.group(1) if unserializable else "an exception"
        return not_crossed(actor_name, type_name, str(cause or ""), remote_traceback, "it does not pickle")
    if isinstance(cause, rx.RayTaskError):
        return _task_error(cause, actor_name=actor_name)
    if isinstance(cause, BaseException):
        return received(cause, remote_traceback)
    return RemoteExceptionError(
        f"Actor {actor_name!r} raised something that is not an exception on Ray: {cause!r}",
        type_name=type(cause).__name__,
        remote_traceback=remote_traceback,
    )
