"""Settings: one mapping that configures everything, read from code, a module attribute and the environment.

Setting names match django-ray's, so teams coming from it recognise every one. Sources, later wins:

1. the defaults below;
2. the ``settings`` mapping given to :func:`load_settings` (or :func:`dramatiq_ray.setup`), or else the module
   attribute named by ``DRAMATIQ_RAY_SETTINGS=package.module:ATTRIBUTE``;
3. environment variables ``DRAMATIQ_RAY_<NAME>``: integers and numbers as such, JSON for mappings, JSON or a
   comma-separated list for lists, ``none``/empty for "unset".

Validation collects every problem at once and raises one :class:`~dramatiq_ray.errors.ConfigurationError`
listing them all. ``DRAMATIQ_RAY_SKIP_VALIDATION=1`` skips it (for maintenance runs).

Each area's settings are checked in a module of its own (``_ray``, ``_retries``, ``_results``, ``_webhooks``), by
the same functions as the constructor parameters they feed.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigurationError
from . import _ray, _results, _retries, _webhooks
from ._common import redact_url
from ._sources import ENV_PREFIX, SETTINGS_MODULE_VARIABLE, from_environment, from_module

__all__ = ["ENV_PREFIX", "SETTINGS_MODULE_VARIABLE", "SETTING_NAMES", "Settings", "load_settings"]

SKIP_VALIDATION_VARIABLE = "DRAMATIQ_RAY_SKIP_VALIDATION"


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
    ray_log_level: str | int | None = None
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
    webhook_progress: bool = False
    webhook_progress_every_seconds: float = 5

    def as_dict(self) -> dict[str, Any]:
        """The settings as a mapping of upper-case names, as they are written in configuration."""
        return {name: getattr(self, name.lower()) for name in SETTING_NAMES}

    def redacted(self) -> dict[str, Any]:
        """The settings for display: values that may carry credentials (URLs, runtime env) are masked."""
        shown = self.as_dict()
        for name in ("RAY_ADDRESS", "RESULT_STORAGE_S3_ENDPOINT_URL", "RESULT_BACKEND_URL"):
            shown[name] = redact_url(shown[name])
        if shown["RAY_RUNTIME_ENV"]:
            shown["RAY_RUNTIME_ENV"] = {key: "…" for key in shown["RAY_RUNTIME_ENV"]}
        shown["WEBHOOK_SECRETS"] = ["…" for _ in shown["WEBHOOK_SECRETS"] or []]
        shown["WEBHOOK_URL"] = redact_url(shown["WEBHOOK_URL"])
        return shown


SETTING_NAMES: tuple[str, ...] = tuple(name.upper() for name in Settings.__dataclass_fields__)


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
        settings = from_module(environ[SETTINGS_MODULE_VARIABLE])
    values: dict[str, Any] = Settings().as_dict()
    for name, value in (settings or {}).items():
        if name not in SETTING_NAMES:
            close = difflib.get_close_matches(str(name).upper(), SETTING_NAMES, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]}?" if close else f"; known settings: {', '.join(SETTING_NAMES)}."
            problems.append(f"{name!r} is not a setting{hint}")
            continue
        values[name] = value
    values.update(from_environment(environ, SETTING_NAMES, problems))
    if validate:
        for area in (_ray, _retries, _results, _webhooks):
            area.validate(values, problems)
        if problems:
            listing = "\n".join(f"  - {problem}" for problem in problems)
            raise ConfigurationError(f"dramatiq-ray settings have {len(problems)} problem(s):\n{listing}", problems)
    if isinstance(values["RETRY_EXCEPTION_DENYLIST"], tuple):
        values["RETRY_EXCEPTION_DENYLIST"] = list(values["RETRY_EXCEPTION_DENYLIST"])
    if isinstance(values["WEBHOOK_SECRETS"], tuple):
        values["WEBHOOK_SECRETS"] = list(values["WEBHOOK_SECRETS"])
    return Settings(**{name.lower(): value for name, value in values.items()})
