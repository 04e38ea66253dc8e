"""The dramatiq-ray command: check, result, gc, verify; exit codes and output against real services."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import dramatiq
import pytest

from dramatiq_ray import FilesystemStore
from dramatiq_ray.cli import main, parse_duration
from dramatiq_ray.results.pointers import digest_of


def run(argv: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    return main(argv, out=out), out.getvalue()


@pytest.fixture
def store_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "blobs"
    root.mkdir()
    monkeypatch.setenv("DRAMATIQ_RAY_RESULT_STORAGE_BACKEND", "filesystem")
    monkeypatch.setenv("DRAMATIQ_RAY_RESULT_STORAGE_FILESYSTEM_PATH", str(root))
    return root


@pytest.fixture
def results_app(redis_url: str, redis_namespace: str, store_root: Path, monkeypatch: pytest.MonkeyPatch):
    """tests.apps.results_app, imported fresh for this test's namespace, with an in-process worker."""
    monkeypatch.setenv("DRAMATIQ_RAY_TEST_BROKER_URL", redis_url)
    monkeypatch.setenv("DRAMATIQ_RAY_TEST_NAMESPACE", redis_namespace)
    sys.modules.pop("tests.apps.results_app", None)
    import tests.apps.results_app as app

    worker = dramatiq.Worker(app.broker, worker_timeout=100, worker_threads=2)
    worker.start()
    yield app
    worker.stop()
    app.broker.close()
    sys.modules.pop("tests.apps.results_app", None)


def put_blob(root: Path, data: bytes) -> str:
    return FilesystemStore(root).put(digest_of(data), data)


def test_parse_duration_accepts_units_and_refuses_nonsense() -> None:
    assert parse_duration("90") == 90
    assert parse_duration("15m") == 900
    assert parse_duration("2h") == 7200
    assert parse_duration("7d") == 7 * 86400
    for bad in ("", "0", "-5m", "1y", "soon"):
        with pytest.raises(Exception, match="not a positive duration"):
            parse_duration(bad)


def test_cli_help_lists_every_command(python_subprocess_env) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "dramatiq_ray.cli", "--help"], env=python_subprocess_env, capture_output=True, text=True
    )
    assert result.returncode == 0
    for command in ("check", "result", "gc", "verify"):
        assert command in result.stdout


