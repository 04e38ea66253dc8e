"""A pytest plugin that runs Dramatiq's own result and composition tests against dramatiq-ray's classes.

Dramatiq's source distribution ships ``tests/test_results.py`` and ``tests/test_composition.py`` but not the
conftest that provides their fixtures. This plugin provides them, on real Redis, and puts dramatiq-ray's classes
in place of Dramatiq's stock ones without changing any attribute of a ``dramatiq`` module:

* Every broker it builds is a ``StubBroker`` constructed with an explicit middleware list: Dramatiq's
  ``default_middleware`` with ``dramatiq_ray.Retries`` in place of the stock ``Retries``.
* For the duration of each test, the test module's own global ``Results`` (the name the tests call to build the
  middleware they add with ``stub_broker.add_middleware(Results(backend=...))``) is a subclass of
  ``dramatiq_ray.Results`` that spills every stored result (``max_inline_bytes=0``) to a ``FilesystemStore`` in
  the test's temporary directory. Tests that read results through the backend object they created therefore read
  what that backend holds.
* ``DRAMATIQ_RAY_CONFORMANCE_RAY`` (``off``, the default; ``before``; ``after``) also puts
  ``dramatiq_ray.RayExecutionMiddleware()`` on every broker, so actor bodies run as Ray tasks on one local Ray
  started once per session (``DRAMATIQ_RAY_CONFORMANCE_RAY_CPUS`` logical CPUs):

  - ``before``: the broker is built with the Ray middleware at the end of its list; the Results middleware a test
    adds later comes after it.
  - ``after``: the broker is built with the Ray middleware too (so tests that add no Results middleware still
    run on Ray), but a Results middleware added later without an explicit position is inserted just before it
    (see :class:`ResultsBeforeRayStubBroker`). The list ends up exactly as when an application adds Results first
    and the Ray middleware second.

  In those two variants the tests in :data:`RAY_DESELECTED` are deselected: their actors share in-process state
  with the test, which cannot work when the body runs in another process. ``--conformance-keep-all`` keeps them.

Redis: ``REDIS_URL``, else the local default, else a private ``redis-server`` (as the rest of the test suite finds
it). Each Redis result backend gets a namespace of its own, and every key a test's Redis clients touched is
deleted after the test.

``DRAMATIQ_RAY_CONFORMANCE_REPORT`` names a JSON file written at the end of the session: every test's outcome with
a one-line reason for failures, and evidence that the substitution happened (brokers built and their middleware
checked, Results instances built, blobs spilled, Ray tasks executed).

Usage, from the repository root::

    python -m pytest <sdist>/tests/test_results.py <sdist>/tests/test_composition.py -p tests.conformance.plugin
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import logging
import os
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import dramatiq
import pytest
import redis
import redis.client
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import Middleware, default_middleware
from dramatiq.middleware import Retries as StockRetries
from dramatiq.rate_limits import backends as rate_limiter_backends
from dramatiq.results import Results as StockResults
from dramatiq.results import backends as result_backends

import dramatiq_ray
from tests import _services

MODE_VARIABLE = "DRAMATIQ_RAY_CONFORMANCE_RAY"
CPUS_VARIABLE = "DRAMATIQ_RAY_CONFORMANCE_RAY_CPUS"
REPORT_VARIABLE = "DRAMATIQ_RAY_CONFORMANCE_REPORT"
#: Which result backends the tests' ``result_backend`` fixture gives: Dramatiq's Redis and Stub backends (the
#: default), or dramatiq-ray's SQLBackend on an SQLite file of the test's own (``sqlite``) or on PostgreSQL with a
#: table prefix of the test's own (``postgres``, the server ``tests._services.postgres_server`` finds).
BACKEND_VARIABLE = "DRAMATIQ_RAY_CONFORMANCE_BACKEND"
BACKEND_PARAMS = {"default": ["redis", "stub"], "sqlite": ["sql_sqlite"], "postgres": ["sql_postgres"]}
MODES = ("off", "before", "after")
DEFAULT_RAY_CPUS = 2

#: Tests deselected when actor bodies run on Ray, by ``<file name>::<test function>`` (every parameter), with why.
RAY_DESELECTED: dict[str, str] = {
    "test_composition.py::test_pipelines_expose_completion_stats": (
        "the actor notifies a threading.Condition the test waits on; a Ray task cannot share (or even pickle) it"
    ),
    "test_composition.py::test_groups_expose_completion_stats": (
        "the actor notifies a threading.Condition the test waits on; a Ray task cannot share (or even pickle) it"
    ),
    "test_composition.py::test_groups_completion_count_works_for_tasks_finishing_out_of_order": (
        "the actor notifies a threading.Condition the test waits on; a Ray task cannot share (or even pickle) it"
    ),
    "test_composition.py::test_pipeline_does_not_continue_to_next_actor_when_message_is_marked_as_failed": (
        "the actor sets a nonlocal flag the test reads; on Ray it sets a copy, so the check would pass regardless"
    ),
    "test_composition.py::test_groups_can_have_completion_callbacks": (
        "the actors append to lists and set a threading.Event the test reads; a Ray task cannot share them"
    ),
    "test_composition.py::test_groups_of_pipelines_can_have_completion_callbacks": (
        "the actors append to lists and set a threading.Event the test reads; a Ray task cannot share them"
    ),
    "test_composition.py::test_groups_execute_jobs_in_parallel": (
        "a wall-clock bound: five 100 ms bodies within 500 ms; on Ray's 2 logical CPUs they run in three waves, "
        "each a Ray task (about 0.45-0.6 s on a 2-core machine), so the bound measures the machine, not parallelism"
    ),
    "test_composition.py::test_groups_execute_inner_groups": (
        "a wall-clock bound: six 100 ms bodies in nested groups within 500 ms; on Ray's 2 logical CPUs they run in "
        "three waves, each a Ray task (about 0.45-0.6 s on a 2-core machine), so the bound measures the machine"
    ),
}


# --- the session's record ------------------------------------------------------------------------------------


@dataclass
class Report:
    """What the session did, written as JSON for the test that runs this plugin."""

    mode: str
    dramatiq_version: str
    dramatiq_path: str
    ray_cpus: int | None
    keep_all: bool
    collected: dict[str, int] = field(default_factory=dict)
    deselected: dict[str, str] = field(default_factory=dict)
    deselect_unmatched: list[str] = field(default_factory=list)
    #: One entry per call report, and per setup/teardown report that failed or skipped.
    reports: list[dict[str, str]] = field(default_factory=list)
    brokers_built: int = 0
    brokers_with_results_checked: int = 0
    broker_problems: list[str] = field(default_factory=list)
    modules_patched: list[str] = field(default_factory=list)
    results_built: int = 0
    blobs_spilled: int = 0
    ray_tasks_executed: int | None = None
    ray_tasks_note: str = ""
    backend: str = "default"
    sql_backends_built: int = 0


_REPORT = pytest.StashKey[Report]()


def _report(config: pytest.Config) -> Report:
    return config.stash[_REPORT]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--conformance-keep-all",
        action="store_true",
        default=False,
        help="with Ray on, also run the tests whose actors share in-process state with the test",
    )


def pytest_configure(config: pytest.Config) -> None:
    mode = os.environ.get(MODE_VARIABLE, "off").strip().lower() or "off"
    if mode not in MODES:
        raise pytest.UsageError(f"{MODE_VARIABLE} must be one of {', '.join(MODES)}, not {mode!r}")
    cpus: int | None = None
    if mode != "off":
        raw = os.environ.get(CPUS_VARIABLE, str(DEFAULT_RAY_CPUS))
        if not raw.isdigit() or int(raw) < 1:
            raise pytest.UsageError(f"{CPUS_VARIABLE} must be an integer >= 1, not {raw!r}")
        cpus = int(raw)
    config.stash[_REPORT] = Report(
        mode=mode,
        dramatiq_version=importlib.metadata.version("dramatiq"),
        dramatiq_path=str(Path(dramatiq.__file__).parent),
        ray_cpus=cpus,
        keep_all=bool(config.getoption("conformance_keep_all")),
        backend=_backend_choice(),
    )


def pytest_report_header(config: pytest.Config) -> list[str]:
    report = _report(config)
    lines = [
        f"dramatiq-ray conformance: dramatiq {report.dramatiq_version} from {report.dramatiq_path}",
        f"dramatiq-ray conformance: Ray execution {report.mode}"
        + (f" ({report.ray_cpus} logical CPUs)" if report.ray_cpus else ""),
    ]
    return lines


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    report = _report(config)
    for item in items:
        report.collected[item.path.name] = report.collected.get(item.path.name, 0) + 1
    if report.mode == "off" or report.keep_all:
        return
    kept: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    matched: set[str] = set()
    for item in items:
        key = f"{item.path.name}::{getattr(item, 'originalname', item.name)}"
        if key in RAY_DESELECTED:
            dropped.append(item)
            matched.add(key)
            report.deselected[item.nodeid] = RAY_DESELECTED[key]
        else:
            kept.append(item)
    # An entry for a collected file that matched nothing is stale (the test was renamed or removed upstream).
    report.deselect_unmatched = sorted(
        key for key in RAY_DESELECTED if key.split("::")[0] in report.collected and key not in matched
    )
    if dropped:
        items[:] = kept
        config.hook.pytest_deselected(items=dropped)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call":
        outcome = report.outcome
        if hasattr(report, "wasxfail"):
            outcome = "xfailed" if report.skipped else "xpassed"
    elif report.failed:
        outcome = "error"
    elif report.skipped:
        outcome = "skipped"
    else:
        return
    entry = {"nodeid": report.nodeid, "when": report.when, "outcome": outcome}
    if outcome in ("failed", "error", "skipped"):
        entry["reason"] = _one_line(report)
    if _CURRENT_REPORT is not None:
        _CURRENT_REPORT.reports.append(entry)


def _one_line(report: pytest.TestReport) -> str:
    """The failure's message, with the test's own failing line when the message does not show it."""
    longrepr = report.longrepr
    if isinstance(longrepr, tuple):  # a skip: (path, line, reason)
        text = str(longrepr[-1])
    else:
        crash = getattr(longrepr, "reprcrash", None)
        text = crash.message if crash is not None else str(longrepr)
        source = _failing_source_line(report)
        if source and " ".join(source.split()) not in " ".join(text.split()):
            text = f"{text} [at: {source}]"
    text = re.sub(r" at 0x[0-9a-f]+", "", " ".join(text.split()))
    text = re.sub(r"={5,}.*={5,}", "[...]", text)  # Ray's multi-line serialization report inside a message
    return text if len(text) <= 500 else text[:497] + "..."


def _failing_source_line(report: pytest.TestReport) -> str:
    """The line marked ``>`` in the deepest traceback entry that is in the test's own file."""
    entries = getattr(getattr(report.longrepr, "reprtraceback", None), "reprentries", None) or []
    test_file = Path(report.location[0]).name
    for entry in reversed(entries):
        location = getattr(entry, "reprfileloc", None)
        if location is None or Path(str(location.path)).name != test_file:
            continue
        marked = [line[1:].strip() for line in getattr(entry, "lines", []) if line.startswith(">")]
        return marked[-1] if marked else ""
    return ""


