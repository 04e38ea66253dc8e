"""Checking ``ray_options`` without importing Ray, so mistakes surface when the actor is declared.

The rules are Ray's own (``ray/_common/ray_option_utils.py``, checked on Ray 2.40-2.60), at two levels: an
actor's options (and the middleware's ``default_options``) become the remote function's (``ray.remote``), a
message's are applied with ``RemoteFunction.options()``, which refuses more (``max_calls``) and, since they
travel in the broker message, can only be JSON. Ray validates again when the options are applied (and only Ray
checks what a ``runtime_env`` holds); both kinds of failure become :class:`~dramatiq_ray.errors.RayOptionsError`
naming the actor.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from typing import Any

from ..errors import RayOptionsError

#: Every option Ray's ``.options()`` accepts for a task (``ray/_common/ray_option_utils.py``, ``task_options``).
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
    }
)

#: The options a user is told about: Ray's private ones (``_labels``, ...) are accepted but not advertised.
PUBLIC_OPTION_NAMES = sorted(name for name in TASK_OPTION_NAMES if not name.startswith("_"))

#: Options Ray has that an actor body cannot use, with the reason.
_REFUSED = {
    "num_returns": "num_returns cannot be set: an actor body returns exactly one value",
    "_generator_backpressure_num_objects": "_generator_backpressure_num_objects cannot be set: an actor body is "
    "not a Ray generator",
    "_num_objects_per_yield": "_num_objects_per_yield cannot be set: an actor body is not a Ray generator",
}

_NUMBERS = (int, float)
_QUANTITIES = ("num_cpus", "num_gpus", "memory")
_RESERVED_RESOURCES = ("CPU", "GPU", "memory", "object_store_memory")
#: Ray keeps resource quantities in units of 1/10000.
_RESOURCE_UNIT = 10_000
_SCHEDULING_STRATEGY_NAMES = ("DEFAULT", "SPREAD")
_SCHEDULING_STRATEGY_TYPES = (
    "PlacementGroupSchedulingStrategy",
    "NodeAffinitySchedulingStrategy",
    "NodeLabelSchedulingStrategy",
)
# Ray's label grammar (ray/_private/label_utils.py).
_LABEL = r"([a-zA-Z0-9]([a-zA-Z0-9_.-]{0,61}[a-zA-Z0-9])?)"
_LABEL_PREFIX = re.compile(rf"^({_LABEL}?(\.{_LABEL}?)*)$")
_LABEL_SELECTOR = re.compile(rf"^!?(?:in)?\({_LABEL}(?:, ?{_LABEL})*\)$|^!?{_LABEL}$")


def check_options(options: object, *, actor_name: str, where: str) -> dict[str, Any]:
    """Check the ``ray_options`` of an actor (or the middleware's ``default_options``), which become the Ray
    remote function's own (``ray.remote(**options)``); return them as a dict.

    Parameters:
      options: the ``ray_options`` value to check.
      actor_name: the actor they belong to, named in the error.
      where: where they were given ("actor options", "middleware default_options").

    Raises:
      RayOptionsError: listing every option that is unknown or has a value Ray would refuse.
    """
    return _checked(options, actor_name=actor_name, where=where, per_message=False)


def check_message_options(
    options: object, *, actor_name: str, actor_options: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Check the ``ray_options`` of one message, which are applied with Ray's ``RemoteFunction.options()`` over
    the actor's; return them as a dict. They travel in the broker message, so only JSON values are possible, and
    ``.options()`` refuses more than ``ray.remote`` does (``max_calls``).

    Parameters:
      options: the message's ``ray_options``.
      actor_name: the actor the message is for, named in the error.
      actor_options: the actor's (already checked) ``ray_options``, when known, for the rules that apply to the
        combination.

    Raises:
      RayOptionsError: listing every option that is unknown or has a value Ray would refuse.
    """
    checked = _checked(options, actor_name=actor_name, where="message options", per_message=True)
    combined = {**(actor_options or {}), **checked}
    combination = _combination_problems(combined)
    if combination and not _combination_problems(checked):
        raise _error(actor_name, "message options", [f"{problem}, with the actor's" for problem in combination])
    return checked


def _checked(options: object, *, actor_name: str, where: str, per_message: bool) -> dict[str, Any]:
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise _error(actor_name, where, [f"ray_options must be a dict, not {type(options).__name__}"])
    problems: list[str] = []
    for name, value in options.items():
        if name in _REFUSED:
            problems.append(_REFUSED[name])
        elif name not in TASK_OPTION_NAMES:
            close = difflib.get_close_matches(str(name), PUBLIC_OPTION_NAMES, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}? " if close else ""
            problems.append(
                f"{name!r} is not a Ray task option ({hint}valid: {', '.join(sorted(PUBLIC_OPTION_NAMES))})"
            )
        elif (problem := _value_problem(name, value, per_message=per_message)) is not None:
            problems.append(problem)
    problems.extend(_combination_problems(options))
    if problems:
        raise _error(actor_name, where, problems)
    return dict(options)


def _value_problem(name: str, value: Any, *, per_message: bool) -> str | None:
    """What Ray says about one option's value (``task_options[name].validate`` and ``validate_task_options``)."""
    if name in _QUANTITIES:
        return None if value is None else _quantity_problem(name, value)
    if name == "object_store_memory":
        return None if value is None else "object_store_memory cannot be set for Ray tasks (only for Ray actors)"
    if name == "resources":
        return _resources_problem(value)
    if name in ("runtime_env", "_labels"):
        return None if value is None or isinstance(value, Mapping) else f"{name} must be a dict, not {_kind(value)}"
    if name == "max_calls":
        if per_message:
            return "max_calls cannot be set per message (Ray's .options() refuses it): set it on the actor"
        return _count_problem(name, value, lowest=0)
    if name == "max_retries":
        return _count_problem(name, value, lowest=-1)
    if name == "retry_exceptions":
        if isinstance(value, bool):
            return None
        if not per_message and isinstance(value, list | tuple) and all(_is_exception_type(x) for x in value):
            return None
        also = "" if per_message else " or a list of exception types"
        return f"retry_exceptions must be True, False{also}, not {value!r}"
    if name in ("accelerator_type", "name"):
        return None if value is None or isinstance(value, str) else f"{name} must be a string, not {value!r}"
    if name == "enable_task_events":
        return None if isinstance(value, bool) else f"enable_task_events must be True or False, not {value!r}"
    if name == "placement_group_capture_child_tasks":
        return None if value is None or isinstance(value, bool) else f"{name} must be True, False or None"
    if name == "placement_group_bundle_index":
        return None if _is_int(value) else f"placement_group_bundle_index must be an integer, not {value!r}"
    if name == "placement_group":
        if value is None or isinstance(value, str) or (not per_message and _is_ray_type(value, "PlacementGroup")):
            return None
        return f"placement_group must be a placement group, a name or None, not {_kind(value)}"
    if name == "scheduling_strategy":
        return _strategy_problem(value, per_message=per_message)
    if name == "label_selector":
        return _label_selector_problem(value)
    if name == "fallback_strategy":
        return _fallback_problem(value)
    return None


def _combination_problems(options: Mapping[str, Any]) -> list[str]:
    # Ray's _check_deprecate_placement_group.
    if options.get("placement_group", "default") not in ("default", None) and options.get("scheduling_strategy"):
        return ["placement_group and scheduling_strategy cannot both be set: use scheduling_strategy alone"]
    return []


def _quantity_problem(name: str, value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, _NUMBERS) or value < 0:
        return f"{name} must be a non-negative number, not {value!r}"
    if isinstance(value, float) and value != 0 and int(value * _RESOURCE_UNIT) == 0:
        return f"{name} cannot be more precise than 0.0001, not {value!r}"
    return None


def _resources_problem(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        return f"resources must be a dict of name to quantity, not {_kind(value)}"
    for key, quantity in value.items():
        if key in _RESERVED_RESOURCES:
            return f"resources cannot name {key!r}: use the num_cpus/num_gpus/memory options instead"
        if (problem := _quantity_problem(f"resource {key!r}", quantity)) is not None:
            return problem
    return None


def _count_problem(name: str, value: Any, *, lowest: int) -> str | None:
    if value is None or (_is_int(value) and value >= lowest):
        return None
    return f"{name} must be None or an integer >= {lowest}, not {value!r}"


def _strategy_problem(value: Any, *, per_message: bool) -> str | None:
    if value is None or value in _SCHEDULING_STRATEGY_NAMES:
        return None
    if not per_message and any(_is_ray_type(value, kind) for kind in _SCHEDULING_STRATEGY_TYPES):
        return None
    objects = "" if per_message else " or a scheduling strategy object"
    return f"scheduling_strategy must be 'DEFAULT', 'SPREAD'{objects}, not {value!r}"


def _label_selector_problem(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        return f"label_selector must be a dict of label to selector, not {_kind(value)}"
    for key, selector in value.items():
        prefix, _, label = str(key).rpartition("/")
        if (prefix and (len(prefix) > 253 or not _LABEL_PREFIX.fullmatch(prefix))) or (
            len(label) > 63 or not re.fullmatch(_LABEL, label)
        ):
            return f"label_selector key {key!r} is not a valid label name"
        if selector not in (None, "") and not (isinstance(selector, str) and _LABEL_SELECTOR.fullmatch(selector)):
            return f"label_selector value {selector!r} of {key!r} is not a valid selector (value, !value, in(a,b))"
    return None


def _fallback_problem(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, list):
        return f"fallback_strategy must be a list of dicts, not {_kind(value)}"
    for strategy in value:
        if not isinstance(strategy, Mapping) or not strategy or set(strategy) - {"label_selector"}:
            return "each fallback_strategy entry must be a non-empty dict with only 'label_selector'"
        if (problem := _label_selector_problem(strategy.get("label_selector"))) is not None:
            return problem
    return None


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_exception_type(value: object) -> bool:
    return isinstance(value, type) and issubclass(value, Exception)


def _is_ray_type(value: object, name: str) -> bool:
    """Whether ``value`` is an instance of Ray's class ``name``, told without importing Ray."""
    return any(cls.__name__ == name and cls.__module__.startswith("ray.") for cls in type(value).__mro__)


def _kind(value: object) -> str:
    return type(value).__name__


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
