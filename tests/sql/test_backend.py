"""SQLBackend as a Dramatiq result backend, on SQLite and on PostgreSQL: storing, reading, failing, waiting."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from dramatiq.results import ResultFailure, ResultMissing, ResultTimeout

from dramatiq_ray import ResultBackendError, SQLBackend
from dramatiq_ray.results.sql import waiting
from tests._services import free_port, wait_until
from tests.sql.conftest import Database, make_message


def test_backend_stores_and_reads_back_a_result(backend: SQLBackend) -> None:
    message = make_message()

    backend.store_result(message, {"frames": [1, 2, 3], "name": "ok"}, 60_000)

    assert backend.get_result(message) == {"frames": [1, 2, 3], "name": "ok"}
    assert backend.get_result(message, block=True, timeout=1_000) == {"frames": [1, 2, 3], "name": "ok"}


def test_backend_stores_a_result_again_over_the_previous_one(backend: SQLBackend) -> None:
    message = make_message()
    backend.store_result(message, 1, 60_000)

    backend.store_result(message, 2, 60_000)

    assert backend.get_result(message) == 2


def test_backend_without_a_stored_result_raises_result_missing(backend: SQLBackend) -> None:
    with pytest.raises(ResultMissing):
        backend.get_result(make_message())


def test_backend_stores_a_failure_with_its_type_message_and_traceback(backend: SQLBackend) -> None:
    message = make_message()
    try:
        raise RuntimeError("the render farm is on fire")
    except RuntimeError as error:
        backend.store_exception(message, error, 60_000)

    with pytest.raises(ResultFailure) as failure:
        backend.get_result(message)

    assert (failure.value.orig_exc_type, failure.value.orig_exc_msg) == ("RuntimeError", "the render farm is on fire")
    record = backend.record(message)
    assert record is not None and record.status == "failure"
    assert record.error == "RuntimeError: the render farm is on fire"
    assert record.traceback is not None and 'raise RuntimeError("the render farm is on fire")' in record.traceback


def test_backend_reads_a_value_stored_with_only_its_key(backend: SQLBackend) -> None:
    # As Dramatiq's own tests do for results stored by older versions: _store(key, value, ttl)
    message = make_message()
    backend._store(backend.build_message_key(message), 42, 60_000)

    assert backend.get_result(message, block=True, timeout=1_000) == 42


def test_backend_blocking_read_returns_a_result_stored_by_another_thread(backend: SQLBackend) -> None:
    message = make_message()
    got: list[Any] = []
    waiter = threading.Thread(target=lambda: got.append(backend.get_result(message, block=True, timeout=60_000)))
    waiter.start()

    backend.store_result(message, "done", 60_000)
    waiter.join(60)

    assert got == ["done"]


def test_backend_blocking_read_times_out_when_nothing_is_stored(backend: SQLBackend) -> None:
    started = time.monotonic()

    with pytest.raises(ResultTimeout):
        backend.get_result(make_message(), block=True, timeout=120)

    assert time.monotonic() - started >= 0.12


def test_polling_pause_is_cut_to_the_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a deadline 30 ms away and a pause of 5 s (the pure arithmetic of SQLite's capped backoff)
    slept: list[float] = []
    monkeypatch.setattr(waiting.time, "sleep", slept.append)
    deadline = time.monotonic() + 0.03

    waiting.sleep_until(deadline, 5.0)

    # Then the waiter sleeps only until the deadline
    assert len(slept) == 1 and 0 <= slept[0] <= 0.03


@pytest.mark.parametrize(
    ("value", "reads"),
    [("small", 1), ("x" * (waiting.NOTIFY_DATA_LIMIT + 1), 2)],
    ids=["carried-by-the-notification", "read-after-the-notification"],
)
def test_postgres_waiter_reads_once_and_sleeps_until_notified(
    postgres_database: Database, value: str, reads: int
) -> None:
    # Given a backend whose listener is listening, and the number of reads it makes
    backend = SQLBackend(url=postgres_database.url, table_prefix=postgres_database.prefix)
    try:
        backend._listening()
        listener = wait_until(lambda: backend._listener, timeout=30, what="the listener to start")
        assert listener.listening.wait(30)
        made: list[str] = []
        original = backend._read

        def counted(key: str) -> bytes | None:
            made.append(key)
            return original(key)

        backend._read = counted  # type: ignore[method-assign]
        message = make_message()
        got: list[Any] = []

        # When a thread waits (with a minute to spare) for a result that is stored later
        waiter = threading.Thread(target=lambda: got.append(backend.get_result(message, block=True, timeout=60_000)))
        waiter.start()
        wait_until(lambda: made, timeout=30, what="the waiter's first read")
        assert waiter.is_alive() and len(made) == 1  # it waits for a notification, not for a polling pause
        writer = SQLBackend(url=postgres_database.url, table_prefix=postgres_database.prefix)
        try:
            writer.store_result(message, value, 60_000)
        finally:
            writer.close()
        waiter.join(60)

        # Then the notification woke it: it carried a small result; a large one was read once more
        assert got == [value]
        assert len(made) == reads
    finally:
        backend.close()


def test_postgres_waiters_of_many_messages_share_one_listen_connection(postgres_database: Database) -> None:
    import psycopg

    backend = SQLBackend(url=postgres_database.url, table_prefix=postgres_database.prefix)
    try:
        messages = [make_message() for _ in range(6)]
        results: dict[int, Any] = {}

        def wait_for(index: int) -> None:
            results[index] = backend.get_result(messages[index], block=True, timeout=60_000)

        waiters = [threading.Thread(target=wait_for, args=(index,)) for index in range(6)]
        for thread in waiters:
            thread.start()
        listener = wait_until(lambda: backend._listener, timeout=30, what="the listener to start")
        assert listener.listening.wait(30)
        with psycopg.connect(postgres_database.url) as admin:
            listening = admin.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'dramatiq-ray' AND query LIKE %s",
                (f'LISTEN "{backend.channel}"',),
            ).fetchone()
        for index, message in enumerate(messages):
            backend.store_result(message, index, 60_000)
        for thread in waiters:
            thread.join(60)

        assert listening == (1,)
        assert results == {index: index for index in range(6)}
    finally:
        backend.close()


def test_backend_reading_an_unreachable_database_raises_result_backend_error() -> None:
    # Given a PostgreSQL URL where nothing listens
    backend = SQLBackend(url=f"postgresql://postgres@127.0.0.1:{free_port()}/test", store_timeout=0)
    try:
        # When a result is read, then the error says the database could not be reached (not "missing")
        with pytest.raises(ResultBackendError, match=r"Could not .* Check that the database is up"):
            backend.get_result(make_message())
        with pytest.raises(ResultBackendError, match="Could not store the result"):
            backend.store_result(make_message(), 1, 60_000)
    finally:
        backend.close()


def test_backend_keeps_a_namespace_apart_from_another(new_backend: Callable[..., SQLBackend]) -> None:
    ours, theirs = new_backend(namespace="ours"), new_backend(namespace="theirs")
    message = make_message()

    ours.store_result(message, "ours", 60_000)

    assert ours.get_result(message) == "ours"
    with pytest.raises(ResultMissing):
        theirs.get_result(message)


def test_backend_records_a_cancelled_message_with_status_cancelled(backend: SQLBackend) -> None:
    from dramatiq_ray import MessageCancelledError

    message = make_message()
    backend.store_exception(message, MessageCancelledError("cancelled", message_id=message.message_id), 60_000)

    with pytest.raises(ResultFailure) as failure:
        backend.get_result(message)
    assert failure.value.orig_exc_type == "MessageCancelledError"
    record = backend.record(message)
    assert record is not None and record.status == "cancelled"
    assert [r.message_id for r in backend.query(status="cancelled")] == [message.message_id]