# pytest_runtest_logreport receives no config; the session's report is kept here while the session runs.
_CURRENT_REPORT: Report | None = None


def pytest_sessionstart(session: pytest.Session) -> None:
    global _CURRENT_REPORT
    _CURRENT_REPORT = _report(session.config)


def pytest_sessionfinish(session: pytest.Session) -> None:
    global _CURRENT_REPORT
    report = _report(session.config)
    path = os.environ.get(REPORT_VARIABLE)
    if path:
        Path(path).write_text(json.dumps(asdict(report), indent=2, sort_keys=True))
    _CURRENT_REPORT = None


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    report = _report(config)
    terminalreporter.write_sep("-", "dramatiq-ray conformance")
    terminalreporter.write_line(
        f"mode={report.mode} brokers={report.brokers_built} results_middleware={report.results_built} "
        f"blobs_spilled={report.blobs_spilled} ray_tasks={report.ray_tasks_executed} {report.ray_tasks_note}".rstrip()
    )
    for problem in report.broker_problems:
        terminalreporter.write_line(f"broker problem: {problem}")
    for nodeid, reason in report.deselected.items():
        terminalreporter.write_line(f"deselected on Ray: {nodeid}: {reason}")
    for key in report.deselect_unmatched:
        terminalreporter.write_line(f"stale entry in RAY_DESELECTED (matched no test): {key}")


