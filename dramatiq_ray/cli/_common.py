"""What the commands share: exit codes, importing ``--broker``, and finding what each command uses.

The store, the result backend and the Ray address come from the broker's middleware (its ``Results`` and
``RayExecutionMiddleware``), so the command sees what the workers use; the settings are read only for what the
broker does not configure, or when no ``--broker`` is given.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import TYPE_CHECKING, Any

import dramatiq

from ..errors import ConfigurationError
from ..settings import Settings, load_settings

if TYPE_CHECKING:
    from ..execution.connection import RayRuntime
    from ..results import BlobStore, SpillingBackend

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_MISSING = 0, 1, 2, 3

FROM_RESULTS = "from the broker's Results"
FROM_EXECUTION = "from the broker's RayExecutionMiddleware"
FROM_SETTINGS = "from settings"


class UsageError(Exception):
    """The command cannot run as asked (exit code 2); the message says what to change."""


def format_duration(seconds: float) -> str:
    """``seconds`` in the largest unit that keeps it short: ``10m``, ``2d``, ``90s``, ``1.5h``."""
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and (seconds / size * 10).is_integer():
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def load_broker(reference: str) -> dramatiq.Broker:
    """The broker ``reference`` (``module[:attribute]``) names; attribute ``broker`` by default, else the global
    broker once the module is imported.

    Raises:
      ConfigurationError: the module cannot be imported, or the attribute is not a broker.
    """
    module_name, _, attribute = reference.partition(":")
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # as the dramatiq command does: modules of the current directory import
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ConfigurationError(f"--broker {reference!r}: cannot import {module_name!r} ({error}).") from error
    except ConfigurationError:
        raise
    except Exception as error:
        raise ConfigurationError(
            f"--broker {reference!r}: importing {module_name!r} failed: {type(error).__name__}: {error}"
        ) from error
    broker = getattr(module, attribute or "broker", None)
    if broker is None and not attribute:
        broker = dramatiq.get_broker()
    if not isinstance(broker, dramatiq.Broker):
        raise ConfigurationError(
            f"--broker {reference!r}: {module_name}.{attribute or 'broker'} is not a Dramatiq broker. "
            "Name it as 'package.module:attribute'."
        )
    return broker


class Sources:
    """Where a command finds its store, result backend, Ray address and result TTLs: the broker, then settings.

    Settings are loaded only when something must come from them.
    """

    def __init__(self, broker: dramatiq.Broker | None) -> None:
        self.broker = broker
        self._settings: Settings | None = None

    @classmethod
    def load(cls, reference: str | None) -> Sources:
        """Import the broker ``--broker`` names, if any."""
        return cls(load_broker(reference) if reference else None)

    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings()
        return self._settings

    def results_middleware(self) -> list[Any]:
        from dramatiq.results import Results

        broker = self.broker
        return [] if broker is None else [m for m in broker.middleware if isinstance(m, Results)]

    def spilling_backend(self) -> SpillingBackend | None:
        from ..results import find_spilling_backend

        return None if self.broker is None else find_spilling_backend(self.broker)

    def store(self) -> tuple[BlobStore, str]:
        """The blob store of the broker's Results, else the one the settings describe; and where it came from."""
        from .._install import build_store

        spilling = self.spilling_backend()
        if spilling is not None and spilling.store is not None:
            return spilling.store, FROM_RESULTS
        return build_store(self.settings()), FROM_SETTINGS

    def result_backend(self) -> tuple[SpillingBackend, str]:
        """The backend to read results through, and a line saying what it is made of.

        The broker's ``SpillingBackend`` as it is; a plain result backend is read through the settings' store
        (so pointers written by workers configured from settings are read back).

        Raises:
          ConfigurationError: the broker has no Results middleware.
        """
        from ..results import SpillingBackend

        spilling = self.spilling_backend()
        if spilling is not None:
            kept = spilling.store.describe() if spilling.store is not None else "none (results never spill)"
            inner = type(spilling.backend).__name__
            return spilling, f"result backend: {inner} ({FROM_RESULTS}), store: {kept} ({FROM_RESULTS})"
        plain = self.results_middleware()
        if not plain:
            raise ConfigurationError(
                "The broker has no Results middleware: add dramatiq_ray.Results (or call dramatiq_ray.setup) in "
                "the module --broker names."
            )
        store, source = self.store()
        backend = SpillingBackend(plain[0].backend, store=store)
        return backend, (
            f"result backend: {type(plain[0].backend).__name__} ({FROM_RESULTS}), store: {store.describe()} ({source})"
        )

    def ray_runtime(self) -> tuple[RayRuntime, str]:
        """A Ray connection as the broker's RayExecutionMiddleware makes it, else from the settings."""
        from ..execution import RayExecutionMiddleware
        from ..execution.connection import RayRuntime

        middleware = [] if self.broker is None else self.broker.middleware
        execution = [m for m in middleware if isinstance(m, RayExecutionMiddleware)]
        if execution:
            own = execution[0].runtime
            runtime, source = RayRuntime(address=own.address, init_kwargs=own.init_kwargs), FROM_EXECUTION
        else:
            runtime, source = RayRuntime(address=self.settings().ray_address), FROM_SETTINGS
        if runtime.address is None and runtime.resolved_address():
            source = "from RAY_ADDRESS"
        return runtime, source

    def longest_result_ttl(self) -> tuple[float, str]:
        """The longest result TTL in use that can be seen, in seconds, and where it is set: the broker's Results
        and its actors' ``result_ttl`` options; without Results on the broker, ``RESULT_TTL_SECONDS``."""
        seen: list[tuple[float, str]] = []
        for middleware in self.results_middleware():
            seen.append((middleware.result_ttl / 1000, "the result_ttl of the broker's Results"))
        if self.broker is not None and seen:
            for name in sorted(self.broker.get_declared_actors()):
                ttl = self.broker.get_actor(name).options.get("result_ttl")
                if isinstance(ttl, int | float) and not isinstance(ttl, bool):
                    seen.append((ttl / 1000, f"the result_ttl option of actor {name!r}"))
        if not seen:
            seen.append((float(self.settings().result_ttl_seconds), "RESULT_TTL_SECONDS in settings"))
        return max(seen, key=lambda item: item[0])
