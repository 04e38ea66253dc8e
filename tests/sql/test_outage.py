"""The database goes down mid-run (a TCP proxy in front of the real PostgreSQL is cut, then restored): every
message's outcome is either stored or the message runs again; none is acknowledged without its outcome."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import dramatiq
import pytest

from dramatiq_ray import ResultBackendError, Results, SQLBackend
from tests._services import free_port, wait_until
from tests.sql._proxy import CuttableProxy
from tests.sql.conftest import Database, make_message, through

WAIT_MS = 120_000


@pytest.mark.timeout(300)
def test_outage_mid_run_stores_every_outcome_or_runs_the_message_again(
    stub_broker: Any, start_worker: Callable[..., Any], postgres_database: Database, proxy: CuttableProxy
) -> None:
    # Given a worker whose result backend reaches PostgreSQL through the proxy, retrying a store for 200 ms
    backend = SQLBackend(
        url=through(proxy, postgres_database), table_prefix=postgres_database.prefix, store_timeout=200
    )
    direct = SQLBackend(url=postgres_database.url, table_prefix=postgres_database.prefix)
    stub_broker.add_middleware(Results(backend=backend))
    release = threading.Event()
    attempts: list[int] = []

    # (an attempt whose outcome cannot be stored fails; the retry policy runs it again, here quickly)
    @dramatiq.actor(broker=stub_broker, store_results=True, max_retries=1_000, min_backoff=50, max_backoff=500)
    def work(value: int) -> int:
        attempts.append(value)
        release.wait(60)
        return value * 2

    try:
        direct.migrate()
        messages = [work.send(value) for value in range(6)]
        start_worker(stub_broker, threads=2)
        wait_until(lambda: len(attempts) >= 2, timeout=60, what="two bodies to start")

        # When the database goes down while two bodies run and four messages wait, and the bodies finish
        proxy.cut()
        release.set()
        wait_until(
            lambda: any(attempts.count(value) >= 2 for value in range(6)),
            timeout=60,
            what="a message whose outcome could not be stored to run again",
        )
        # ... and comes back
        proxy.restore()

        # Then every message has its result, stored once it could be
        assert [direct.get_result(message, block=True, timeout=WAIT_MS) for message in messages] == [
            value * 2 for value in range(6)
        ]
        assert proxy.cuts == 1
        ran_again = {value for value in range(6) if attempts.count(value) >= 2}
        assert ran_again, "no message ran again: the outage did not hit a store"
        stub_broker.join(work.queue_name, timeout=WAIT_MS)
        records = {record.message_id: record for record in direct.query(limit=100)}
        assert all(records[message.message_id].status == "success" for message in messages)
    finally:
        release.set()
        backend.close()
        direct.close()


def test_blocking_read_of_an_unreachable_postgres_retries_until_it_comes_back(
    postgres_database: Database, proxy: CuttableProxy
) -> None:
    # Given a result stored while the database is reachable, and a backend whose first operation finds it down
    direct = SQLBackend(url=postgres_database.url, table_prefix=postgres_database.prefix)
    backend = SQLBackend(url=through(proxy, postgres_database), table_prefix=postgres_database.prefix)
    message = make_message()
    direct.store_result(message, 42, 60_000)
    proxy.cut()
    outcome: list[Any] = []

    def read() -> None:
        try:
            outcome.append(backend.get_result(message, block=True, timeout=WAIT_MS))
        except Exception as error:
            outcome.append(error)

    reader = threading.Thread(target=read)
    try:
        reader.start()
        # When the blocking read was refused at least twice and the database comes back
        wait_until(lambda: proxy.refused >= 2 or outcome, timeout=60, what="the read to be refused twice")
        proxy.restore()
        reader.join(60)
        # Then it returns the result, instead of the driver's error of its first attempt
        assert outcome == [42]
    finally:
        proxy.restore()
        reader.join(60)
        backend.close()
        direct.close()


def test_blocking_read_of_an_unreachable_postgres_raises_result_backend_error_at_its_timeout() -> None:
    backend = SQLBackend(url=f"postgresql://postgres@127.0.0.1:{free_port()}/test")
    try:
        with pytest.raises(ResultBackendError, match=r"Could not read a result .* Check that the database is up"):
            backend.get_result(make_message(), block=True, timeout=300)
    finally:
        backend.close()
