"""Settings of the webhooks area: where results are delivered and with which secrets; secrets are checked by
the function ``Webhooks``, ``verify`` and ``sign`` use."""

from __future__ import annotations

from typing import Any

from ..delivery.http import url_problem
from ..delivery.signing import secret_problem
from ._common import WEEK, check_number, check_optional_str


def validate(values: dict[str, Any], problems: list[str]) -> None:
    secrets, url, allow_http = values["WEBHOOK_SECRETS"], values["WEBHOOK_URL"], values["WEBHOOK_ALLOW_HTTP"]
    if not isinstance(secrets, list | tuple) or not all(isinstance(s, str) and s for s in secrets):
        problems.append("WEBHOOK_SECRETS must be a list of non-empty strings (several while rotating).")
    else:
        found = [(number, secret_problem(secret)) for number, secret in enumerate(secrets, 1)]
        problems.extend(f"WEBHOOK_SECRETS, secret number {number}: {problem}." for number, problem in found if problem)
        if url is not None and not secrets:
            problems.append(
                "WEBHOOK_URL is set but WEBHOOK_SECRETS is empty: webhooks are always signed; give a secret."
            )
    if not isinstance(allow_http, bool):
        problems.append(f"WEBHOOK_ALLOW_HTTP must be true or false, not {allow_http!r}.")
    check_optional_str("WEBHOOK_URL", url, problems)
    if isinstance(url, str):
        problem = url_problem(url, allow_http=allow_http is True)  # the check Webhooks(url=...) makes
        if problem is not None:
            problems.append(f"WEBHOOK_URL: {problem}.")
    check_number("WEBHOOK_MAX_ATTEMPTS", values["WEBHOOK_MAX_ATTEMPTS"], problems, minimum=1, integer=True)
    check_number("WEBHOOK_MAX_AGE_SECONDS", values["WEBHOOK_MAX_AGE_SECONDS"], problems, minimum=1, maximum=WEEK)
    if not isinstance(values["WEBHOOK_PROGRESS"], bool):
        problems.append(f"WEBHOOK_PROGRESS must be true or false, not {values['WEBHOOK_PROGRESS']!r}.")
    every = values["WEBHOOK_PROGRESS_EVERY_SECONDS"]
    check_number("WEBHOOK_PROGRESS_EVERY_SECONDS", every, problems, minimum=0.001, maximum=WEEK)
