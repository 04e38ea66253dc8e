"""Settings of the results area: thresholds, time to live, the blob store and the result backend. Thresholds and
``RESULT_ON_STORE_ERROR`` are checked by the functions the Results and SpillingBackend constructors use."""

from __future__ import annotations

import os
from typing import Any

from ..payloads.plan import byte_threshold_problem, on_store_error_problem
from ._common import check_number, check_optional_str, module_available, redact_url

BACKENDS = ("digest", "filesystem", "s3", "gcs")
_BACKEND_EXTRAS = {"s3": ("boto3", "s3"), "gcs": ("google.cloud.storage", "gcs")}
_BACKEND_REQUIRED = {
    "filesystem": "RESULT_STORAGE_FILESYSTEM_PATH",
    "s3": "RESULT_STORAGE_S3_BUCKET",
    "gcs": "RESULT_STORAGE_GCS_BUCKET",
}
#: RESULT_BACKEND: the Dramatiq result backend that keeps results (and pointers); None chooses from the broker.
RESULT_BACKENDS = ("redis", "sql")
_RESULT_BACKEND_SCHEMES = {
    "redis": ("redis://", "rediss://", "unix://"),
    "sql": ("sqlite:", "sqlite+pysqlite:", "postgresql:", "postgres:", "postgresql+psycopg:"),
}


def validate(values: dict[str, Any], problems: list[str]) -> None:
    for name in ("MAX_RESULT_SIZE_BYTES", "MAX_ARG_SIZE_BYTES"):
        problem = (
            None if values[name] is None and name == "MAX_ARG_SIZE_BYTES" else byte_threshold_problem(values[name])
        )
        if problem:
            problems.append(f"{name} {problem}.")
    if values["MAX_ARG_SIZE_BYTES"] is not None and values["RESULT_STORAGE_BACKEND"] == "digest":
        problems.append(
            "MAX_ARG_SIZE_BYTES sends big arguments through the result store, and RESULT_STORAGE_BACKEND is "
            "'digest' (it keeps nothing): set it to filesystem, s3 or gcs."
        )
    check_number("RESULT_TTL_SECONDS", values["RESULT_TTL_SECONDS"], problems, minimum=1)
    problem = on_store_error_problem(values["RESULT_ON_STORE_ERROR"])
    if problem:
        problems.append(f"RESULT_ON_STORE_ERROR {problem}.")
    _validate_storage(values, problems)
    _validate_result_backend(values["RESULT_BACKEND"], values["RESULT_BACKEND_URL"], problems)


def _validate_storage(values: dict[str, Any], problems: list[str]) -> None:
    for name in (
        "RESULT_STORAGE_FILESYSTEM_PATH",
        "RESULT_STORAGE_S3_BUCKET",
        "RESULT_STORAGE_S3_REGION",
        "RESULT_STORAGE_S3_ENDPOINT_URL",
        "RESULT_STORAGE_GCS_BUCKET",
    ):
        check_optional_str(name, values[name], problems)
    path = values["RESULT_STORAGE_FILESYSTEM_PATH"]
    if isinstance(path, str) and path and not os.path.isabs(path):
        problems.append(
            f"RESULT_STORAGE_FILESYSTEM_PATH must be an absolute path (every worker and Ray process must name the "
            f"same directory), not {path!r}."
        )
    for name in ("RESULT_STORAGE_S3_PREFIX", "RESULT_STORAGE_GCS_PREFIX"):
        if not isinstance(values[name], str):
            problems.append(f"{name} must be a string, not {values[name]!r}.")
    backend = values["RESULT_STORAGE_BACKEND"]
    if backend not in BACKENDS:
        problems.append(f"RESULT_STORAGE_BACKEND must be one of {', '.join(BACKENDS)}, not {backend!r}.")
        return
    required = _BACKEND_REQUIRED.get(backend)
    if required and not values[required]:
        problems.append(f"RESULT_STORAGE_BACKEND={backend!r} needs {required} to be set.")
    if backend in _BACKEND_EXTRAS:
        module, extra = _BACKEND_EXTRAS[backend]
        if not module_available(module):
            problems.append(
                f"RESULT_STORAGE_BACKEND={backend!r} needs the {module.split('.')[0]!r} package: "
                f'pip install "dramatiq-ray[{extra}]"'
            )


def _validate_result_backend(backend: Any, url: Any, problems: list[str]) -> None:
    if backend is None:
        if url is not None:
            problems.append("RESULT_BACKEND_URL is set but RESULT_BACKEND is not: set RESULT_BACKEND to redis or sql.")
        return
    if backend not in RESULT_BACKENDS:
        problems.append(f"RESULT_BACKEND must be None, {' or '.join(RESULT_BACKENDS)}, not {backend!r}.")
        return
    check_optional_str("RESULT_BACKEND_URL", url, problems)
    if not isinstance(url, str):
        if backend == "sql":
            problems.append(
                "RESULT_BACKEND='sql' needs RESULT_BACKEND_URL, e.g. 'sqlite:////var/lib/dramatiq-ray/results.db' "
                "or 'postgresql://user@host/dbname'."
            )
        return
    schemes = _RESULT_BACKEND_SCHEMES[backend]
    if not url.lower().startswith(schemes):
        problems.append(
            f"RESULT_BACKEND_URL must start with {', '.join(schemes)} for RESULT_BACKEND={backend!r}, not "
            f"{redact_url(url)!r}."
        )
    elif backend == "sql":
        needed = ["sqlalchemy"] + (["psycopg"] if url.lower().startswith("postgres") else [])
        missing = [module for module in needed if not module_available(module)]
        if missing:
            problems.append(
                f"RESULT_BACKEND='sql' needs the {', '.join(missing)} package(s): pip install \"dramatiq-ray[sql]\""
            )
