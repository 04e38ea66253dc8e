"""Rules behind ``dramatiq_ray.Retries``: checking retry options, and matching exceptions against a denylist.

Pure functions with no broker and no Ray import (Ray's system failures are matched by dotted name), so that they
can be tested and reused on their own.
"""

from __future__ import annotations

import builtins
import keyword
import logging
from collections.abc import Iterable, Iterator
from typing import Any, Final

from dramatiq.middleware.retries import DEFAULT_MAX_BACKOFF

from ..errors import ConfigurationError, RaySystemError, RemoteExceptionError, RetryOptionsError
from ..execution.outcome import RAY_SYSTEM_FAILURE_NAMES

logger = logging.getLogger("dramatiq_ray.retries")

_BUILTIN_EXCEPTIONS: Final = frozenset(
    name for name, value in vars(builtins).items() if isinstance(value, type) and issubclass(value, BaseException)
)


class Unset:
    def __repr__(self) -> str:
        return "<unset>"


UNSET: Final = Unset()


def dotted_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def normalize_entry(entry: object, where: str) -> str:
    """Turn one denylist entry into the full dotted name it matches, or explain why it cannot be one."""
    if isinstance(entry, type):
        if not issubclass(entry, BaseException):
            raise ConfigurationError(
                f"{where}: {entry!r} is a class but not an exception class. List exception classes or their "
                f"dotted names, e.g. 'myapp.errors.PermanentError'."
            )
        return dotted_name(entry)
    if isinstance(entry, str):
        name = entry.strip()
        parts = name.split(".")
        if not name or not all(part.isidentifier() and not keyword.iskeyword(part) for part in parts):
            raise ConfigurationError(
                f"{where}: {entry!r} is not a dotted class name. Write the full name, e.g. "
                f"'myapp.errors.PermanentError', or a builtin exception's bare name, e.g. 'ValueError'."
            )
        if len(parts) == 1:
            if name not in _BUILTIN_EXCEPTIONS:
                raise ConfigurationError(
                    f"{where}: {entry!r} is a bare name but not a builtin exception. Give the class's full dotted "
                    f"name (module and class, e.g. 'myapp.errors.{name}') so that it cannot match a class of the "
                    f"same name in another module."
                )
            return f"builtins.{name}"
        return name
    raise ConfigurationError(
        f"{where}: {entry!r} ({type(entry).__name__}) is neither an exception class nor a dotted class name. "
        f"List exception classes or strings such as 'myapp.errors.PermanentError' or 'ValueError'."
    )


def normalize_denylist(entries: object, where: str) -> tuple[str, ...]:
    if entries is None:
        return ()
    if isinstance(entries, (str, type)) or not isinstance(entries, Iterable):
        raise ConfigurationError(
            f"{where} must be a list of exception classes or dotted names, got {entries!r}. "
            f"Wrap a single entry in a list: [{entries!r}]."
        )
    return tuple(normalize_entry(entry, where) for entry in entries)


def check_count(value: object, name: str, where: str, *, minimum: int, allow_none: bool) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        allowed = f"an integer >= {minimum}" + (" or None (no limit)" if allow_none else "")
        raise ConfigurationError(f"{where}: {name} must be {allowed}, got {value!r}.")


def resolve_max_retries(options: dict[str, Any], where: str, *, strict: bool) -> int | Unset | None:
    """The ``max_retries`` one level of options asks for, from ``max_attempts`` and/or ``max_retries``."""
    has_attempts, has_retries = "max_attempts" in options, "max_retries" in options
    if not has_attempts and not has_retries:
        return UNSET
    if has_retries and strict:
        check_count(options["max_retries"], "max_retries", where, minimum=0, allow_none=True)
    if not has_attempts:
        value: int | None = options["max_retries"]
        return value
    attempts = options["max_attempts"]
    if strict:
        check_count(attempts, "max_attempts", where, minimum=1, allow_none=False)
        if has_retries and options["max_retries"] != attempts - 1:
            raise ConfigurationError(
                f"{where}: max_attempts={attempts} and max_retries={options['max_retries']!r} disagree "
                f"(max_attempts counts the first run, so it must equal max_retries + 1). Give only one of them."
            )
    return int(attempts) - 1


