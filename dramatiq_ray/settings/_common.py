"""What every area's validation uses: number and string checks, URL redaction, package availability."""

from __future__ import annotations

import importlib.util
from typing import Any

#: Dramatiq caps retry delays at 7 days.
WEEK = 7 * 24 * 3600


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_number(
    name: str,
    value: Any,
    problems: list[str],
    *,
    minimum: float,
    maximum: float | None = None,
    integer: bool = False,
) -> None:
    kind = "an integer" if integer else "a number"
    if (integer and (not isinstance(value, int) or isinstance(value, bool))) or not is_number(value):
        problems.append(f"{name} must be {kind}, not {type(value).__name__} {value!r}.")
    elif value < minimum:
        problems.append(f"{name} must be {kind} >= {minimum:g}, not {value!r}.")
    elif maximum is not None and value > maximum:
        problems.append(f"{name} must be {kind} <= {maximum:g}, not {value!r}.")


def check_optional_str(name: str, value: Any, problems: list[str]) -> None:
    if value is not None and not isinstance(value, str):
        problems.append(f"{name} must be a string or None, not {type(value).__name__} {value!r}.")


def redact_url(value: Any) -> Any:
    if isinstance(value, str) and "@" in value:
        scheme, _, rest = value.rpartition("://")
        return f"{scheme}://***@{rest.split('@', 1)[1]}" if scheme else "***@" + value.split("@", 1)[1]
    return value


def module_available(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False
