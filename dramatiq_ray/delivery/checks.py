"""The checks of ``Webhooks``' constructor parameters: each says what is wrong and what it takes."""

from __future__ import annotations

from ..errors import ConfigurationError

__all__ = ["flag", "integer", "name", "share"]


def integer(parameter: str, value: object, *, minimum: int = 1) -> int:
    """``value`` when it is an integer (not a bool) of at least ``minimum``.

    Raises:
      ConfigurationError: it is not.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigurationError(f"Webhooks: {parameter} must be an integer >= {minimum}, got {value!r}.")
    return value


def flag(parameter: str, value: object) -> bool:
    """``value`` when it is ``True`` or ``False``.

    Raises:
      ConfigurationError: it is anything else.
    """
    if not isinstance(value, bool):
        raise ConfigurationError(f"Webhooks: {parameter} must be True or False, got {value!r}.")
    return value


def share(parameter: str, value: object) -> float:
    """``value`` as a float when it is a number in ``[0, 1]``.

    Raises:
      ConfigurationError: it is not.
    """
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ConfigurationError(f"Webhooks: {parameter} must be a number in [0, 1], got {value!r}.")
    return float(value)


def name(parameter: str, value: object) -> str:
    """``value`` when it is a non-empty string.

    Raises:
      ConfigurationError: it is not.
    """
    if not isinstance(value, str) or not value:
        raise ConfigurationError(f"Webhooks: {parameter} must be a non-empty string, got {value!r}.")
    return value
