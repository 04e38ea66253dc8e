"""One check per RayExecutionMiddleware setting, shared by its constructor and by the settings that feed it.

Each returns what is wrong with a value (a phrase without the setting's name, which the caller adds, since a
constructor names its parameter and the settings their upper-case names), or ``None`` when it is fine.
"""

from __future__ import annotations

import re

from ..callpath.logs import level_of
from .runners import RUNNERS

__all__ = [
    "address_problem",
    "job_address_problem",
    "job_python_problem",
    "log_level_problem",
    "runner_problem",
    "stuck_timeout_problem",
    "wait_slice_problem",
]

_HOST_PORT = re.compile(r"^[A-Za-z0-9_.\-\[\]:]+:\d{1,5}$")
_URL_ADDRESS = re.compile(r"^(ray|https?)://[^\s/]+(:\d{1,5})?/?$")
_HTTP_URL = re.compile(r"^https?://\S+$")


def address_problem(value: object) -> str | None:
    """A Ray address: ``None``, ``"auto"``, ``"local"``, ``"host:port"``, ``"ray://host:port"`` or an http(s) one."""
    if value is None:
        return None
    if isinstance(value, str) and (value in ("auto", "local") or _HOST_PORT.match(value) or _URL_ADDRESS.match(value)):
        return None
    return f"must be None, 'auto', 'local', 'host:port' or 'ray://host:port', not {value!r}"


def job_address_problem(value: object) -> str | None:
    """The Ray Jobs API address: ``None`` or an ``http(s)://`` URL."""
    if value is None or (isinstance(value, str) and _HTTP_URL.match(value)):
        return None
    return f"must be None or an http(s):// address, not {value!r}"


def job_python_problem(value: object) -> str | None:
    """The Python executable of ray_job entrypoints: ``None`` or a non-empty string."""
    if value is None or (isinstance(value, str) and value.strip()):
        return None
    return f"must be None or the path of a Python executable, not {value!r}"


def runner_problem(value: object) -> str | None:
    """How bodies run: one of :data:`~dramatiq_ray.execution.runners.RUNNERS`."""
    return None if value in RUNNERS else f"must be one of {', '.join(RUNNERS)}, not {value!r}"


def stuck_timeout_problem(value: object) -> str | None:
    """Seconds without progress before a ray_job is stopped: a number > 0."""
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return None
    return f"must be a number of seconds > 0, not {value!r}"


def wait_slice_problem(value: object) -> str | None:
    """How long each wait blocks, in seconds: a number in (0, 60]."""
    if isinstance(value, int | float) and not isinstance(value, bool) and 0 < value <= 60:
        return None
    return f"must be a number of seconds in (0, 60], not {value!r}"


def log_level_problem(value: object) -> str | None:
    """The level of a body's log records that come back from Ray: ``None``, a number or a level name."""
    if value is None:
        return None
    try:
        level_of(value)  # type: ignore[arg-type]
    except ValueError:
        return f"must be None, a logging level number or a level name such as 'INFO', not {value!r}"
    return None
