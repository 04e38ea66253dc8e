"""The app the benchmarks run: a Redis broker, a results backend, optionally Ray execution, and the actors.

The worker process (``dramatiq benchmarks._worker``) and the producer (the harness) build the same app from the
same :class:`AppConfig`, so messages and results agree. The actors are module-level functions, so a Ray worker
imports them by name.
"""

from __future__ import annotations

import math
import os
import threading
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
    #: The ``version`` of the replicas case's restart actor (a new one starts a cold pool).
    replica_version: str = "1"

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
#: Model replicas (and ActorPool actors) of the replicas case: one per logical GPU of its Ray head.
MODEL_GPUS = 2


def model_ray_options(setup_s: str) -> dict[str, Any]:
    """The Ray options of the model (replicas and ActorPool actors alike): one GPU, and its load time."""
    return {"num_gpus": 1, "runtime_env": {"env_vars": {"BENCH_MODEL_SETUP_S": setup_s}}}


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


def model_restart() -> int:
    """The model on one CPU replica: the worker-restart rows."""
    return model_replica()


def model_replica() -> int:
    """The same call on a warm replica, whose setup loaded the model once."""
    import time

    from dramatiq_ray import replica_state

    time.sleep(MODEL_CALL_S)
    return int(replica_state()["loaded_in"])


class ModelActor:
    """The replicas case's "model" as a plain Ray actor: loads in ``__init__``, one call per :meth:`call`."""

    def __init__(self) -> None:
        self.model = load_model()

    def call(self) -> int:
        import time

        time.sleep(MODEL_CALL_S)
        return int(self.model["loaded_in"])


class _HandWrittenPool:
    """What a user writes without replicas: a ``ray.util.ActorPool`` of model actors made by the worker process
    at its first message, shared by its threads (``ActorPool`` is not thread-safe: a condition guards it), each
    call made on an idle actor directly."""

    def __init__(self, size: int) -> None:
        import ray
        from ray.util import ActorPool

        remote = ray.remote(ModelActor).options(**model_ray_options(os.environ.get("BENCH_MODEL_SETUP_S", "2")))
        self.pool = ActorPool([remote.remote() for _ in range(size)])
        self.free = threading.Condition()

    def call(self) -> int:
        import ray

        with self.free:
            while not self.pool.has_free():
                self.free.wait()
            actor = self.pool.pop_idle()
        try:
            return int(ray.get(actor.call.remote()))
        finally:
            with self.free:
                self.pool.push(actor)
                self.free.notify()


_pool: _HandWrittenPool | None = None
_pool_lock = threading.Lock()


def model_actor_pool() -> int:
    """The model call through the hand-written ActorPool (a local body: the worker thread calls the actors)."""
    global _pool
    if _pool is None:
        with _pool_lock:
            if _pool is None:
                import ray

                if not ray.is_initialized():  # the Ray middleware attaches at worker boot; this is a fallback
                    ray.init()
                _pool = _HandWrittenPool(MODEL_GPUS)
    return _pool.call()


#: Seconds one call of the batching rows' body takes, and seconds more per item of a batch.
BATCH_CALL_S = 0.02
BATCH_ITEM_S = 0.0005


def score_one(item: int) -> int:
    """One item per call: the fixed cost and one item's."""
    import time

    time.sleep(BATCH_CALL_S + BATCH_ITEM_S)
    return item


def score_batch(items: list[int]) -> list[int]:
    """A batch per call: the fixed cost once, and each item's."""
    import time

    time.sleep(BATCH_CALL_S + BATCH_ITEM_S * len(items))
    return list(items)


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
    """The replicas case's actors: the model with one GPU each, as a task per message, through a hand-written
    ActorPool and on two warm replicas; no-op, batching and restart rows on CPU replicas."""
    from dramatiq_ray import Batch, Replicas

    ray_options = model_ray_options(config.model_setup_s)
    plain: dict[str, Any] = {"broker": broker, "queue_name": config.queue, "max_retries": 0}
    common: dict[str, Any] = {**plain, "ray_options": ray_options}
    replicas = Replicas(setup=load_model, min=MODEL_GPUS, max=MODEL_GPUS, version=f"setup-{config.model_setup_s}")
    one = {"min": 1, "max": 1}
    return {
        "model_task": dramatiq.actor(**common)(model_task),
        "model_actor_pool": dramatiq.actor(ray=False, **plain)(model_actor_pool),
        "model_replica": dramatiq.actor(replicas=replicas, **common)(model_replica),
        "noop_replica": dramatiq.actor(replicas=Replicas(max_concurrency=8), **plain)(noop_replica),
        "score_one": dramatiq.actor(replicas=Replicas(**one, version="score-one"), **plain)(score_one),
        "score_batch": dramatiq.actor(
            replicas=Replicas(**one, batch=Batch(max_size=32, max_wait_ms=10), version="score-batch"), **plain
        )(score_batch),
        "model_restart": dramatiq.actor(
            ray_options={"runtime_env": ray_options["runtime_env"]},
            replicas=Replicas(setup=load_model, **one, version=config.replica_version),
            **plain,
        )(model_restart),
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
