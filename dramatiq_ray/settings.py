"""Settings: one mapping that configures everything, read from code, a module attribute and the environment.

Setting names match django-ray's, so teams coming from it recognise every one. Sources, later wins:

1. the defaults below;
2. the ``settings`` mapping given to :func:`load_settings` (or :func:`dramatiq_ray.setup`), or else the module
   attribute named by ``DRAMATIQ_RAY_SETTINGS=package.module:ATTRIBUTE``;
3. environment variables ``DRAMATIQ_RAY_<NAME>``: integers and numbers as such, JSON for mappings, JSON or a
   comma-separated list for lists, ``none``/empty for "unset".

Validation collects every problem at once and raises one :class:`~dramatiq_ray.errors.ConfigurationError`
listing them all. ``DRAMATIQ_RAY_SKIP_VALIDATION=1`` skips it (for maintenance runs).
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .delivery.signing import secret_problem
from .errors import ConfigurationError
from .execution.runners import RUNNERS
from .payloads.plan import ON_STORE_ERROR

__all__ = ["ENV_PREFIX", "SETTING_NAMES", "Settings", "load_settings"]

ENV_PREFIX = "DRAMATIQ_RAY_"
SETTINGS_MODULE_VARIABLE = "DRAMATIQ_RAY_SETTINGS"
SKIP_VALIDATION_VARIABLE = "DRAMATIQ_RAY_SKIP_VALIDATION"

BACKENDS = ("digest", "filesystem", "s3", "gcs")
_BACKEND_EXTRAS = {"s3": ("boto3", "s3"), "gcs": ("google.cloud.storage", "gcs")}
_BACKEND_REQUIRED = {
    "filesystem": "RESULT_STORAGE_FILESYSTEM_PATH",
    "s3": "RESULT_STORAGE_S3_BUCKET",
    "gcs": "RESULT_STORAGE_GCS_BUCKET",
}
#: Dramatiq caps retry delays at 7 days.
_WEEK = 7 * 24 * 3600
_DOTTED_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_HOST_PORT = re.compile(r"^[A-Za-z0-9_.\-\[\]:]+:\d{1,5}$")


@dataclass(frozen=True)
class Settings:
    """The validated settings. Attribute names are the setting names in lower case."""

    ray_address: str | None = None
    ray_runtime_env: dict[str, Any] = field(default_factory=dict)
    runner: str = "ray_core"
    default_concurrency: int = 10
    max_task_attempts: int = 3
    retry_backoff_seconds: float = 60
    retry_max_backoff_seconds: float = 3600
    retry_exception_denylist: list[str] = field(default_factory=list)
    stuck_task_timeout_seconds: float = 300
    ray_job_address: str | None = None
    ray_job_python: str | None = None
    max_result_size_bytes: int = 1024 * 1024
    max_arg_size_bytes: int | None = None
    result_ttl_seconds: float = 600
    result_storage_backend: str = "digest"
    result_on_store_error: str = "fail"
    result_storage_filesystem_path: str | None = None
    result_storage_s3_bucket: str | None = None
    result_storage_s3_prefix: str = "dramatiq-ray/results"
    result_storage_s3_region: str | None = None
    result_storage_s3_endpoint_url: str | None = None
    result_storage_gcs_bucket: str | None = None
    result_storage_gcs_prefix: str = "dramatiq-ray/results"
    result_backend: str | None = None
    result_backend_url: str | None = None
    webhook_url: str | None = None
    webhook_secrets: list[str] = field(default_factory=list)
    webhook_allow_http: bool = False
    webhook_max_attempts: int = 10
    webhook_max_age_seconds: float = 86400

    def as_dict(self) -> dict[str, Any]:
        """The settings as a mapping of upper-case names, as they are written in configuration."""
        return {name: getattr(self, name.lower()) for name in SETTING_NAMES}

    def redacted(self) -> dict[str, Any]:
        """The settings for display: values that may carry credentials (URLs, runtime env) are masked."""
        shown = self.as_dict()
        for name in ("RAY_ADDRESS", "RESULT_STORAGE_S3_ENDPOINT_URL", "RESULT_BACKEND_URL"):
            shown[name] = _redact_url(shown[name])
        if shown["RAY_RUNTIME_ENV"]:
            shown["RAY_RUNTIME_ENV"] = {key: "…" for key in shown["RAY_RUNTIME_ENV"]}
        shown["WEBHOOK_SECRETS"] = ["…" for _ in shown["WEBHOOK_SECRETS"] or []]
        shown["WEBHOOK_URL"] = _redact_url(shown["WEBHOOK_URL"])
        return shown


SETTING_NAMES: tuple[str, ...] = tuple(name.upper() for name in Settings.__dataclass_fields__)


def _redact_url(value: Any) -> Any:
    if isinstance(value, str) and "@" in value:
        scheme, _, rest = value.rpartition("://")
        return f"{scheme}://***@{rest.split('@', 1)[1]}" if scheme else "***@" + value.split("@", 1)[1]
    return value


# --- parsing from the environment -----------------------------------------------------------------------------


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
    "RESULT_BACKEND": lambda text: None if _parse_optional_str(text) is None else text.strip().lower(),
}


def _from_environment(environ: Mapping[str, str], problems: list[str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for variable, text in environ.items():
        if not variable.startswith(ENV_PREFIX):
            continue
        name = variable[len(ENV_PREFIX) :]
        if name not in SETTING_NAMES:
            # Only names close to a setting are reported: other DRAMATIQ_RAY_* variables may belong to tooling.
            close = difflib.get_close_matches(name, SETTING_NAMES, n=1, cutoff=0.85)
            if close:
                problems.append(f"{variable} is not a setting; did you mean {ENV_PREFIX}{close[0]}?")
            continue
        parser = _ENV_PARSERS.get(name, _parse_optional_str)
        try:
            values[name] = parser(text)
        except ValueError as error:  # json.JSONDecodeError is a ValueError
            problems.append(f"{variable}={text!r} cannot be parsed: {error}")
    return values


def _from_module(reference: str) -> Mapping[str, Any]:
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


# --- validation -----------------------------------------------------------------------------------------------


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_number(
    name: str,
    value: Any,
    problems: list[str],
    *,
    minimum: float,
    maximum: float | None = None,
    integer: bool = False,
) -> None:
    kind = "an integer" if integer else "a number"
    if (integer and (not isinstance(value, int) or isinstance(value, bool))) or not _is_number(value):
        problems.append(f"{name} must be {kind}, not {type(value).__name__} {value!r}.")
    elif value < minimum:
        problems.append(f"{name} must be {kind} >= {minimum:g}, not {value!r}.")
    elif maximum is not None and value > maximum:
        problems.append(f"{name} must be {kind} <= {maximum:g}, not {value!r}.")


def _check_optional_str(name: str, value: Any, problems: list[str]) -> None:
    if value is not None and not isinstance(value, str):
        problems.append(f"{name} must be a string or None, not {type(value).__name__} {value!r}.")


def _validate(values: dict[str, Any], problems: list[str]) -> None:
    address = values["RAY_ADDRESS"]
    if address is not None and (
        not isinstance(address, str)
        or not (
            address in ("auto", "local")
            or _HOST_PORT.match(address)
            or re.match(r"^(ray|https?)://[^\s/]+(:\d{1,5})?/?$", address)
        )
    ):
        problems.append(
            f"RAY_ADDRESS must be None, 'auto', 'local', 'host:port' or 'ray://host:port', not {address!r}."
        )
    if not isinstance(values["RAY_RUNTIME_ENV"], dict):
        problems.append(f"RAY_RUNTIME_ENV must be a mapping (a JSON object), not {values['RAY_RUNTIME_ENV']!r}.")
    if values["RUNNER"] not in RUNNERS:
        problems.append(f"RUNNER must be one of {', '.join(RUNNERS)}, not {values['RUNNER']!r}.")
    _check_number("DEFAULT_CONCURRENCY", values["DEFAULT_CONCURRENCY"], problems, minimum=1, integer=True)
    _check_number("MAX_TASK_ATTEMPTS", values["MAX_TASK_ATTEMPTS"], problems, minimum=1, integer=True)
    _check_number("RETRY_BACKOFF_SECONDS", values["RETRY_BACKOFF_SECONDS"], problems, minimum=0, maximum=_WEEK)
    _check_number("RETRY_MAX_BACKOFF_SECONDS", values["RETRY_MAX_BACKOFF_SECONDS"], problems, minimum=0, maximum=_WEEK)
    _check_number("STUCK_TASK_TIMEOUT_SECONDS", values["STUCK_TASK_TIMEOUT_SECONDS"], problems, minimum=1)
    job_address = values["RAY_JOB_ADDRESS"]
    if job_address is not None and not (isinstance(job_address, str) and re.match(r"^https?://\S+$", job_address)):
        problems.append(f"RAY_JOB_ADDRESS must be None or an http(s):// address, not {job_address!r}.")
    job_python = values["RAY_JOB_PYTHON"]
    if job_python is not None and (not isinstance(job_python, str) or not job_python.strip()):
        problems.append(f"RAY_JOB_PYTHON must be None or the path of a Python executable, not {job_python!r}.")
    _check_number("MAX_RESULT_SIZE_BYTES", values["MAX_RESULT_SIZE_BYTES"], problems, minimum=0, integer=True)
    if values["MAX_ARG_SIZE_BYTES"] is not None:
        _check_number("MAX_ARG_SIZE_BYTES", values["MAX_ARG_SIZE_BYTES"], problems, minimum=0, integer=True)
        if values["RESULT_STORAGE_BACKEND"] == "digest":
            problems.append(
                "MAX_ARG_SIZE_BYTES sends big arguments through the result store, and RESULT_STORAGE_BACKEND is "
                "'digest' (it keeps nothing): set it to filesystem, s3 or gcs."
            )
    _check_number("RESULT_TTL_SECONDS", values["RESULT_TTL_SECONDS"], problems, minimum=1)
    on_store_error = values["RESULT_ON_STORE_ERROR"]
    if on_store_error not in ON_STORE_ERROR:
        problems.append(f"RESULT_ON_STORE_ERROR must be one of {', '.join(ON_STORE_ERROR)}, not {on_store_error!r}.")
    denylist = values["RETRY_EXCEPTION_DENYLIST"]
    if not isinstance(denylist, list | tuple):
        problems.append(f"RETRY_EXCEPTION_DENYLIST must be a list of dotted exception names, not {denylist!r}.")
    else:
        for entry in denylist:
            if not isinstance(entry, str) or not _DOTTED_NAME.match(entry):
                problems.append(
                    f"RETRY_EXCEPTION_DENYLIST entry {entry!r} is not a dotted exception name "
                    "(like 'ValueError' or 'myapp.errors.PermanentError')."
                )
    for name in (
        "RESULT_STORAGE_FILESYSTEM_PATH",
        "RESULT_STORAGE_S3_BUCKET",
        "RESULT_STORAGE_S3_REGION",
        "RESULT_STORAGE_S3_ENDPOINT_URL",
        "RESULT_STORAGE_GCS_BUCKET",
    ):
        _check_optional_str(name, values[name], problems)
    path = values["RESULT_STORAGE_FILESYSTEM_PATH"]
    if isinstance(path, str) and path and not os.path.isabs(path):
        problems.append(
            f"RESULT_STORAGE_FILESYSTEM_PATH must be an absolute path (every worker and Ray process must name the "
            f"same directory), not {path!r}."
        )
    for name in ("RESULT_STORAGE_S3_PREFIX", "RESULT_STORAGE_GCS_PREFIX"):
        if not isinstance(values[name], str):
            problems.append(f"{name} must be a string, not {values[name]!r}.")
    _validate_result_backend(values["RESULT_BACKEND"], values["RESULT_BACKEND_URL"], problems)
    _validate_webhooks(values, problems)
    backend = values["RESULT_STORAGE_BACKEND"]
    if backend not in BACKENDS:
        problems.append(f"RESULT_STORAGE_BACKEND must be one of {', '.join(BACKENDS)}, not {backend!r}.")
        return
    required = _BACKEND_REQUIRED.get(backend)
    if required and not values[required]:
        problems.append(f"RESULT_STORAGE_BACKEND={backend!r} needs {required} to be set.")
    if backend in _BACKEND_EXTRAS:
        module, extra = _BACKEND_EXTRAS[backend]
        if not _module_available(module):
            problems.append(
                f"RESULT_STORAGE_BACKEND={backend!r} needs the {module.split('.')[0]!r} package: "
                f'pip install "dramatiq-ray[{extra}]"'
            )


#: RESULT_BACKEND: the Dramatiq result backend that keeps results (and pointers); None chooses from the broker.
RESULT_BACKENDS = ("redis", "sql")
_RESULT_BACKEND_SCHEMES = {
    "redis": ("redis://", "rediss://", "unix://"),
    "sql": ("sqlite:", "sqlite+pysqlite:", "postgresql:", "postgres:", "postgresql+psycopg:"),
}


def _validate_result_backend(backend: Any, url: Any, problems: list[str]) -> None:
    if backend is None:
        if url is not None:
            problems.append("RESULT_BACKEND_URL is set but RESULT_BACKEND is not: set RESULT_BACKEND to redis or sql.")
        return
    if backend not in RESULT_BACKENDS:
        problems.append(f"RESULT_BACKEND must be None, {' or '.join(RESULT_BACKENDS)}, not {backend!r}.")
        return
    _check_optional_str("RESULT_BACKEND_URL", url, problems)
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
            f"{_redact_url(url)!r}."
        )
    elif backend == "sql":
        needed = ["sqlalchemy"] + (["psycopg"] if url.lower().startswith("postgres") else [])
        missing = [module for module in needed if not _module_available(module)]
        if missing:
            problems.append(
                f"RESULT_BACKEND='sql' needs the {', '.join(missing)} package(s): pip install \"dramatiq-ray[sql]\""
            )


def _validate_webhooks(values: dict[str, Any], problems: list[str]) -> None:
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
    _check_optional_str("WEBHOOK_URL", url, problems)
    if isinstance(url, str):
        scheme = url.split("://", 1)[0].lower() if "://" in url else ""
        if scheme not in ("https", "http"):
            problems.append(f"WEBHOOK_URL must be an https:// URL, not {_redact_url(url)!r}.")
        elif scheme == "http" and allow_http is not True:
            problems.append(
                "WEBHOOK_URL is plain http: use https, or set WEBHOOK_ALLOW_HTTP=true for a trusted network."
            )
    _check_number("WEBHOOK_MAX_ATTEMPTS", values["WEBHOOK_MAX_ATTEMPTS"], problems, minimum=1, integer=True)
    _check_number("WEBHOOK_MAX_AGE_SECONDS", values["WEBHOOK_MAX_AGE_SECONDS"], problems, minimum=1, maximum=_WEEK)


def _module_available(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def load_settings(
    settings: Mapping[str, Any] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    validate: bool | None = None,
) -> Settings:
    """Merge the defaults, ``settings`` (or the ``DRAMATIQ_RAY_SETTINGS`` module attribute) and the environment.

    Parameters:
      settings: a mapping of setting names (upper case, as in the docs) to values.
      environ: the environment to read (``os.environ`` by default).
      validate: force validation on or off; by default it runs unless ``DRAMATIQ_RAY_SKIP_VALIDATION=1``.

    Raises:
      ConfigurationError: listing every problem found (unknown names with a did-you-mean, wrong types,
        out-of-range numbers, a storage backend without its required setting or its extra).
    """
    environ = os.environ if environ is None else environ
    if validate is None:
        validate = environ.get(SKIP_VALIDATION_VARIABLE, "") not in ("1", "true", "yes")
    problems: list[str] = []
    if settings is None and environ.get(SETTINGS_MODULE_VARIABLE):
        settings = _from_module(environ[SETTINGS_MODULE_VARIABLE])
    values: dict[str, Any] = Settings().as_dict()
    for name, value in (settings or {}).items():
        if name not in SETTING_NAMES:
            close = difflib.get_close_matches(str(name).upper(), SETTING_NAMES, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]}?" if close else f"; known settings: {', '.join(SETTING_NAMES)}."
            problems.append(f"{name!r} is not a setting{hint}")
            continue
        values[name] = value
    values.update(_from_environment(environ, problems))
    if validate:
        _validate(values, problems)
        if problems:
            listing = "\n".join(f"  - {problem}" for problem in problems)
            raise ConfigurationError(f"dramatiq-ray settings have {len(problems)} problem(s):\n{listing}", problems)
    if isinstance(values["RETRY_EXCEPTION_DENYLIST"], tuple):
        values["RETRY_EXCEPTION_DENYLIST"] = list(values["RETRY_EXCEPTION_DENYLIST"])
    if isinstance(values["WEBHOOK_SECRETS"], tuple):
        values["WEBHOOK_SECRETS"] = list(values["WEBHOOK_SECRETS"])
    return Settings(**{name.lower(): value for name, value in values.items()})