def test_cli_console_script_is_installed_and_exits_2_on_a_usage_error(python_subprocess_env) -> None:
    script = Path(sys.executable).parent / "dramatiq-ray"
    result = subprocess.run([str(script), "gc", "--older-than", "soon"], env=python_subprocess_env,
                            capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 2
    assert "not a positive duration" in result.stderr


def test_cli_verify_accepts_an_intact_blob(store_root: Path) -> None:
    pointer = put_blob(store_root, b'"hello"')
    code, out = run(["verify", pointer])
    assert code == 0
    assert out.startswith("ok: 7 bytes, sha256 ")


def test_cli_verify_fails_on_a_corrupted_blob(store_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pointer = put_blob(store_root, b'"hello"')
    (blob,) = [p for p in store_root.rglob("*.json")]
    blob.write_bytes(b'"HELLO"')
    code, _ = run(["verify", pointer])
    assert code == 1
    assert "BlobIntegrityError" in capsys.readouterr().err


def test_cli_verify_refuses_a_malformed_pointer(store_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _ = run(["verify", "resultfs://sha256/../../etc/passwd?bytes=1"])
    assert code == 1
    assert "InvalidPointerError" in capsys.readouterr().err


def test_cli_verify_says_a_digest_pointer_has_nothing_to_verify(store_root: Path) -> None:
    code, out = run(["verify", f"oversize://sha256/{'a' * 64}?bytes=10"])
    assert code == 1
    assert "digest-only" in out


def test_cli_gc_dry_run_lists_old_blobs_and_deletes_nothing(store_root: Path) -> None:
    put_blob(store_root, b'"old"')
    (blob,) = list(store_root.rglob("*.json"))
    old = time.time() - 3 * 86400
    os.utime(blob, (old, old))
    code, out = run(["gc", "--older-than", "1d", "--dry-run"])
    assert code == 0
    assert "would delete" in out and "scanned 1" in out
    assert blob.exists()


def test_cli_gc_deletes_old_blobs_and_keeps_recent_ones(store_root: Path) -> None:
    put_blob(store_root, b'"old"')
    (old_blob,) = list(store_root.rglob("*.json"))
    old = time.time() - 3 * 86400
    os.utime(old_blob, (old, old))
    put_blob(store_root, b'"recent"')
    code, out = run(["gc", "--older-than", "1d"])
    assert code == 0
    assert "deleted 1" in out and "kept 1" in out
    assert not old_blob.exists()
    assert len(list(store_root.rglob("*.json"))) == 1


def test_cli_gc_reports_invalid_settings_with_exit_2(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setenv("DRAMATIQ_RAY_RESULT_STORAGE_BACKEND", "filesystem")
    monkeypatch.delenv("DRAMATIQ_RAY_RESULT_STORAGE_FILESYSTEM_PATH", raising=False)
    code, _ = run(["gc"])
    assert code == 2
    assert "needs RESULT_STORAGE_FILESYSTEM_PATH" in capsys.readouterr().err


def test_cli_result_prints_a_hydrated_spilled_result(results_app) -> None:
    message = results_app.make.send(500)
    assert len(message.get_result(block=True, timeout=30_000)) == 500
    code, out = run(["result", message.message_id, "--actor", "make", "--broker", "tests.apps.results_app"])
    assert code == 0
    assert json.loads(out) == "x" * 500


def test_cli_result_pointer_flag_prints_the_raw_pointer(results_app) -> None:
    message = results_app.make.send(500)
    message.get_result(block=True, timeout=30_000)
    code, out = run(["result", message.message_id, "--actor", "make", "--broker", "tests.apps.results_app",
                     "--pointer"])  # fmt: skip
    assert code == 0
    assert out.startswith("resultfs://sha256/") and "bytes=502" in out


def test_cli_result_of_an_unknown_message_exits_3(results_app) -> None:
    code, out = run(["result", "no-such-message", "--actor", "make", "--broker", "tests.apps.results_app"])
    assert code == 3
    assert "No result for message no-such-message" in out


def test_cli_result_of_a_failed_message_prints_the_failure(results_app) -> None:
    message = results_app.explode.send()
    with pytest.raises(dramatiq.results.ResultFailure):
        message.get_result(block=True, timeout=30_000)
    code, out = run(["result", message.message_id, "--actor", "explode", "--broker", "tests.apps.results_app"])
    assert code == 1
    assert "ValueError: exploded on purpose" in out


def test_cli_result_with_a_broker_that_cannot_be_imported_exits_2(capsys) -> None:
    code, _ = run(["result", "m", "--actor", "a", "--broker", "tests.apps.no_such_app"])
    assert code == 2
    assert "cannot import 'tests.apps.no_such_app'" in capsys.readouterr().err


def test_cli_check_passes_with_reachable_services(results_app, ray_local) -> None:
    code, out = run(["check", "--broker", "tests.apps.results_app"])
    assert code == 0, out
    lines = {line.split()[0]: line for line in out.splitlines()}
    for name in ("settings", "broker", "blob", "ray"):
        assert " ok " in lines[name], out
    assert "wrote, read and deleted a probe blob" in out
    assert out.rstrip().endswith("verdict: ok")


def test_cli_check_fails_when_the_store_cannot_be_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A regular file where the store's root directory should be: every write fails, even for root.
    not_a_directory = tmp_path / "blobs"
    not_a_directory.write_text("in the way")
    monkeypatch.setenv("DRAMATIQ_RAY_RESULT_STORAGE_BACKEND", "filesystem")
    monkeypatch.setenv("DRAMATIQ_RAY_RESULT_STORAGE_FILESYSTEM_PATH", str(not_a_directory))
    code, out = run(["check", "--skip-ray"])
    assert code == 1
    store_line = next(line for line in out.splitlines() if line.startswith("blob store"))
    assert "FAILED" in store_line
    assert out.rstrip().endswith("verdict: FAILED")


def test_cli_check_fails_on_invalid_settings_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRAMATIQ_RAY_MAX_TASK_ATTEMPTS", "0")
    code, out = run(["check", "--skip-ray"])
    assert code == 1
    assert "MAX_TASK_ATTEMPTS must be an integer >= 1" in out
    assert "verdict: FAILED" in out


def test_cli_broker_modules_of_the_current_directory_import(tmp_path: Path, monkeypatch, stub_broker) -> None:
    # Given a broker module in the current directory, as the dramatiq command would find it
    (tmp_path / "cwd_app_for_cli.py").write_text(
        "import dramatiq\nfrom dramatiq.brokers.stub import StubBroker\nbroker = StubBroker()\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    # When check imports it, then the broker is found (it has no Results, which check reports as a failure)
    code, out = run(["check", "--broker", "cwd_app_for_cli", "--skip-ray"])
    assert "StubBroker" in out
    assert "no Results middleware" in out
    assert code == 1
