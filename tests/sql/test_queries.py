"""Asking which messages did what: SQLBackend.query and ``dramatiq-ray results list``."""

from __future__ import annotations

import datetime
import io
import json
import time
from typing import Any

import pytest

from dramatiq_ray import ConfigurationError, ResultRecord, SQLBackend
from dramatiq_ray.cli import EXIT_OK, EXIT_USAGE, main
from dramatiq_ray.results.sql.records import STATUSES
from tests.sql.conftest import Database, make_message


def fail(backend: SQLBackend, message: Any, text: str) -> None:
    try:
        raise RuntimeError(text)
    except RuntimeError as error:
        backend.store_exception(message, error, 60_000)


@pytest.fixture
def history(backend: SQLBackend) -> dict[str, Any]:
    """Three render failures, one render success, one encode failure, one render still enqueued."""
    messages = {
        "old_render_failure": make_message("render"),
        "render_success": make_message("render"),
        "render_failure": make_message("render"),
        "encode_failure": make_message("encode"),
        "render_enqueued": make_message("render"),
        "new_render_failure": make_message("render"),
    }
    fail(backend, messages["old_render_failure"], "old")
    backend.store_result(messages["render_success"], 1, 60_000)
    fail(backend, messages["render_failure"], "disk full")
    fail(backend, messages["encode_failure"], "codec")
    backend.record_message_event("enqueued", messages["render_enqueued"], 60_000)
    fail(backend, messages["new_render_failure"], "gpu lost")
    return messages


def ids(records: list[ResultRecord]) -> list[str | None]:
    return [record.message_id for record in records]


def test_query_filters_by_actor_and_status_newest_first(backend: SQLBackend, history: dict[str, Any]) -> None:
    records = backend.query(actor="render", status="failure")

    assert ids(records) == [
        history["new_render_failure"].message_id,
        history["render_failure"].message_id,
        history["old_render_failure"].message_id,
    ]
    assert all(isinstance(record, ResultRecord) for record in records)
    newest = records[0]
    assert (newest.actor_name, newest.status, newest.attempts, newest.error) == (
        "render",
        "failure",
        1,
        "RuntimeError: gpu lost",
    )
    assert newest.finished_at is not None and newest.finished_at.tzinfo is datetime.UTC


def test_query_takes_several_statuses_and_a_limit(backend: SQLBackend, history: dict[str, Any]) -> None:
    records = backend.query(status=["success", "enqueued"], limit=1)

    assert ids(records) == [history["render_enqueued"].message_id]


def test_query_since_keeps_only_recent_changes(backend: SQLBackend, history: dict[str, Any]) -> None:
    cutoff = datetime.datetime.now(datetime.UTC)
    time.sleep(0.01)  # a change strictly after the cutoff, on any clock resolution
    backend.store_result(history["render_enqueued"], "finally", 60_000)

    assert ids(backend.query(since=cutoff)) == [history["render_enqueued"].message_id]
    assert len(backend.query(since=datetime.timedelta(hours=1))) == len(history)


def test_query_leaves_out_expired_rows(backend: SQLBackend) -> None:
    message = make_message("render")
    backend.store_result(message, 1, 0)  # a TTL of 0 ms: expired at once

    assert backend.query(actor="render") == []
    assert backend.record(message) is None


@pytest.mark.parametrize(
    ("arguments", "problem"),
    [
        ({"status": "exploded"}, "Unknown status"),
        ({"limit": 0}, "limit must be an integer from 1 to 10000"),
        ({"since": 3600}, "since must be a datetime.timedelta"),
        ({"since": datetime.timedelta(hours=-1)}, "positive timedelta"),
    ],
)
def test_query_with_bad_arguments_says_what_to_pass(
    backend: SQLBackend, arguments: dict[str, Any], problem: str
) -> None:
    with pytest.raises(ConfigurationError, match=problem):
        backend.query(**arguments)


