"""A body's log records come back from Ray to the worker's log output, with the actor name and message id."""

from __future__ import annotations

import logging
import os
from typing import Any

import dramatiq
import pytest
from dramatiq.results import Results
from dramatiq.results.backends import StubBackend

from dramatiq_ray import RayExecutionMiddleware
from dramatiq_ray.errors import ConfigurationError

RESULT_TIMEOUT_MS = 120_000
BODY_LOGGER = "tests.body"


def make_broker(stub_broker: Any, **options: Any) -> Any:
    stub_broker.add_middleware(Results(backend=StubBackend()))
    stub_broker.add_middleware(RayExecutionMiddleware(**options))
    return stub_broker


def body_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.name == BODY_LOGGER]


def test_body_on_ray_info_records_reach_the_worker_with_actor_and_message_id(
    stub_broker, ray_local, start_worker, caplog
) -> None:
    # Given a worker whose logging shows INFO, and a body on Ray that logs at INFO
    caplog.set_level(logging.INFO)
    broker = make_broker(stub_broker)

    @dramatiq.actor(broker=broker, store_results=True)
    def chatty(value: int) -> int:
        logging.getLogger(BODY_LOGGER).info("working on %d", value)
        return os.getpid()

    # When it runs
    start_worker(broker)
    message = chatty.send(7)
    ray_pid = message.get_result(block=True, timeout=RESULT_TIMEOUT_MS)

    # Then its record is re-emitted in the worker, through its own logger, naming the actor and message
    (record,) = body_records(caplog)
    assert ray_pid != os.getpid()
    assert record.levelno == logging.INFO
    assert record.getMessage() == f"[chatty {message.message_id} on Ray pid {ray_pid}] working on 7"
    assert (record.actor, record.message_id, record.remote_pid) == ("chatty", message.message_id, ray_pid)  # type: ignore[attr-defined]
    assert record.process == ray_pid


def test_body_on_ray_that_raises_still_brings_its_records_back(stub_broker, ray_local, start_worker, caplog) -> None:
    caplog.set_level(logging.INFO)
    broker = make_broker(stub_broker)

    @dramatiq.actor(broker=broker, max_retries=0)
    def fails() -> None:
        logging.getLogger(BODY_LOGGER).info("about to fail")
        try:
            raise KeyError("inner")
        except KeyError:
            logging.getLogger(BODY_LOGGER).exception("caught one")
        raise ValueError("the body failed")

    start_worker(broker)
    message = fails.send()
    broker.join(fails.queue_name, fail_fast=False)
    records = body_records(caplog)

    assert [record.getMessage().split("] ", 1)[1] for record in records] == ["about to fail", "caught one"]
    assert {record.message_id for record in records} == {message.message_id}  # type: ignore[attr-defined]
    assert "KeyError: 'inner'" in (records[1].exc_text or "")
    # and the exception the worker sees carries nothing extra
    failed = [record for record in caplog.records if record.exc_info and record.exc_info[0] is ValueError]
    assert failed and not hasattr(failed[0].exc_info[1], "__dramatiq_ray_logs__")  # type: ignore[index]


def test_body_on_ray_records_below_log_level_stay_behind(stub_broker, ray_local, start_worker, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    broker = make_broker(stub_broker, log_level="WARNING")

    @dramatiq.actor(broker=broker, store_results=True)
    def chatty() -> None:
        logging.getLogger(BODY_LOGGER).info("quiet")
        logging.getLogger(BODY_LOGGER).warning("loud")

    start_worker(broker)
    chatty.send().get_result(block=True, timeout=RESULT_TIMEOUT_MS)

    assert [record.getMessage().split("] ", 1)[1] for record in body_records(caplog)] == ["loud"]


def test_body_on_ray_records_follow_the_worker_loggers_levels(
    stub_broker, ray_local, start_worker, caplog, request
) -> None:
    # Given a worker that silences one logger below WARNING, as it would for a local body
    caplog.set_level(logging.INFO)
    noisy = logging.getLogger(f"{BODY_LOGGER}.noisy")
    noisy.setLevel(logging.WARNING)
    request.addfinalizer(lambda: noisy.setLevel(logging.NOTSET))
    broker = make_broker(stub_broker)

    @dramatiq.actor(broker=broker, store_results=True)
    def chatty() -> None:
        logging.getLogger(f"{BODY_LOGGER}.noisy").info("noise")
        logging.getLogger(BODY_LOGGER).info("signal")

    start_worker(broker)
    chatty.send().get_result(block=True, timeout=RESULT_TIMEOUT_MS)

    names = [record.name for record in caplog.records if record.name.startswith(BODY_LOGGER)]
    assert names == [BODY_LOGGER]


@pytest.mark.parametrize("level", ["LOUD", -1.5, True, [10]])
def test_ray_execution_log_level_is_checked(level: Any) -> None:
    with pytest.raises(ConfigurationError, match="log_level"):
        RayExecutionMiddleware(log_level=level)


def test_ray_execution_log_level_accepts_names_and_numbers() -> None:
    assert RayExecutionMiddleware(log_level="debug").log_level == logging.DEBUG
    assert RayExecutionMiddleware(log_level=25).log_level == 25
    assert RayExecutionMiddleware().log_level is None
