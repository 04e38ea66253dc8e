"""The app the benchmarks run: a Redis broker, a results backend, optionally Ray execution, and the actors.

The worker process (``dramatiq benchmarks._worker``) and the producer (the harness) build the same app from the
same :class:`AppConfig`, so messages and results agree. The actors are module-level functions, so a Ray worker
imports them by name.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import dramatiq
from dramatiq.results import ResultBackend, Results
from dramatiq.results.backends.redis import RedisBackend

from ._harness import NotAvailable

#: Results live this long (milliseconds): long enough to read Redis's memory after a phase.
RESULT_TTL_MS = 600_000


@dataclass(frozen=True)
class AppConfig:
    """How to build the app. Strings only: it travels to the worker process as ``BENCH_*`` variables.

    ``execution`` is ``local`` (plain Dramatiq) or ``ray``; ``store`` is ``inline`` (Dramatiq's Redis backend),
    ``fs``, ``s3`` or ``gcs`` (our spilling backend); ``spill_in_task`` ``0`` makes the spilling backend offer no
    spill plan, so a result from Ray comes back through ``ray.get`` and is spilled in the worker.
    """

    redis_url: str
    namespace: str
    queue: str
    execution: str = "local"
    store: str = "inline"
    store_location: str = ""
    store_endpoint: str = ""
    max_inline_bytes: str = ""
    spill_in_task: str = "1"
    #: Our Results' ``max_inline_arg_bytes`` (empty: arguments inline, as in plain Dramatiq).
    max_inline_arg_bytes: str = ""
    #: Seconds the "model" of the replicas case takes to load.
    model_setup_s: str = "2"

    def as_env(self) -> dict[str, str]:
        return asdict(self)

    @classmethod
    def from_env(cls) -> AppConfig:
        names = cls.__dataclass_fields__
        return cls(
            **{name: os.environ[f"BENCH_{name.upper()}"] for name in names if f"BENCH_{name.upper()}" in os.environ}
        )


# --- the actors' bodies --------------------------------------------------------------------------------------


def noop() -> int:
    """Nothing: the cost of the path itself."""
    return 0


def burn(iterations: int) -> int:
    """Pure-Python CPU work that holds the GIL (about 50 ms for the iterations the harness calibrates)."""
    total = 0
    for value in range(iterations):
        total = (total + value * value) % 1_000_003
    return total


def payload(size: int, tag: str = "") -> str:
    """A string of ``size`` bytes starting with ``tag`` (its JSON encoding is ``size + 2`` bytes).

    A distinct tag per result makes a distinct blob: stores write it rather than finding it already there.
    """
    return (tag + "x" * size)[:size]


#: Seconds one call of the replicas case's "model" takes.
MODEL_CALL_S = 0.02
_model: dict[str, Any] | None = None


def load_model() -> dict[str, Any]:
    """A "model" that takes ``BENCH_MODEL_SETUP_S`` seconds to load (set through the actors' runtime_env)."""
    import time

    time.sleep(float(os.environ.get("BENCH_MODEL_SETUP_S", "2")))
    return {"loaded_in": os.getpid()}


def model_task() -> int:
    """A GPU task keeping its model in a module global, as users do: Ray runs each GPU task in a new process."""
    import time

    global _model
    if _model is None:
        _model = load_model()
    time.sleep(MODEL_CALL_S)
    return int(_model["loaded_in"])


def noop_replica() -> int:
    """Nothing, on a warm replica: the cost of the replicas path itself."""
    return 0


def model_replica() -> int:
    """The same call on a warm replica, whose setup loaded the model once."""
    import time

    from dramatiq_ray import replica_state

    time.sleep(MODEL_CALL_S)
    return int(replica_state()["loaded_in"])


def consume(data: str | bytes) -> int:
    """The size of an argument: a base64 string (plain Dramatiq) or bytes (sent by reference)."""
    return len(data)


def calibrate_burn(target_ms: float = 50.0) -> int:
    """How many iterations of :func:`burn` take about ``target_ms`` on this machine when it has the CPU.

    The rate is the best of several trials of at least 25 ms each, so a trial slowed by other processes does not
    shrink the work (a shared machine preempts often).
    """
    import time

    iterations = 20_000
    while True:
        started = time.perf_counter()
        burn(iterations)
        if time.perf_counter() - started > 0.025:
            break
        iterations *= 2
    best = math.inf
    for _ in range(5):
        started = time.perf_counter()
        burn(iterations)
        best = min(best, time.perf_counter() - started)
    return int(iterations * target_ms / 1000 / best)


# --- building the app ----------------------------------------------------------------------------------------


@dataclass
class App:
    broker: dramatiq.Broker
    backend: ResultBackend
    actors: dict[str, dramatiq.Actor[Any, Any]]


def build_store(config: AppConfig) -> Any:
    """The blob store ``config`` names, or raise :class:`NotAvailable`."""
    try:
        from dramatiq_ray.payloads.stores import FilesystemStore, GCSStore, S3Store
    except Exception as error:
        raise NotAvailable(f"dramatiq_ray.payloads.stores does not import: {error}") from error
    if config.store == "fs":
        return FilesystemStore(config.store_location)
    if config.store == "s3":
        return S3Store(config.store_location, endpoint_url=config.store_endpoint, region="us-east-1")
    if config.store == "gcs":
        return GCSStore(config.store_location, endpoint_url=config.store_endpoint, project="dramatiq-ray-bench")
    raise ValueError(f"unknown store {config.store!r}")


def build_backend(config: AppConfig) -> ResultBackend:
    redis_backend = RedisBackend(url=config.redis_url, namespace=f"{config.namespace}-results")  # type: ignore[no-untyped-call]
    if config.store == "inline":
        return redis_backend
    try:
        from dramatiq_ray.results.backend import SpillingBackend
    except Exception as error:
        raise NotAvailable(f"dramatiq_ray.results.backend does not import: {error}") from error
    backend_class: type[SpillingBackend] = SpillingBackend if config.spill_in_task == "1" else _spill_in_worker()
    extra = {"max_inline_bytes": int(config.max_inline_bytes)} if config.max_inline_bytes else {}
    return backend_class(redis_backend, store=build_store(config), **extra)


def _results_middleware(config: AppConfig, backend: ResultBackend) -> dramatiq.Middleware:
    if config.store == "inline":
        return Results(backend=backend, store_results=True, result_ttl=RESULT_TTL_MS)  # type: ignore[no-untyped-call]
    from dramatiq_ray.results import Results as SpillingResults

    extra = {"max_inline_arg_bytes": int(config.max_inline_arg_bytes)} if config.max_inline_arg_bytes else {}
    return SpillingResults(backend=backend, store_results=True, result_ttl=RESULT_TTL_MS, **extra)


def _ray_middleware() -> dramatiq.Middleware:
    try:
        from dramatiq_ray.execution import RayExecutionMiddleware
    except Exception as error:
        raise NotAvailable(f"dramatiq_ray.execution does not import: {error}") from error
    # The address comes from RAY_ADDRESS, which the harness sets to its own cluster.
    middleware: dramatiq.Middleware = RayExecutionMiddleware()
    return middleware


def build(config: AppConfig) -> App:
    """Build the broker, backend and actors ``config`` describes.

    Raises:
      NotAvailable: a module of ours that ``config`` needs is missing or broken.
    """
    from dramatiq.brokers.redis import RedisBroker

    backend = build_backend(config)
    broker = RedisBroker(url=config.redis_url, namespace=config.namespace)  # type: ignore[no-untyped-call]
    broker.add_middleware(_results_middleware(config, backend))
    options: dict[str, Any] = {}
    if config.execution == "ray":
        broker.add_middleware(_ray_middleware())
        options = {"ray": True}
    bodies: tuple[Callable[..., Any], ...] = (noop, burn, payload, consume)
    actors = {
        fn.__name__: dramatiq.actor(broker=broker, queue_name=config.queue, max_retries=0, **options)(fn)
        for fn in bodies  # one decorator per actor: a Dramatiq decorator keeps the first actor's name
    }
    if config.execution == "ray":
        actors.update(_model_actors(config, broker))
    return App(broker=broker, backend=backend, actors=actors)


def _model_actors(config: AppConfig, broker: dramatiq.Broker) -> dict[str, dramatiq.Actor[Any, Any]]:
    """The replicas case's actors: one GPU each, as a task per message and on two warm replicas."""
    from dramatiq_ray import Replicas

    ray_options = {"num_gpus": 1, "runtime_env": {"env_vars": {"BENCH_MODEL_SETUP_S": config.model_setup_s}}}
    common: dict[str, Any] = {
        "broker": broker,
        "queue_name": config.queue,
        "max_retries": 0,
        "ray_options": ray_options,
    }
    replicas = Replicas(setup=load_model, min=2, max=2, version=f"setup-{config.model_setup_s}")
    return {
        "model_task": dramatiq.actor(**common)(model_task),
        "model_replica": dramatiq.actor(replicas=replicas, **common)(model_replica),
        "noop_replica": dramatiq.actor(
            broker=broker, queue_name=config.queue, max_retries=0, replicas=Replicas(max_concurrency=8)
        )(noop_replica),
    }


def _spill_in_worker() -> type[Any]:
    from dramatiq_ray.results.backend import SpillingBackend

    class SpillInWorker(SpillingBackend):
        """Spills nothing where the body runs: a result from Ray comes back through ``ray.get`` and is spilled
        here, in the worker, when it is stored."""

        def plan(self, max_inline_bytes: int | None, **options: Any) -> Any:
            return super().plan(None, **options)

        def store_outcome(self, message: Any, outcome: Any, ttl: int) -> None:
            super().store_outcome(message, super().plan(self.max_inline_bytes).apply(outcome), ttl)

    return SpillInWorker