def test_record_turns_into_json_ready_values(backend: SQLBackend, history: dict[str, Any]) -> None:
    (record,) = backend.query(actor="encode")

    data = json.loads(json.dumps(record.as_json()))

    assert data["status"] == "failure" and data["error"] == "RuntimeError: codec"
    assert datetime.datetime.fromisoformat(data["finished_at"]) == record.finished_at
    assert set(STATUSES) >= {data["status"]}


# --- the command ---------------------------------------------------------------------------------------------


def run_cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(list(argv), out=out)
    return code, out.getvalue()


def test_results_list_json_prints_the_records_the_query_returns(
    database: Database, backend: SQLBackend, history: dict[str, Any]
) -> None:
    code, output = run_cli(
        "results", "list", "--url", database.url, "--table-prefix", database.prefix,
        "--actor", "render", "--status", "failure", "--since", "1h", "--json",
    )  # fmt: skip

    assert code == EXIT_OK
    listed = json.loads(output)
    assert [item["message_id"] for item in listed] == ids(backend.query(actor="render", status="failure"))
    assert {item["error"] for item in listed} == {
        "RuntimeError: gpu lost",
        "RuntimeError: disk full",
        "RuntimeError: old",
    }


def test_results_list_prints_a_table_with_a_count(
    database: Database, backend: SQLBackend, history: dict[str, Any]
) -> None:
    code, output = run_cli("results", "list", "--url", database.url, "--table-prefix", database.prefix, "--limit", "2")

    lines = output.splitlines()
    assert code == EXIT_OK
    assert lines[0].split()[:4] == ["UPDATED", "(UTC)", "STATUS", "ACTOR"]
    assert "failure" in lines[1] and "RuntimeError: gpu lost" in lines[1]
    assert history["render_enqueued"].message_id in lines[2] and "enqueued" in lines[2]
    assert lines[-1] == "2 message(s) (--limit reached: there may be more)"


def test_results_list_reads_the_backend_of_the_broker(
    database: Database, backend: SQLBackend, history: dict[str, Any], tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = tmp_path / f"sql_app_{database.prefix}.py"
    app.write_text(
        "import dramatiq\n"
        "from dramatiq.brokers.stub import StubBroker\n"
        "from dramatiq_ray import Results, SQLBackend\n"
        "broker = StubBroker()\n"
        f"broker.add_middleware(Results(backend=SQLBackend(url={database.url!r}, table_prefix={database.prefix!r})))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))

    code, output = run_cli("results", "list", "--broker", app.stem, "--actor", "encode", "--json")

    assert code == EXIT_OK
    assert [item["message_id"] for item in json.loads(output)] == [history["encode_failure"].message_id]


def test_results_list_reads_the_backend_the_settings_name(
    database: Database, backend: SQLBackend, history: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DRAMATIQ_RAY_RESULT_BACKEND", "sql")
    monkeypatch.setenv("DRAMATIQ_RAY_RESULT_BACKEND_URL", database.url)
    other = SQLBackend(url=database.url)  # the default table prefix
    try:
        message = make_message("render")
        other.store_result(message, 1, 60_000)

        code, output = run_cli("results", "list", "--json")

        assert code == EXIT_OK
        assert message.message_id in {item["message_id"] for item in json.loads(output)}
    finally:
        other.close()
        if database.kind == "postgresql":
            from tests.sql.conftest import drop_tables

            drop_tables(database.url, "dramatiq_ray_")


def test_results_list_without_an_sql_backend_says_how_to_name_one(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DRAMATIQ_RAY_RESULT_BACKEND", raising=False)

    code, _ = run_cli("results", "list")

    assert code == EXIT_USAGE
    assert "no SQL result backend to list" in capsys.readouterr().err


def test_results_list_rejects_an_unknown_status() -> None:
    with pytest.raises(SystemExit) as exit_:
        run_cli("results", "list", "--status", "exploded")
    assert exit_.value.code == EXIT_USAGE