# --- Ray -----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session", autouse=True)
def _conformance_ray(pytestconfig: pytest.Config) -> Iterator[None]:
    """One local Ray for the session when Ray execution is on; the Ray middleware attaches to it (and, not having
    started it, leaves it running)."""
    report = _report(pytestconfig)
    if report.mode == "off":
        yield
        return
    os.environ.pop("RAY_ADDRESS", None)
    import ray

    ray.init(
        address="local",
        num_cpus=report.ray_cpus,
        include_dashboard=False,
        log_to_driver=False,
        logging_level="WARNING",
    )
    try:
        yield
        report.ray_tasks_executed, report.ray_tasks_note = _count_ray_tasks(ray)
    finally:
        ray.shutdown()


def _count_ray_tasks(ray: Any) -> tuple[int | None, str]:
    """How many Ray tasks this session executed, from Ray's timeline (its task events reach the GCS within about
    a second, so wait for them)."""
    deadline = time.monotonic() + 15
    try:
        while True:
            with _quiet("ray"):
                events = ray.timeline()
            count = sum(1 for event in events if event.get("name") == "task:execute")
            if count or time.monotonic() > deadline:
                return count, ""
            time.sleep(0.5)
    except Exception as error:
        return None, f"(Ray's timeline could not be read: {type(error).__name__}: {error})"