def check_backoff_options(options: dict[str, Any], where: str) -> None:
    for name in ("backoff", "min_backoff", "max_backoff"):
        if name in options:
            value = options[name]
            check_count(value, name, where, minimum=0, allow_none=False)
            if value > DEFAULT_MAX_BACKOFF:
                raise ConfigurationError(
                    f"{where}: {name}={value} ms is longer than the 7 days ({DEFAULT_MAX_BACKOFF} ms) brokers can "
                    f"delay a message by. Use a smaller value."
                )
    if "backoff" in options and "min_backoff" in options and options["backoff"] != options["min_backoff"]:
        raise ConfigurationError(
            f"{where}: backoff={options['backoff']} and min_backoff={options['min_backoff']} are two names for the "
            f"same setting and disagree. Give only one of them."
        )
    if "retry_jitter" in options:
        check_jitter(options["retry_jitter"], f"{where}: retry_jitter")


def check_jitter(value: object, where: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ConfigurationError(f"{where} must be a number between 0 (no jitter) and 1 (full jitter), got {value!r}.")


def original_exception(exception: BaseException) -> BaseException:
    """The actor's own exception: Ray's ``RayTaskError`` wrapper is replaced by its ``cause``."""
    while True:
        cause = getattr(exception, "cause", None)
        wrapped = any(dotted_name(cls) == "ray.exceptions.RayTaskError" for cls in type(exception).__mro__)
        if not (wrapped and isinstance(cause, BaseException)) or cause is exception:
            return exception
        exception = cause


def is_system_failure_class(cls: type) -> bool:
    """Ours (:class:`RaySystemError`) or one of Ray's system failures, matched by name through the MRO."""
    return issubclass(cls, RaySystemError) or any(dotted_name(base) in RAY_SYSTEM_FAILURE_NAMES for base in cls.__mro__)


def candidate_names(exception: BaseException) -> Iterator[str]:
    """Dotted names a denylist entry may match, most specific first."""
    classes = type(exception).__mro__
    if is_system_failure_class(type(exception)):
        # A system failure is denied only by an entry naming a system failure class, never by a broad one.
        classes = tuple(cls for cls in classes if is_system_failure_class(cls))
    elif isinstance(exception, RemoteExceptionError):
        yield exception.type_name
    for cls in classes:
        yield dotted_name(cls)


def type_name(exception: BaseException) -> str:
    if isinstance(exception, RemoteExceptionError):
        return exception.type_name
    return dotted_name(type(exception))


# --- looking options up: message, then actor, then the middleware's default ------------------------------------


def lookup_max_retries(
    message_options: dict[str, Any], actor_options: dict[str, Any], default: int | None
) -> int | None:
    for where, options in (("message", message_options), ("actor", actor_options)):
        try:
            value = resolve_max_retries(options, where, strict=False)
        except (TypeError, ValueError):
            value = UNSET
        if not isinstance(value, Unset):
            return value
    return default


def option_denylist(message_options: dict[str, Any], actor_options: dict[str, Any]) -> list[str]:
    """The ``retry_denylist`` entries of an actor and a message (checked when they were declared and sent)."""
    entries: list[str] = []
    for options in (actor_options, message_options):
        listed = options.get("retry_denylist")
        if listed:
            try:
                entries.extend(normalize_denylist(listed, "retry_denylist"))
            except ConfigurationError:
                logger.error("Ignoring an invalid retry_denylist: %r.", listed)
    return entries


def check_retry_options(options: dict[str, Any], where: str) -> None:
    """Check the retry options of an actor or a message, in place; denylist classes become dotted names, so a
    message encodes and matches like an actor's option.

    Raises:
      RetryOptionsError: an option is invalid (a ``MiddlewareError``, so Dramatiq does not swallow it in a hook).
    """
    try:
        resolve_max_retries(options, where, strict=True)
        check_backoff_options(options, where)
        if "retry_denylist" in options:
            options["retry_denylist"] = list(normalize_denylist(options["retry_denylist"], f"{where}: retry_denylist"))
    except ConfigurationError as error:
        raise RetryOptionsError(error.message) from None
