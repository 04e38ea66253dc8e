"""The dramatiq-ray command against real services (Redis, a filesystem store in tmp_path, moto's S3, a local Ray).

The broker module is the one a user writes, with the store configured in code, written to tmp_path and imported
by ``--broker``; the settings are empty unless a test sets them. Every exit code of every command is pinned.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import dramatiq
import pytest

from dramatiq_ray import FilesystemStore
from dramatiq_ray.cli import main, parse_duration
from dramatiq_ray.execution.local_head import free_port
from dramatiq_ray.payloads.pointers import digest_of
from dramatiq_ray.settings import ENV_PREFIX, SETTING_NAMES, SETTINGS_MODULE_VARIABLE

SCRIPT = Path(sys.executable).parent / "dramatiq-ray"
FROM_RESULTS = "(from the broker's Results)"

APP = '''\
"""A broker module as a user writes it: Redis, with dramatiq-ray's middleware configured in code."""
import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.results.backends import RedisBackend

from dramatiq_ray import DigestStore, FilesystemStore, RayExecutionMiddleware, Results, S3Store

URL, NAMESPACE, ROOT = {url!r}, {namespace!r}, {root!r}
broker = RedisBroker(url=URL, namespace=NAMESPACE)
{middleware}
dramatiq.set_broker(broker)


@dramatiq.actor({make_options})
def make(size):
    return "x" * size


@dramatiq.actor({explode_options})
def explode():
    raise ValueError("exploded on purpose")
