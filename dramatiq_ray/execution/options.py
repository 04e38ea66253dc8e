"""Checking ``ray_options`` without importing Ray, so mistakes surface when the actor is declared.

The names are those Ray 2.x accepts in ``RemoteFunction.options``. Ray validates again when the options are
applied; both kinds of failure become :class:`~dramatiq_ray.errors.RayOptionsError` naming the actor.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

from ..errors import RayOptionsError

#: Every option Ray's ``.options()`` accepts for a task.
TASK_OPTION_NAMES = frozenset(
    {
        "accelerator_type",
        "enable_task_events",
        "fallback_strategy",
        "label_selector",
        "max_calls",
        "max_retries",
        "memory",
        "name",
        "num_cpus",
        "num_gpus",
        "object_store_memory",
        "placement_group",
        "placement_group_bundle_index",
        "placement_group_capture_child_tasks",
        "resources",
        "retry_exceptions",
        "runtime_env",
        "scheduling_strategy",
        "_labels",
        "_generator_backpressure_num_objects",
        "_num_objects_per_yield",
    }
)

#: The options a user is told about: Ray's private ones (``_labels``, ...) are accepted but not advertised.
PUBLIC_OPTION_NAMES = sorted(name for name in TASK_OPTION_NAMES if not name.startswith("_"))

_NUMBERS = (int, float)
_QUANTITIES = ("num_cpus", "num_gpus", "memory", "object_store_memory")
_RESERVED_RESOURCES = ("CPU", "GPU", "memory", "object_store_memory")


def check_options(options: object, *, actor_name: str, where: str) -> dict[str, Any]:
    """Return ``options`` as a dict, or raise ``RayOptionsError`` listing every problem found.

    Parameters:
      options: the ``ray_options`` value to check.
      actor_name: the actor they belong to, named in the error.
      where: where they were given ("actor options", "message options", "middleware default_options").

    Raises:
      RayOptionsError: when an option is unknown or has a value Ray would refuse.
    """
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise _error(actor_name, where, [f"ray_options must be a dict, not {type(options).__name__}"])
    problems: list[str] = []
    for name, value in options.items():
        if name == "num_returns":
            problems.append("num_returns cannot be set: an actor body returns exactly one value")
        elif name not in TASK_OPTION_NAMES:
            close = difflib.get_close_matches(str(name), PUBLIC_OPTION_NAMES, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}? " if close else ""
            problems.append(
                f"{name!r} is not a Ray task option ({hint}valid: {', '.join(sorted(PUBLIC_OPTION_NAMES))})"
            )
        elif name in _QUANTITIES:
            if value is not None and (isinstance(value, bool) or not isinstance(value, _NUMBERS) or value < 0):
                problems.append(f"{name} must be a non-negative number, not {value!r}")
        elif name == "resources":
            problems.extend(_resource_problems(value))
        elif name == "runtime_env":
            if value is not None and not isinstance(value, Mapping):
                problems.append(f"runtime_env must be a dict, not {type(value).__name__}")
        elif name in ("max_retries", "max_calls"):
            if isinstance(value, bool) or not isinstance(value, int) or value < -1:
                problems.append(f"{name} must be an integer >= -1, not {value!r}")
        elif name == "retry_exceptions":
            if not isinstance(value, bool | list | tuple):
                problems.append(f"retry_exceptions must be a bool or a list of exception types, not {value!r}")
        elif name in ("accelerator_type", "name") and value is not None and not isinstance(value, str):
            problems.append(f"{name} must be a string, not {value!r}")
    if problems:
        raise _error(actor_name, where, problems)
    return dict(options)


def _resource_problems(value: object) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, Mapping):
        return [f"resources must be a dict of name to quantity, not {type(value).__name__}"]
    problems = []
    for key, quantity in value.items():
        if key in _RESERVED_RESOURCES:
            problems.append(f"resources cannot name {key!r}: use the num_cpus/num_gpus/memory options instead")
        elif isinstance(quantity, bool) or not isinstance(quantity, _NUMBERS) or quantity < 0:
            problems.append(f"resource {key!r} must have a non-negative quantity, not {quantity!r}")
    return problems


def _error(actor_name: str, where: str, problems: list[str]) -> RayOptionsError:
    summary = "; ".join(problems)
    return RayOptionsError(f"Invalid ray_options in {where} of actor {actor_name!r}: {summary}.", problems)


def merge_runtime_envs(*envs: Mapping[str, Any] | None) -> dict[str, Any]:
    """Merge ``runtime_env`` dicts, later ones winning key by key, as Ray merges a job's and a task's:
    ``env_vars`` are merged variable by variable."""
    merged: dict[str, Any] = {}
    for env in envs:
        for key, value in (env or {}).items():
            if key == "env_vars" and isinstance(value, dict):
                merged["env_vars"] = {**merged.get("env_vars", {}), **value}
            else:
                merged[key] = value
    return merged
