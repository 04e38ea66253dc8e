"""Webhook progress events: off by default; when on, each new progress a running body reports is POSTed as a
signed event of type ``progress`` (throttled: one look per ``progress_every``), never after the completion."""

from __future__ import annotations

import json
import logging
import os
import threading
from typing import Any

import dramatiq
import pytest
from dramatiq.results.backends import RedisBackend
from prometheus_client import REGISTRY

from dramatiq_ray import ConfigurationError, Results, Webhooks, report_progress
from dramatiq_ray.webhooks import DELIVERY_QUEUE, ID_HEADER, verify
from tests._services import wait_until
from tests.delivery.conftest import SECRET, Receiver

RESULT_TIMEOUT_MS = 60_000


def progress_count(outcome: str) -> float:
    return REGISTRY.get_sample_value("dramatiq_ray_webhook_progress_events_total", {"outcome": outcome}) or 0.0


def install(broker: dramatiq.Broker, redis_url: str, namespace: str, **options: Any) -> Webhooks:
    """dramatiq_ray.Results over Redis (where progress is kept), and Webhooks over plain http with a quick look."""
    broker.add_middleware(Results(backend=RedisBackend(url=redis_url, namespace=namespace), store_results=True))
    webhooks = Webhooks(secrets=[SECRET], allow_http=True, progress_every=50, **options)
    broker.add_middleware(webhooks)
    return webhooks


def events(receiver: Receiver, message_id: str) -> list[dict[str, Any]]:
    return [
        verify(r.body, r.headers, [SECRET]) for r in receiver.requests if json.loads(r.body)["message_id"] == message_id
    ]