'''


def results(store: str = "FilesystemStore(ROOT)", **options: object) -> str:
    """The line of a broker module that adds dramatiq_ray.Results with this store (a Python expression)."""
    extra = "".join(f", {name}={value!r}" for name, value in options.items())
    return (
        'broker.add_middleware(Results(backend=RedisBackend(url=URL, namespace=NAMESPACE + "-results"), '
        f"store={store}, max_inline_bytes=64{extra}))"
    )


def run(argv: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    return main(argv, out=out), out.getvalue()


def line_of(out: str, start: str) -> str:
    return next(line for line in out.splitlines() if line.startswith(start))


def put_blob(root: Path, data: bytes) -> str:
    return FilesystemStore(root).put(digest_of(data), data)


def age(root: Path, days: float) -> None:
    """Make every blob under ``root`` look ``days`` old."""
    then = time.time() - days * 86400
    for blob in root.rglob("*.json"):
        os.utime(blob, (then, then))


@pytest.fixture(autouse=True)
def no_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test starts from the default settings: what the command uses comes from the broker or the test."""
    monkeypatch.delenv(SETTINGS_MODULE_VARIABLE, raising=False)
    for name in SETTING_NAMES:
        monkeypatch.delenv(ENV_PREFIX + name, raising=False)


@pytest.fixture
def store_root(tmp_path: Path) -> Path:
    root = tmp_path / "blobs"
    root.mkdir()
    return root


@pytest.fixture
def settings_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A filesystem store named by the settings (the environment), apart from the broker's."""
    root = tmp_path / "settings-blobs"
    root.mkdir()
    monkeypatch.setenv("DRAMATIQ_RAY_RESULT_STORAGE_BACKEND", "filesystem")
    monkeypatch.setenv("DRAMATIQ_RAY_RESULT_STORAGE_FILESYSTEM_PATH", str(root))
    return root


@pytest.fixture
def write_app(
    tmp_path: Path, redis_url: str, redis_namespace: str, store_root: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., str]]:
    """Write a broker module to tmp_path; returns its name for --broker. ``middleware``: its middleware lines."""
    names: list[str] = []
    monkeypatch.syspath_prepend(str(tmp_path))

    def write(middleware: str = results(), make_options: str = "") -> str:
        name = f"cli_app_{uuid.uuid4().hex[:10]}"
        stores = "store_results=True, " if "Results(" in middleware else ""
        source = APP.format(
            url=redis_url,
            namespace=redis_namespace,
            root=str(store_root),
            middleware=middleware,
            make_options=f"{stores}{make_options}",
            explode_options=f"{stores}max_retries=0",
        )
        (tmp_path / f"{name}.py").write_text(source)
        names.append(name)
        return name

    yield write
    for name in names:
        module = sys.modules.pop(name, None)
        if module is not None:
            module.broker.close()


@pytest.fixture
def app(write_app: Callable[..., str]) -> str:
    """The README's setup: Results with a FilesystemStore, in code."""
    return write_app()


@pytest.fixture
def app_worker(app: str) -> Iterator[ModuleType]:
    """The app's module, imported, with an in-process worker processing its messages."""
    module = __import__(app)
    worker = dramatiq.Worker(module.broker, worker_timeout=100, worker_threads=2)
    worker.start()
    yield module
    worker.stop()


def run_script(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SCRIPT), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=180)


# --- the command line ------------------------------------------------------------------------------------------


def test_parse_duration_accepts_units_and_refuses_nonsense() -> None:
    assert parse_duration("90") == 90
    assert parse_duration("15m") == 900
    assert parse_duration("2h") == 7200
    assert parse_duration("7d") == 7 * 86400
    for bad in ("", "0", "-5m", "1y", "soon"):
        with pytest.raises(Exception, match="not a positive duration"):
            parse_duration(bad)


def test_module_help_lists_every_command(python_subprocess_env: dict[str, str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "dramatiq_ray.cli", "--help"], env=python_subprocess_env, capture_output=True, text=True
    )
    assert result.returncode == 0
    for command in ("check", "result", "gc", "verify"):
        assert command in result.stdout


def test_console_script_exits_2_on_a_usage_error(python_subprocess_env: dict[str, str]) -> None:
    result = subprocess.run([str(SCRIPT), "gc", "--older-than", "soon"], env=python_subprocess_env,
                            capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 2
    assert "not a positive duration" in result.stderr


def test_broker_modules_of_the_current_directory_import(tmp_path: Path, monkeypatch, stub_broker) -> None:
    (tmp_path / "cwd_app_for_cli.py").write_text(
        "import dramatiq\nfrom dramatiq.brokers.stub import StubBroker\nbroker = StubBroker()\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    _, out = run(["check", "--broker", "cwd_app_for_cli", "--skip-ray"])
    assert "StubBroker" in line_of(out, "broker")
    sys.modules.pop("cwd_app_for_cli", None)


# --- check -----------------------------------------------------------------------------------------------------


def test_check_reports_the_brokers_filesystem_store(app: str, store_root: Path) -> None:
    code, out = run(["check", "--broker", app, "--skip-ray"])
    assert f"FilesystemStore({str(store_root)!r}) {FROM_RESULTS}: wrote, read and deleted a probe blob" in out
    assert "DigestStore" not in out
    assert code == 0, out


def test_check_uses_the_settings_store_when_the_brokers_results_has_none(write_app, settings_store: Path) -> None:
    code, out = run(["check", "--broker", write_app(results(store="None")), "--skip-ray"])
    assert f"FilesystemStore({str(settings_store)!r}) (from settings): wrote" in line_of(out, "blob store")
    assert code == 0, out


def test_check_passes_with_reachable_services(app: str, ray_local) -> None:
    code, out = run(["check", "--broker", app])
    assert code == 0, out
    for name in ("settings", "broker", "result backend", "blob store", "ray"):
        assert line_of(out, name)[15:].startswith("ok "), out
    assert f"RedisBackend {FROM_RESULTS}: answered" in line_of(out, "result backend")
    assert out.rstrip().endswith("verdict: ok")


def test_check_fails_when_the_brokers_store_cannot_be_written_exits_1(write_app, store_root: Path) -> None:
    # A regular file where the store's root directory should be: every write fails, even for root.
    (store_root / "in-the-way").write_text("in the way")
    code, out = run(["check", "--broker", write_app(results(store="FilesystemStore(ROOT + '/in-the-way')"))])
    assert "FAILED" in line_of(out, "blob store")
    assert out.rstrip().endswith("verdict: FAILED")
    assert code == 1


def test_check_fails_on_a_broker_without_results_exits_1(write_app) -> None:
    code, out = run(["check", "--broker", write_app(middleware=""), "--skip-ray"])
    assert "FAILED" in line_of(out, "result backend") and "no Results middleware" in out
    assert code == 1


def test_check_attaches_to_the_ray_address_of_the_brokers_middleware(write_app, tmp_path, python_subprocess_env):
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    app = write_app(f"{results()}\nbroker.add_middleware(RayExecutionMiddleware(address={address!r}))")
    result = run_script(["check", "--broker", app], tmp_path, python_subprocess_env)
    ray_line = line_of(result.stdout, "ray")
    assert f"Ray at {address} (from the broker's RayExecutionMiddleware): RayUnavailableError" in ray_line
    assert result.returncode == 1, result.stdout + result.stderr


def test_check_reports_a_ray_attach_failure_once(write_app, tmp_path: Path, python_subprocess_env) -> None:
    address = f"127.0.0.1:{free_port()}"
    app = write_app(f"{results()}\nbroker.add_middleware(RayExecutionMiddleware(address={address!r}))")
    result = run_script(["check", "--broker", app], tmp_path, python_subprocess_env)
    assert (result.stdout + result.stderr).count("Could not attach to Ray") == 1, result.stdout + result.stderr


def test_check_without_a_broker_reads_the_sql_result_backend_of_the_settings(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DRAMATIQ_RAY_RESULT_BACKEND", "sql")
    monkeypatch.setenv("DRAMATIQ_RAY_RESULT_BACKEND_URL", f"sqlite:///{tmp_path / 'results.db'}")
    code, out = run(["check", "--skip-ray"])
    assert "ok       SQLBackend (from settings): answered" in line_of(out, "result backend"), out
    assert code == 0, out


def test_check_without_a_broker_fails_on_an_unreachable_sql_result_backend_of_the_settings_exits_1(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DRAMATIQ_RAY_RESULT_BACKEND", "sql")
    monkeypatch.setenv("DRAMATIQ_RAY_RESULT_BACKEND_URL", f"postgresql://postgres@127.0.0.1:{free_port()}/test")
    code, out = run(["check", "--skip-ray"])
    assert "FAILED   SQLBackend (from settings): ResultBackendError: Could not" in line_of(out, "result backend"), out
    assert out.rstrip().endswith("verdict: FAILED")
    assert code == 1


def test_check_warns_that_the_default_digest_store_loses_large_results() -> None:
    code, out = run(["check", "--skip-ray"])
    row = line_of(out, "blob store")
    assert row.startswith("blob store     WARNING  DigestStore (from settings): keeps only the digest"), out
    assert "RESULT_STORAGE_BACKEND" in row and "values are lost" in row
    assert out.rstrip().endswith("verdict: ok with 1 warning")
    assert code == 0


def test_check_strict_exits_1_on_a_warning() -> None:
    code, out = run(["check", "--skip-ray", "--strict"])
    assert out.rstrip().endswith("verdict: FAILED (--strict) with 1 warning")
    assert code == 1


def test_check_says_a_brokers_results_without_a_store_never_spills(write_app) -> None:
    code, out = run(["check", "--broker", write_app(results(store="None")), "--skip-ray"])
    assert "ok       none (from the broker's Results): results are never spilled" in line_of(out, "blob store"), out
    assert code == 0


def test_check_exits_2_on_invalid_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRAMATIQ_RAY_MAX_TASK_ATTEMPTS", "0")
    code, out = run(["check", "--skip-ray"])
    assert "MAX_TASK_ATTEMPTS must be an integer >= 1" in out
    assert "verdict: FAILED" in out
    assert code == 2


def test_check_exits_2_when_the_broker_cannot_be_imported() -> None:
    code, out = run(["check", "--broker", "no_such_app_for_cli", "--skip-ray"])
    assert "cannot import 'no_such_app_for_cli'" in line_of(out, "broker")
    assert code == 2


# --- result ----------------------------------------------------------------------------------------------------


def test_result_prints_a_hydrated_spilled_result(app_worker: ModuleType) -> None:
    message = app_worker.make.send(500)
    assert len(message.get_result(block=True, timeout=30_000)) == 500
    code, out = run(["result", message.message_id, "--actor", "make", "--broker", app_worker.__name__])
    assert json.loads(out) == "x" * 500
    assert code == 0


def test_result_says_which_backend_and_store_it_read(app_worker: ModuleType, store_root: Path, capsys) -> None:
    message = app_worker.make.send(500)
    message.get_result(block=True, timeout=30_000)
    run(["result", message.message_id, "--actor", "make", "--broker", app_worker.__name__])
    used = f"result backend: RedisBackend {FROM_RESULTS}, store: FilesystemStore({str(store_root)!r}) {FROM_RESULTS}"
    assert used in capsys.readouterr().err


def test_result_pointer_flag_prints_the_raw_pointer(app_worker: ModuleType) -> None:
    message = app_worker.make.send(500)
    message.get_result(block=True, timeout=30_000)
    code, out = run(["result", message.message_id, "--actor", "make", "--broker", app_worker.__name__, "--pointer"])
    assert out.startswith("resultfs://sha256/") and "bytes=502" in out
    assert code == 0


def test_result_of_a_failed_message_exits_1(app_worker: ModuleType) -> None:
    message = app_worker.explode.send()
    with pytest.raises(dramatiq.results.ResultFailure):
        message.get_result(block=True, timeout=30_000)
    code, out = run(["result", message.message_id, "--actor", "explode", "--broker", app_worker.__name__])
    assert "ValueError: exploded on purpose" in out
    assert code == 1


def test_result_of_an_unknown_message_exits_3(app: str) -> None:
    code, out = run(["result", "no-such-message", "--actor", "make", "--broker", app])
    assert "No result for message no-such-message" in out
    assert code == 3


def test_result_of_an_unknown_actor_exits_2(app: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _ = run(["result", "some-message", "--actor", "mkae", "--broker", app])
    assert "unknown actor 'mkae'" in capsys.readouterr().err
    assert code == 2


def test_result_of_an_unknown_actor_lists_the_declared_actors(app: str, capsys) -> None:
    run(["result", "some-message", "--actor", "mkae", "--broker", app])
    assert "declared actors: explode, make" in capsys.readouterr().err


def test_result_on_a_broker_without_results_exits_2(write_app, capsys: pytest.CaptureFixture[str]) -> None:
    code, _ = run(["result", "some-message", "--actor", "make", "--broker", write_app(middleware="")])
    assert "no Results middleware" in capsys.readouterr().err
    assert code == 2


def test_result_with_a_broker_that_cannot_be_imported_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _ = run(["result", "m", "--actor", "a", "--broker", "no_such_app_for_cli"])
    assert "cannot import 'no_such_app_for_cli'" in capsys.readouterr().err
    assert code == 2


# --- gc --------------------------------------------------------------------------------------------------------


def test_gc_scans_the_brokers_store(app: str, store_root: Path) -> None:
    put_blob(store_root, b'"old"')
    age(store_root, days=3)
    code, out = run(["gc", "--broker", app, "--older-than", "1d"])
    assert out.startswith(f"store: FilesystemStore({str(store_root)!r}) {FROM_RESULTS}\n")
    assert "scanned 1, kept 0, deleted 1" in out
    assert code == 0


def test_gc_deletes_old_blobs_of_the_settings_store_and_keeps_recent_ones(settings_store: Path) -> None:
    put_blob(settings_store, b'"old"')
    age(settings_store, days=3)
    put_blob(settings_store, b'"recent"')
    code, out = run(["gc", "--older-than", "1d"])
    assert out.startswith(f"store: FilesystemStore({str(settings_store)!r}) (from settings)\n")
    assert "deleted 1" in out and "kept 1" in out
    assert len(list(settings_store.rglob("*.json"))) == 1
    assert code == 0


def test_gc_dry_run_lists_old_blobs_and_deletes_nothing(app: str, store_root: Path) -> None:
    put_blob(store_root, b'"old"')
    age(store_root, days=3)
    code, out = run(["gc", "--broker", app, "--dry-run"])
    assert "would delete" in out and "scanned 1" in out
    assert len(list(store_root.rglob("*.json"))) == 1
    assert code == 0


def test_gc_without_any_store_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(["gc"])
    err = capsys.readouterr().err
    assert "no blob store to collect" in err and "DRAMATIQ_RAY_RESULT_STORAGE_BACKEND" in err
    assert "scanned" not in out
    assert code == 2


def test_gc_with_a_digest_store_on_the_broker_exits_2(write_app, capsys: pytest.CaptureFixture[str]) -> None:
    code, _ = run(["gc", "--broker", write_app(results(store="DigestStore()"))])
    assert "the broker's Results uses DigestStore" in capsys.readouterr().err
    assert code == 2


def test_gc_on_a_broker_whose_results_has_no_store_exits_2(write_app, capsys) -> None:
    code, _ = run(["gc", "--broker", write_app(results(store="None"))])
    assert "the broker's Results has no store, and the settings' RESULT_STORAGE_BACKEND is 'digest'" in (
        capsys.readouterr().err
    )
    assert code == 2


def test_gc_refuses_an_age_shorter_than_the_default_result_ttl(app: str, store_root: Path, capsys) -> None:
    put_blob(store_root, b'"live"')
    age(store_root, days=1 / 86400 * 60)  # a minute old: its result still lives
    code, _ = run(["gc", "--broker", app, "--older-than", "5s"])
    err = capsys.readouterr().err
    assert "--older-than 5s is shorter than the longest result TTL in use, 10m" in err
    assert "blobs of results still alive would be deleted" in err
    assert len(list(store_root.rglob("*.json"))) == 1
    assert code == 2


def test_gc_refuses_an_age_shorter_than_an_actors_result_ttl(write_app, capsys) -> None:
    app = write_app(make_options=f"result_ttl={2 * 86400 * 1000}")
    code, _ = run(["gc", "--broker", app, "--older-than", "1d"])
    assert "longest result TTL in use, 2d (the result_ttl option of actor 'make')" in capsys.readouterr().err
    assert code == 2


def test_gc_force_accepts_an_age_shorter_than_the_result_ttl(app: str, store_root: Path) -> None:
    put_blob(store_root, b'"old"')
    age(store_root, days=1)
    code, out = run(["gc", "--broker", app, "--older-than", "5s", "--force"])
    assert "deleted 1" in out
    assert code == 0


def test_gc_reports_invalid_settings_with_exit_2(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setenv("DRAMATIQ_RAY_RESULT_STORAGE_BACKEND", "filesystem")
    code, _ = run(["gc"])
    assert "needs RESULT_STORAGE_FILESYSTEM_PATH" in capsys.readouterr().err
    assert code == 2


def test_gc_exits_1_when_the_store_fails(write_app, s3_server, capsys: pytest.CaptureFixture[str]) -> None:
    store = f"S3Store('no-such-bucket-{uuid.uuid4().hex[:8]}', endpoint_url={s3_server.endpoint_url!r})"
    code, _ = run(["gc", "--broker", write_app(results(store=store))])
    assert "NoSuchBucket" in capsys.readouterr().err
    assert code == 1


# --- verify ----------------------------------------------------------------------------------------------------


def test_verify_checks_a_pointer_of_the_brokers_store(app: str, store_root: Path) -> None:
    code, out = run(["verify", "--broker", app, put_blob(store_root, b'"hello"')])
    assert out.startswith(f"store: FilesystemStore({str(store_root)!r}) {FROM_RESULTS}\n")
    assert "ok: 7 bytes, sha256 " in out
    assert code == 0


def test_verify_checks_a_pointer_of_the_settings_store(settings_store: Path) -> None:
    code, out = run(["verify", put_blob(settings_store, b'"hello"')])
    assert "(from settings)" in out and "ok: 7 bytes" in out
    assert code == 0


def test_verify_fails_on_a_corrupted_blob_exits_1(app: str, store_root: Path, capsys) -> None:
    pointer = put_blob(store_root, b'"hello"')
    (blob,) = store_root.rglob("*.json")
    blob.write_bytes(b'"HELLO"')
    code, _ = run(["verify", "--broker", app, pointer])
    assert "BlobIntegrityError" in capsys.readouterr().err
    assert code == 1


def test_verify_refuses_a_malformed_pointer_exits_1(app: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _ = run(["verify", "--broker", app, "resultfs://sha256/../../etc/passwd?bytes=1"])
    assert "InvalidPointerError" in capsys.readouterr().err
    assert code == 1


def test_verify_says_a_digest_pointer_has_nothing_to_verify_exits_1(app: str) -> None:
    code, out = run(["verify", "--broker", app, f"oversize://sha256/{'a' * 64}?bytes=10"])
    assert "digest-only" in out
    assert code == 1


def test_verify_exits_2_on_invalid_settings(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setenv("DRAMATIQ_RAY_RESULT_STORAGE_BACKEND", "filesystem")
    code, _ = run(["verify", f"resultfs://sha256/{'a' * 64}?bytes=10"])
    assert "configuration error" in capsys.readouterr().err
    assert code == 2


def test_verify_exits_2_when_the_broker_cannot_be_imported(capsys: pytest.CaptureFixture[str]) -> None:
    code, _ = run(["verify", "--broker", "no_such_app_for_cli", f"oversize://sha256/{'a' * 64}?bytes=10"])
    assert "cannot import 'no_such_app_for_cli'" in capsys.readouterr().err
    assert code == 2


# --- cancel and progress ---------------------------------------------------------------------------------------


def test_cancel_of_a_message_not_started_yet_exits_0_and_its_worker_skips_it(app: str) -> None:
    from dramatiq.results import ResultFailure

    module = __import__(app)
    message = module.make.send_with_options(args=(3,), delay=200)

    code, out = run(["cancel", message.message_id, "--broker", app])

    assert code == 0, out
    worker = dramatiq.Worker(module.broker, worker_timeout=100, worker_threads=1)
    worker.start()
    try:
        with pytest.raises(ResultFailure) as failure:
            message.get_result(block=True, timeout=60_000)
    finally:
        worker.stop()
    assert failure.value.orig_exc_type == "MessageCancelledError"


def test_cancel_of_an_unknown_message_says_nothing_to_cancel_exits_1(app: str) -> None:
    code, out = run(["cancel", str(uuid.uuid4()), "--broker", app])

    assert code == 1
    assert "Nothing to cancel" in out


def test_progress_of_a_message_without_a_report_exits_3(app: str) -> None:
    code, out = run(["progress", str(uuid.uuid4()), "--broker", app])

    assert code == 3
    assert "No progress" in out