@contextlib.contextmanager
def _quiet(logger_name: str) -> Iterator[None]:
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


# --- each test: our Results in the module's namespace, Redis keys cleaned up --------------------------------


class ConformanceContext:
    """What one test set up: its spill directory and the Redis clients whose keys are deleted afterwards."""

    def __init__(self, report: Report, store_root: Path) -> None:
        self.report = report
        self.store_root = store_root
        self.redis_clients: list[RecordingRedis] = []

    def redis_client(self, url: str) -> RecordingRedis:
        client = RecordingRedis.from_url(url)
        self.redis_clients.append(client)
        return client

    def close(self) -> None:
        for client in self.redis_clients:
            try:
                keys = list(client.keys_written)
                if keys:
                    client.delete(*keys)
            finally:
                client.close()
        self.report.blobs_spilled += sum(1 for _ in self.store_root.rglob("*.json")) if self.store_root.exists() else 0


def spill_everything_results(store_root: Path, report: Report) -> type[dramatiq_ray.Results]:
    """A ``dramatiq_ray.Results`` whose every stored result goes to a ``FilesystemStore`` under ``store_root``."""

    class SpillEverythingResults(dramatiq_ray.Results):
        def __init__(self, *, backend: Any, **options: Any) -> None:
            super().__init__(
                backend=backend, store=dramatiq_ray.FilesystemStore(store_root), max_inline_bytes=0, **options
            )
            report.results_built += 1

    return SpillEverythingResults


@pytest.fixture(autouse=True)
def _conformance(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Any]:
    """Set up first and torn down last in every test (after its worker has stopped)."""
    report = _report(request.config)
    context = ConformanceContext(report, tmp_path / "spilled")
    module = request.module
    current = getattr(module, "Results", None)
    if current is not None:
        if current is not StockResults:
            pytest.fail(
                f"{module.__name__}.Results is {current!r}, not dramatiq.results.Results: the conformance plugin "
                "does not know what it would replace",
                pytrace=False,
            )
        monkeypatch.setattr(module, "Results", spill_everything_results(context.store_root, report))
        if module.__name__ not in report.modules_patched:
            report.modules_patched.append(module.__name__)
    try:
        yield context
    finally:
        context.close()


# --- brokers and workers -------------------------------------------------------------------------------------


class ResultsBeforeRayStubBroker(StubBroker):
    """The broker of the ``after`` variant: a Results middleware added without an explicit position goes just
    before the ``RayExecutionMiddleware`` the broker was built with, as if the application had added Results
    first and the Ray middleware after it."""

    def add_middleware(
        self,
        middleware: Middleware,
        *,
        before: type[Middleware] | None = None,
        after: type[Middleware] | None = None,
    ) -> None:
        if (
            isinstance(middleware, StockResults)
            and before is None
            and after is None
            and any(isinstance(m, dramatiq_ray.RayExecutionMiddleware) for m in self.middleware)
        ):
            before = dramatiq_ray.RayExecutionMiddleware
        super().add_middleware(middleware, before=before, after=after)