def drain(broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
    broker.join("default", fail_fast=False)
    worker.join()
    broker.join(DELIVERY_QUEUE, fail_fast=False)
    worker.join()


def test_webhook_progress_events_post_each_new_progress_then_the_completion(
    stub_broker, start_worker, receiver: Receiver, redis_url, redis_namespace
) -> None:
    # Given progress events on, and a body that moves on only once its progress was seen by the receiver
    install(stub_broker, redis_url, redis_namespace, progress=True)

    def seen(done: int) -> bool:
        return any(json.loads(r.body).get("progress", {}).get("done") == done for r in receiver.requests)

    @dramatiq.actor(webhook=receiver.url())
    def steps() -> str:
        for done in (1, 2):
            while not seen(done):
                report_progress(done, 2, note=f"step {done}")  # written at most every 0.5 s
                threading.Event().wait(0.1)
        return "done"

    # When it runs
    worker = start_worker(stub_broker)
    message = steps.send()
    assert message.get_result(block=True, timeout=RESULT_TIMEOUT_MS) == "done"
    drain(stub_broker, worker)

    # Then the receiver got signed progress events, 1 then 2, each with an id of its own, then the completion
    # (the deliveries run on several worker threads: events are put in order by the number in their id)
    mine = [r for r in receiver.requests if json.loads(r.body)["message_id"] == message.message_id]
    by_id = {r.headers[ID_HEADER]: verify(r.body, r.headers, [SECRET]) for r in mine}
    (completion,) = [event for event in by_id.values() if "type" not in event]
    assert completion["status"] == "succeeded" and by_id[message.message_id] is completion
    progress = [by_id[f"{message.message_id}.progress.{n}"] for n in range(1, len(by_id))]
    assert {event["type"] for event in progress} == {"progress"}
    dones = [event["progress"]["done"] for event in progress]
    assert dones[0] == 1 and 2 in dones and dones == sorted(dones)
    first = progress[0]
    assert (first["status"], first["actor"], first["attempts"]) == ("running", "steps", 1)
    assert (first["progress"]["total"], first["progress"]["note"]) == (2, "step 1")
    assert first["progress"]["reported_at"].endswith("Z")


def test_webhook_progress_events_follow_the_message_then_actor_option_over_the_default(
    stub_broker, start_worker, receiver: Receiver, redis_url, redis_namespace
) -> None:
    # Given progress events off by default, an actor that turns them on and one that does not
    install(stub_broker, redis_url, redis_namespace)
    quiet_reported = threading.Event()

    @dramatiq.actor(webhook=receiver.url())
    def quiet() -> None:
        report_progress(1)
        quiet_reported.set()
        # runs until the loud one's progress event arrived: had quiet been watched, its event came in that round
        wait_until(lambda: any("progress" in json.loads(r.body) for r in receiver.requests), timeout=30, what="loud")

    @dramatiq.actor(webhook=receiver.url(), webhook_progress=True)
    def loud() -> None:
        quiet_reported.wait(30)
        report_progress(1)
        wait_until(lambda: any("progress" in json.loads(r.body) for r in receiver.requests), timeout=30, what="event")

    worker = start_worker(stub_broker)
    silent, watched, overridden = quiet.send(), loud.send(), loud.send_with_options(webhook_progress=False)
    for message in (silent, watched, overridden):
        message.get_result(block=True, timeout=RESULT_TIMEOUT_MS)
    drain(stub_broker, worker)

    # Then only the message whose actor turned them on, and that did not turn them off, had progress events
    assert [e["type"] for e in events(receiver, watched.message_id)[:-1]] == ["progress"]
    assert [e["status"] for e in events(receiver, silent.message_id)] == ["succeeded"]
    assert [e["status"] for e in events(receiver, overridden.message_id)] == ["succeeded"]


def test_webhook_progress_event_after_the_completion_is_settled_is_dropped(
    stub_broker, start_worker, receiver: Receiver, redis_url, redis_namespace
) -> None:
    # Given a message whose completion webhook was delivered
    webhooks = install(stub_broker, redis_url, redis_namespace, progress=True)

    @dramatiq.actor(webhook=receiver.url())
    def done() -> int:
        return 1

    worker = start_worker(stub_broker)
    message = done.send()
    receiver.wait_for(1)
    drain(stub_broker, worker)
    wait_until(lambda: webhooks._ledger_for(stub_broker).settled(message.message_id), timeout=30, what="settled")
    stale_before = progress_count("stale")

    # When a progress event of it is delivered late
    late = {"type": "progress", "message_id": message.message_id, "progress": {"done": 1}}
    webhooks.deliver(
        {
            "kind": "progress",
            "event": late,
            "url": receiver.url(),
            "created": 0,
            "attempt": 1,
            "webhook_id": f"{message.message_id}.progress.1",
        }
    )

    # Then it is not posted, and counted stale
    assert len(receiver.requests) == 1
    assert progress_count("stale") == stale_before + 1


def test_webhook_progress_event_that_fails_is_not_retried(
    stub_broker, start_worker, receiver: Receiver, redis_url, redis_namespace
) -> None:
    webhooks = install(stub_broker, redis_url, redis_namespace, progress=True)
    webhooks.declare(stub_broker)
    receiver.script(500)
    dropped_before = progress_count("dropped")

    message_id = f"{redis_namespace}-unsettled"
    event = {"type": "progress", "message_id": message_id, "progress": {"done": 1}}
    webhooks.deliver(
        {
            "kind": "progress",
            "event": event,
            "url": receiver.url(),
            "created": 0,
            "attempt": 1,
            "webhook_id": f"{message_id}.progress.1",
        }
    )

    assert [r.answer for r in receiver.wait_for(1)] == [500]
    assert stub_broker.queues[DELIVERY_QUEUE].qsize() == 0  # nothing scheduled
    assert progress_count("dropped") == dropped_before + 1


@pytest.mark.parametrize("where", ["constructor", "actor", "message"])
def test_webhook_progress_option_must_be_a_bool(stub_broker, where: str) -> None:
    if where == "constructor":
        with pytest.raises(ConfigurationError, match="progress must be True or False"):
            Webhooks(secrets=[SECRET], progress="yes")  # type: ignore[arg-type]
        return
    stub_broker.add_middleware(Webhooks(secrets=[SECRET], allow_http=True))
    if where == "actor":
        with pytest.raises(ConfigurationError, match="webhook_progress must be True or False"):
            dramatiq.actor(lambda: None, actor_name="bad_progress", webhook_progress="yes")
        return
    actor = dramatiq.actor(lambda: None, actor_name="good_progress")
    with pytest.raises(ConfigurationError, match="webhook_progress must be True or False"):
        actor.send_with_options(webhook_progress=1)


def test_webhook_progress_events_come_from_a_body_on_ray(
    stub_broker, start_worker, receiver: Receiver, redis_url, redis_namespace, ray_local, tmp_path
) -> None:
    # Given progress events on, and a body on Ray that reports, then waits until the test saw its event
    from dramatiq_ray import RayExecutionMiddleware

    install(stub_broker, redis_url, redis_namespace, progress=True)
    stub_broker.add_middleware(RayExecutionMiddleware(wait_slice=0.2))
    seen = tmp_path / "seen"

    @dramatiq.actor(webhook=receiver.url())
    def remote(flag: str) -> int:
        import os

        report_progress(1, 1, note=f"pid {os.getpid()}")
        while not os.path.exists(flag):
            threading.Event().wait(0.05)
        return os.getpid()

    # When it runs
    worker = start_worker(stub_broker)
    message = remote.send(str(seen))
    (request,) = receiver.wait_for(1, timeout=120)
    seen.touch()
    pid = message.get_result(block=True, timeout=RESULT_TIMEOUT_MS)
    drain(stub_broker, worker)

    # Then the progress the Ray worker process wrote reached the receiver as a signed progress event
    event = verify(request.body, request.headers, [SECRET])
    assert event["type"] == "progress" and event["message_id"] == message.message_id
    assert event["progress"]["note"] == f"pid {pid}" and pid != os.getpid()
    assert [e["status"] for e in events(receiver, message.message_id)] == ["running", "succeeded"]


def test_webhook_progress_events_without_a_progress_store_warn_once(
    stub_broker, start_worker, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    # Given progress events on, but a result backend that keeps no progress
    from dramatiq.results.backends import StubBackend

    stub_broker.add_middleware(Results(backend=StubBackend()))
    stub_broker.add_middleware(Webhooks(secrets=[SECRET], allow_http=True, progress=True, progress_every=50))

    @dramatiq.actor(webhook=receiver.url())
    def work() -> None:
        report_progress(1)

    # When two messages run
    worker = start_worker(stub_broker)
    with caplog.at_level(logging.WARNING, logger="dramatiq_ray.delivery.progress_events"):
        for _ in range(2):
            work.send()
        drain(stub_broker, worker)

    # Then one WARNING says what to add, and only the completions are posted
    (warning,) = [r for r in caplog.records if "Progress webhooks need" in r.getMessage()]
    assert "Redis result backend or an SQLBackend" in warning.getMessage()
    assert [json.loads(r.body)["status"] for r in receiver.requests] == ["succeeded", "succeeded"]
