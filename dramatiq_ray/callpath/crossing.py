"""How an actor's exception crosses back to the worker from where its body ran (a Ray task, a replica, a Ray job).

One form: the exception's class, its ``args`` and its attributes, rebuilt on the worker's side without calling
its constructor (so an exception whose constructor takes other arguments than its message comes back whole). Two
carriers take that form:

- Ray pickles the exception itself (a Ray task or a replica), so Ray's own ``retry_exceptions`` sees it:
  :func:`portable` registers the form with ``copyreg`` for the exception's class, in the body's process, and
  :func:`received` adds the remote traceback in the worker.
- A Ray job's outcome document holds the form as data (:func:`to_document`, :func:`from_document`): the class by
  dotted name, ``args`` and attributes through the broker's encoder, never unpickled.

Either way, an exception whose form cannot make the trip (it does not pickle, its values do not encode, its class
does not import in the worker) becomes :class:`~dramatiq_ray.RemoteExceptionError` with its type name, the start
of its message and its traceback (:func:`not_crossed`), and an exception that crossed carries the remote
traceback as a note.
"""

from __future__ import annotations

import contextlib
import copyreg
import importlib
import pickle
import traceback
from typing import Any

from dramatiq.encoder import Encoder

from ..errors import RemoteExceptionError
from ..payloads._safe import shorten

__all__ = [
    "from_document",
    "not_crossed",
    "portable",
    "rebuild_exception",
    "received",
    "to_document",
    "type_name",
]

#: The start of the note an exception that crossed carries: its traceback where the body ran.
NOTE = "Remote traceback (from {where}):\n"


def type_name(error: BaseException) -> str:
    """The dotted name of an exception's class."""
    return f"{type(error).__module__}.{type(error).__qualname__}"


def rebuild_exception(cls: type[BaseException], args: tuple[Any, ...], state: dict[str, Any]) -> BaseException:
    """An instance of ``cls`` with ``args`` and attributes ``state``, made without calling its constructor."""
    error = cls.__new__(cls)
    error.args = args
    error.__dict__.update(state)
    return error


def not_crossed(actor_name: str, name: str, message: str, remote_traceback: str, why: str) -> RemoteExceptionError:
    """What the worker raises for an exception that could not come back as itself (``why`` says what stopped it);
    the message is cut short (it may quote the payload)."""
    return RemoteExceptionError(
        f"Actor {actor_name!r} raised {name} ({shorten(message)}), which could not be sent back to the worker as "
        f"itself: {why}. Make the exception's arguments and attributes plain values, or catch it in the actor and "
        "raise one that is.",
        type_name=name,
        remote_traceback=remote_traceback,
    )


def with_note(error: BaseException, remote_traceback: str, where: str) -> BaseException:
    """``error`` with its remote traceback as a note (once)."""
    start = NOTE.format(where=where)
    if not any(note.startswith(start) for note in getattr(error, "__notes__", ())):
        error.add_note(start + remote_traceback)
    return error


# --- carried by Ray (pickled) --------------------------------------------------------------------------------


def portable(error: Exception, actor_name: str) -> BaseException:
    """What a body run by Ray raises back: ``error`` itself when its form pickles (``copyreg`` is taught its
    class's form first, if pickling it as it is fails), else :func:`not_crossed`."""
    if _round_trips(error):
        return error
    copyreg.pickle(type(error), _reduce_exception)
    if _round_trips(error):
        return error
    return not_crossed(actor_name, type_name(error), str(error), traceback.format_exc(), "it does not pickle")


def received(error: BaseException, remote_traceback: str) -> BaseException:
    """The body's exception as Ray gave it back to the worker, with the remote traceback as a note."""
    return with_note(error, remote_traceback, "the Ray worker")


def _round_trips(error: BaseException) -> bool:
    from ray import cloudpickle

    try:
        pickle.loads(cloudpickle.dumps(error))  # type: ignore[no-untyped-call]
    except Exception:
        return False
    return True


def _reduce_exception(error: BaseException) -> tuple[Any, ...]:
    return (rebuild_exception, (type(error), error.args, dict(vars(error))))


# --- carried as data (a Ray job's outcome) -------------------------------------------------------------------


def to_document(error: Exception, encoder: Encoder) -> dict[str, Any]:
    """The exception's form as data ``encoder`` can encode: ``type`` (dotted class name), ``args`` and ``state``
    (its attributes; both ``None`` when they do not encode), ``message`` and ``traceback``."""
    args, state = list(error.args), dict(vars(error))
    try:
        encoder.encode({"args": args, "state": state})
    except Exception:
        args_or_none: list[Any] | None = None
        state_or_none: dict[str, Any] | None = None
    else:
        args_or_none, state_or_none = args, state
    return {
        "type": type_name(error),
        "args": args_or_none,
        "state": state_or_none,
        "message": str(error),
        "traceback": traceback.format_exc(),
    }


def from_document(document: dict[str, Any], actor_name: str, where: str) -> BaseException:
    """The exception a :func:`to_document` form describes, rebuilt in the worker (its class imported by name,
    never unpickled) with the remote traceback as a note; else :func:`not_crossed`."""
    name = str(document.get("type", "Exception"))
    message = str(document.get("message", ""))
    remote_traceback = str(document.get("traceback", ""))
    args, state = document.get("args"), document.get("state", {})  # no "state": a job of an older version
    if args is None or not isinstance(state, dict):
        return not_crossed(actor_name, name, message, remote_traceback, "its arguments or attributes do not encode")
    module, _, qualname = name.rpartition(".")
    cls: Any = None
    with contextlib.suppress(Exception):
        cls = importlib.import_module(module)
        for part in qualname.split("."):
            cls = getattr(cls, part)
    if not (isinstance(cls, type) and issubclass(cls, Exception)):
        return not_crossed(actor_name, name, message, remote_traceback, "its class does not import in the worker")
    return with_note(rebuild_exception(cls, tuple(args), state), remote_traceback, where)