def build_stub_broker(mode: str) -> StubBroker:
    """Dramatiq's default middleware with dramatiq_ray.Retries in place of the stock Retries, plus the Ray
    middleware when Ray execution is on."""
    middleware: list[Middleware] = [
        dramatiq_ray.Retries() if cls is StockRetries else cls() for cls in default_middleware
    ]
    if mode != "off":
        middleware.append(dramatiq_ray.RayExecutionMiddleware())
    broker_class = ResultsBeforeRayStubBroker if mode == "after" else StubBroker
    return broker_class(middleware=middleware)


def broker_problems(broker: dramatiq.Broker, mode: str) -> tuple[list[str], bool]:
    """What is wrong with the broker's middleware for ``mode``, and whether a Results middleware was on it."""
    problems: list[str] = []
    stack = broker.middleware
    retries = [type(m).__qualname__ for m in stack if isinstance(m, StockRetries)]
    if [type(m) for m in stack if isinstance(m, StockRetries)] != [dramatiq_ray.Retries]:
        problems.append(f"expected exactly one dramatiq_ray.Retries, found {retries}")
    ray_at = [i for i, m in enumerate(stack) if isinstance(m, dramatiq_ray.RayExecutionMiddleware)]
    if mode == "off" and ray_at:
        problems.append("RayExecutionMiddleware on a broker with Ray execution off")
    if mode != "off" and len(ray_at) != 1:
        problems.append(f"expected one RayExecutionMiddleware, found {len(ray_at)}")
    results_at = [i for i, m in enumerate(stack) if isinstance(m, dramatiq_ray.Results)]
    for i in [i for i, m in enumerate(stack) if isinstance(m, StockResults) and i not in results_at]:
        # Allowed only as the companion our Results puts right after itself: a stock Results that keeps nothing.
        if not (i - 1 in results_at and type(stack[i].backend).__name__ == "_NullBackend"):
            problems.append(f"a stock Results middleware is on the broker: {type(stack[i]).__qualname__}")
    for i in results_at:
        if len(ray_at) == 1 and mode == "before" and not ray_at[0] < i:
            problems.append("the Results middleware comes before RayExecutionMiddleware in the 'before' variant")
        if len(ray_at) == 1 and mode == "after" and not i < ray_at[0]:
            problems.append("the Results middleware comes after RayExecutionMiddleware in the 'after' variant")
    return problems, bool(results_at)


@pytest.fixture
def stub_broker(request: pytest.FixtureRequest) -> Iterator[StubBroker]:
    report = _report(request.config)
    broker = build_stub_broker(report.mode)
    report.brokers_built += 1
    broker.emit_after("process_boot")
    dramatiq.set_broker(broker)
    yield broker
    problems, had_results = broker_problems(broker, report.mode)
    report.broker_problems.extend(f"{request.node.nodeid}: {problem}" for problem in problems)
    report.brokers_with_results_checked += had_results
    broker.flush_all()
    broker.close()


@pytest.fixture
def stub_worker(stub_broker: StubBroker) -> Iterator[dramatiq.Worker]:
    worker = dramatiq.Worker(stub_broker, worker_timeout=100, worker_threads=32)
    worker.start()
    yield worker
    worker.stop()


# --- Redis ---------------------------------------------------------------------------------------------------

# Commands that name no key in their first argument; every other command's first argument (and the second of the
# list-moving ones) is remembered as a key to delete after the test.
_KEYLESS_COMMANDS = frozenset({"MULTI", "EXEC", "DISCARD", "UNWATCH", "PING", "SELECT", "INFO", "CLIENT", "HELLO"})
_TWO_KEY_COMMANDS = frozenset({"RPOPLPUSH", "BRPOPLPUSH", "LMOVE", "BLMOVE"})


def _remember(keys: set[Any], args: tuple[Any, ...]) -> None:
    if len(args) < 2:
        return
    name = str(args[0]).upper()
    if name in _KEYLESS_COMMANDS:
        return
    keys.add(args[1])
    if name in _TWO_KEY_COMMANDS and len(args) > 2:
        keys.add(args[2])


