"""Where settings come from besides code: ``DRAMATIQ_RAY_<NAME>`` environment variables and a module attribute."""

from __future__ import annotations

import difflib
import importlib
import json
from collections.abc import Callable, Mapping
from typing import Any

from ..errors import ConfigurationError

ENV_PREFIX = "DRAMATIQ_RAY_"
SETTINGS_MODULE_VARIABLE = "DRAMATIQ_RAY_SETTINGS"


def _parse_int(text: str) -> int:
    return int(text.strip().replace("_", ""))


def _parse_number(text: str) -> float:
    number = float(text.strip().replace("_", ""))
    return int(number) if number.is_integer() else number


def _parse_optional_str(text: str) -> str | None:
    stripped = text.strip()
    return None if stripped == "" or stripped.lower() in ("none", "null") else stripped


def _parse_mapping(text: str) -> Any:
    return json.loads(text) if text.strip() else {}


def _parse_bool(text: str) -> Any:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("expected true or false")


def _parse_list(text: str) -> Any:
    stripped = text.strip()
    if stripped.startswith("["):
        return json.loads(stripped)
    return [item.strip() for item in stripped.split(",") if item.strip()]


_ENV_PARSERS: dict[str, Callable[[str], Any]] = {
    "RAY_ADDRESS": _parse_optional_str,
    "RAY_RUNTIME_ENV": _parse_mapping,
    "RUNNER": str.strip,
    "DEFAULT_CONCURRENCY": _parse_int,
    "MAX_TASK_ATTEMPTS": _parse_int,
    "RETRY_BACKOFF_SECONDS": _parse_number,
    "RETRY_MAX_BACKOFF_SECONDS": _parse_number,
    "RETRY_EXCEPTION_DENYLIST": _parse_list,
    "STUCK_TASK_TIMEOUT_SECONDS": _parse_number,
    "MAX_RESULT_SIZE_BYTES": _parse_int,
    "MAX_ARG_SIZE_BYTES": lambda text: None if _parse_optional_str(text) is None else _parse_int(text),
    "RESULT_TTL_SECONDS": _parse_number,
    "RESULT_STORAGE_BACKEND": lambda text: text.strip().lower(),
    "RESULT_ON_STORE_ERROR": lambda text: text.strip().lower(),
    "WEBHOOK_SECRETS": _parse_list,
    "WEBHOOK_ALLOW_HTTP": _parse_bool,
    "WEBHOOK_MAX_ATTEMPTS": _parse_int,
    "WEBHOOK_MAX_AGE_SECONDS": _parse_number,
    "WEBHOOK_PROGRESS": _parse_bool,
    "WEBHOOK_PROGRESS_EVERY_SECONDS": _parse_number,
    "RESULT_BACKEND": lambda text: None if _parse_optional_str(text) is None else text.strip().lower(),
}


def from_environment(environ: Mapping[str, str], names: tuple[str, ...], problems: list[str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for variable, text in environ.items():
        if not variable.startswith(ENV_PREFIX):
            continue
        name = variable[len(ENV_PREFIX) :]
        if name not in names:
            # Only names close to a setting are reported: other DRAMATIQ_RAY_* variables may belong to tooling.
            close = difflib.get_close_matches(name, names, n=1, cutoff=0.85)
            if close:
                problems.append(f"{variable} is not a setting; did you mean {ENV_PREFIX}{close[0]}?")
            continue
        parser = _ENV_PARSERS.get(name, _parse_optional_str)
        try:
            values[name] = parser(text)
        except ValueError as error:  # json.JSONDecodeError is a ValueError
            problems.append(f"{variable}={text!r} cannot be parsed: {error}")
    return values


def from_module(reference: str) -> Mapping[str, Any]:
    module_name, _, attribute = reference.partition(":")
    attribute = attribute or "DRAMATIQ_RAY"
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ConfigurationError(
            f"{SETTINGS_MODULE_VARIABLE}={reference!r}: module {module_name!r} cannot be imported ({error}). "
            "Set it to 'package.module:ATTRIBUTE'."
        ) from error
    value = getattr(module, attribute, None)
    if not isinstance(value, Mapping):
        raise ConfigurationError(
            f"{SETTINGS_MODULE_VARIABLE}={reference!r}: {module_name}.{attribute} must be a mapping of settings, "
            f"not {type(value).__name__}."
        )
    return value
