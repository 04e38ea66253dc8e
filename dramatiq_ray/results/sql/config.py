"""The constructor arguments of :class:`~dramatiq_ray.SQLBackend` that are checked before anything connects, all
at once, so that one ``ConfigurationError`` lists every problem. The URL is checked by ``engine.py``."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["Redactor", "check_arguments"]

#: Redacts a message's arguments before they are recorded: ``redact(actor_name, args, kwargs) -> (args, kwargs)``.
Redactor = Callable[[str, Sequence[Any], Mapping[str, Any]], tuple[Sequence[Any], Mapping[str, Any]]]

_PREFIX = re.compile(r"^[a-z_][a-z0-9_]{0,29}$")


def check_arguments(
    table_prefix: object, record_args: object, redact: object, store_timeout: object, poll_cap: object
) -> list[str]:
    """The problems of these arguments, one sentence each (none: all valid)."""
    problems = []
    if not isinstance(table_prefix, str) or not _PREFIX.match(table_prefix):
        problems.append(
            f"table_prefix must be 1 to 30 lowercase letters, digits or underscores, starting with a letter or "
            f"underscore, got {table_prefix!r}."
        )
    if not isinstance(record_args, bool):
        problems.append(f"record_args must be True or False, got {record_args!r}.")
    if redact is not None and not callable(redact):
        problems.append(
            f"redact must be a function redact(actor_name, args, kwargs) -> (args, kwargs), got {redact!r}."
        )
    if redact is not None and record_args is False:
        problems.append("redact is only called when arguments are recorded: pass record_args=True too.")
    for name, value, least in (("store_timeout", store_timeout, 0), ("poll_cap", poll_cap, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            problems.append(f"{name} must be an integer number of milliseconds >= {least}, got {value!r}.")
    return problems