class RecordingRedis(redis.Redis):
    """A Redis client that remembers the keys it touches (pipelines included), so that a test deletes exactly
    the keys it created: Dramatiq's Redis result keys are hashes that no namespace pattern matches, and barrier
    keys are bare group ids."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.keys_written: set[Any] = set()
        super().__init__(*args, **kwargs)

    def execute_command(self, *args: Any, **options: Any) -> Any:
        _remember(self.keys_written, args)
        return super().execute_command(*args, **options)

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> RecordingPipeline:
        pipe = RecordingPipeline(self.connection_pool, self.response_callbacks, transaction, shard_hint)
        pipe.keys_written = self.keys_written
        return pipe


class RecordingPipeline(redis.client.Pipeline):
    keys_written: set[Any]

    def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        _remember(self.keys_written, args)
        return super().execute_command(*args, **kwargs)


@pytest.fixture(scope="session")
def conformance_redis_url() -> Iterator[str]:
    with _services.redis_server() as url:
        yield url


@pytest.fixture
def redis_result_backend(conformance_redis_url: str, _conformance: ConformanceContext) -> result_backends.RedisBackend:
    return result_backends.RedisBackend(
        client=_conformance.redis_client(conformance_redis_url),
        namespace=f"dramatiq-ray-conformance-{uuid.uuid4().hex[:12]}",
    )


@pytest.fixture
def stub_result_backend() -> result_backends.StubBackend:
    return result_backends.StubBackend()


def _backend_choice() -> str:
    choice = os.environ.get(BACKEND_VARIABLE, "default").strip().lower() or "default"
    if choice not in BACKEND_PARAMS:
        raise pytest.UsageError(f"{BACKEND_VARIABLE} must be one of {', '.join(BACKEND_PARAMS)}, not {choice!r}")
    return choice


#: Table prefixes of the session's PostgreSQL backends: their tables are dropped when the session ends, after
#: every worker has stopped (a worker still storing after its test's teardown would create them again).
_POSTGRES_PREFIXES: list[str] = []


@pytest.fixture(scope="session")
def conformance_postgres_url() -> Iterator[str]:
    import psycopg

    with _services.postgres_server() as url:
        yield url
        with psycopg.connect(url, autocommit=True) as connection:
            for prefix in _POSTGRES_PREFIXES:
                connection.execute(f'DROP TABLE IF EXISTS "{prefix}results", "{prefix}schema_version"')


@pytest.fixture
def sql_sqlite_result_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dramatiq_ray.SQLBackend]:
    backend = dramatiq_ray.SQLBackend(url=f"sqlite:///{tmp_path / 'results.db'}")
    _report(request.config).sql_backends_built += 1
    yield backend
    backend.close()


@pytest.fixture
def sql_postgres_result_backend(
    request: pytest.FixtureRequest, conformance_postgres_url: str
) -> Iterator[dramatiq_ray.SQLBackend]:
    prefix = f"c{uuid.uuid4().hex[:10]}_"
    _POSTGRES_PREFIXES.append(prefix)
    backend = dramatiq_ray.SQLBackend(url=conformance_postgres_url, table_prefix=prefix)
    _report(request.config).sql_backends_built += 1
    yield backend
    backend.close()


@pytest.fixture(params=BACKEND_PARAMS[_backend_choice()])
def result_backend(request: pytest.FixtureRequest) -> Any:
    return request.getfixturevalue(f"{request.param}_result_backend")


@pytest.fixture
def redis_rate_limiter_backend(
    conformance_redis_url: str, _conformance: ConformanceContext
) -> rate_limiter_backends.RedisBackend:
    return rate_limiter_backends.RedisBackend(client=_conformance.redis_client(conformance_redis_url))


@pytest.fixture
def stub_rate_limiter_backend() -> rate_limiter_backends.StubBackend:
    return rate_limiter_backends.StubBackend()


@pytest.fixture(params=["redis", "stub"])
def rate_limiter_backend(request: pytest.FixtureRequest) -> Any:
    return request.getfixturevalue(f"{request.param}_rate_limiter_backend")
