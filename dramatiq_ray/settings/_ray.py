"""Settings of the Ray area: where bodies run. Each is checked by the function RayExecutionMiddleware's
constructor uses for the same parameter."""

from __future__ import annotations

from typing import Any

from ..execution import checks

#: Setting name -> the check of the middleware parameter it feeds.
_CHECKS = {
    "RAY_ADDRESS": checks.address_problem,
    "RUNNER": checks.runner_problem,
    "STUCK_TASK_TIMEOUT_SECONDS": checks.stuck_timeout_problem,
    "RAY_JOB_ADDRESS": checks.job_address_problem,
    "RAY_JOB_PYTHON": checks.job_python_problem,
    "RAY_LOG_LEVEL": checks.log_level_problem,
}


def validate(values: dict[str, Any], problems: list[str]) -> None:
    for name, check in _CHECKS.items():
        problem = check(values[name])
        if problem:
            problems.append(f"{name} {problem}.")
    if not isinstance(values["RAY_RUNTIME_ENV"], dict):
        problems.append(f"RAY_RUNTIME_ENV must be a mapping (a JSON object), not {values['RAY_RUNTIME_ENV']!r}.")
