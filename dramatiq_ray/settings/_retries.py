"""Settings of the retries area: attempts, backoff and the exception denylist."""

from __future__ import annotations

import re
from typing import Any

from ._common import WEEK, check_number

_DOTTED_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def validate(values: dict[str, Any], problems: list[str]) -> None:
    check_number("DEFAULT_CONCURRENCY", values["DEFAULT_CONCURRENCY"], problems, minimum=1, integer=True)
    check_number("MAX_TASK_ATTEMPTS", values["MAX_TASK_ATTEMPTS"], problems, minimum=1, integer=True)
    check_number("RETRY_BACKOFF_SECONDS", values["RETRY_BACKOFF_SECONDS"], problems, minimum=0, maximum=WEEK)
    check_number("RETRY_MAX_BACKOFF_SECONDS", values["RETRY_MAX_BACKOFF_SECONDS"], problems, minimum=0, maximum=WEEK)
    denylist = values["RETRY_EXCEPTION_DENYLIST"]
    if not isinstance(denylist, list | tuple):
        problems.append(f"RETRY_EXCEPTION_DENYLIST must be a list of dotted exception names, not {denylist!r}.")
        return
    for entry in denylist:
        if not isinstance(entry, str) or not _DOTTED_NAME.match(entry):
            problems.append(
                f"RETRY_EXCEPTION_DENYLIST entry {entry!r} is not a dotted exception name "
                "(like 'ValueError' or 'myapp.errors.PermanentError')."
            )
