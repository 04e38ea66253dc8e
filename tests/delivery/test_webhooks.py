"""Webhooks: a signed POST when a message is done, delivered from a queue the same workers consume, retried with
backoff, stopped by 410, never redirected to another host, https only unless allowed."""

from __future__ import annotations

import json
import logging
from typing import Any

import dramatiq
import pytest
from dramatiq.middleware import Middleware, MiddlewareError
from dramatiq.results.backends import StubBackend
from prometheus_client import REGISTRY

from dramatiq_ray import ConfigurationError, Results, Retries, Webhooks
from dramatiq_ray.delivery import tracking as tracking_module
from dramatiq_ray.webhooks import DELIVERY_QUEUE, ID_HEADER, SIGNATURE_HEADER, verify
from tests._services import free_port, wait_until
from tests.delivery.conftest import SECRET, Receiver


def outcome_count(outcome: str) -> float:
    return REGISTRY.get_sample_value("dramatiq_ray_webhook_deliveries_total", {"outcome": outcome}) or 0.0


def attempt_count(result: str) -> float:
    return REGISTRY.get_sample_value("dramatiq_ray_webhook_attempts_total", {"result": result}) or 0.0


def install(broker: dramatiq.Broker, **options: Any) -> Webhooks:
    """Results on a stub backend, and Webhooks with quick retries over plain http (the receiver is local)."""
    broker.add_middleware(Results(backend=StubBackend()))
    settings: dict[str, Any] = {
        "secrets": [SECRET],
        "allow_http": True,
        "backoff": 10,
        "max_backoff": 50,
        "read_timeout": 2_000,
    }
    webhooks = Webhooks(**{**settings, **options})
    broker.add_middleware(webhooks)
    return webhooks


def drain(broker: dramatiq.Broker, worker: dramatiq.Worker, *queues: str) -> None:
    """Wait until the messages of ``queues`` are processed (so their webhooks are enqueued: that happens once they
    are acked), then until every delivery, retries included, is done."""
    for queue in queues:
        broker.join(queue, fail_fast=False)
    worker.join()
    broker.join(DELIVERY_QUEUE, fail_fast=False)
    worker.join()


def test_webhook_posts_a_signed_payload_when_a_message_succeeds(stub_broker, start_worker, receiver: Receiver) -> None:
    install(stub_broker)

    @dramatiq.actor(store_results=True, webhook=receiver.url("/done"))
    def add(x: int, y: int) -> int:
        return x + y

    start_worker(stub_broker)
    message = add.send(2, 3)

    (request,) = receiver.wait_for(1)
    event = verify(request.body, request.headers, [SECRET])
    assert request.path == "/done"
    assert request.headers[ID_HEADER] == message.message_id
    assert request.headers["Content-Type"] == "application/json"
    assert event["message_id"] == message.message_id
    assert (event["actor"], event["queue"], event["status"], event["attempts"]) == ("add", "default", "succeeded", 1)
    assert event["result"] == {"value": 5}
    assert "error" not in event
    assert event["enqueued_at"] <= event["started_at"] <= event["finished_at"]
    assert event["finished_at"].endswith("Z")
    assert message.get_result(block=True) == 5


def test_webhook_reports_a_failure_once_after_the_last_retry(stub_broker, start_worker, receiver: Receiver) -> None:
    install(stub_broker)
    stub_broker.add_middleware(Retries(max_attempts=3, backoff=0))

    @dramatiq.actor(webhook=receiver.url())
    def explode() -> None:
        raise ValueError("the frame is corrupt")

    worker = start_worker(stub_broker)
    message = explode.send()
    drain(stub_broker, worker, "default")

    (request,) = receiver.wait_for(1)
    event = verify(request.body, request.headers, [SECRET])
    assert (event["message_id"], event["status"], event["attempts"]) == (message.message_id, "failed", 3)
    assert event["error"] == {"type": "ValueError", "message": "the frame is corrupt"}
    assert "result" not in event


def test_webhook_answered_500_is_retried_with_the_same_idempotency_key_until_2xx(
    stub_broker, start_worker, receiver: Receiver
) -> None:
    install(stub_broker)
    receiver.script(500, 503)
    failed_before, delivered_before = attempt_count("5xx"), attempt_count("2xx")

    @dramatiq.actor(webhook=receiver.url())
    def ping() -> str:
        return "pong"

    worker = start_worker(stub_broker)
    message = ping.send()

    requests = receiver.wait_for(3)
    drain(stub_broker, worker, "default")
    assert [r.answer for r in receiver.requests] == [500, 503, 200]
    assert [r.headers["Dramatiq-Ray-Attempt"] for r in requests] == ["1", "2", "3"]
    assert {r.headers[ID_HEADER] for r in requests} == {message.message_id}
    assert all(verify(r.body, r.headers, [SECRET])["result"] == {"value": "pong"} for r in requests)
    assert (attempt_count("5xx"), attempt_count("2xx")) == (failed_before + 2, delivered_before + 1)


def test_webhook_whose_receiver_times_out_is_retried(stub_broker, start_worker, receiver: Receiver) -> None:
    # Given a receiver that does not answer the first POST within the read timeout
    install(stub_broker, read_timeout=300)
    receiver.script("hang")

    @dramatiq.actor(webhook=receiver.url())
    def ping() -> str:
        return "pong"

    start_worker(stub_broker)
    ping.send()

    # Then the POST is made again, and the second is answered
    assert [r.answer for r in receiver.wait_for(2)] == ["hang", 200]


def test_webhook_to_a_refused_port_gives_up_after_max_attempts_with_an_error(
    stub_broker, start_worker, caplog: pytest.LogCaptureFixture
) -> None:
    install(stub_broker, max_attempts=3)
    failed_before = outcome_count("failed")

    @dramatiq.actor(webhook=f"http://127.0.0.1:{free_port()}/closed")
    def ping() -> str:
        return "pong"

    worker = start_worker(stub_broker)
    with caplog.at_level(logging.INFO, logger="dramatiq_ray.delivery.webhooks"):
        message = ping.send()
        drain(stub_broker, worker, "default")

    retried = [r for r in caplog.records if "could not connect" in r.getMessage() and r.levelno == logging.INFO]
    (final,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(retried) == 2
    assert message.message_id in final.getMessage() and "after 3 attempt(s)" in final.getMessage()
    assert outcome_count("failed") == failed_before + 1


def test_webhook_answered_410_is_not_retried(stub_broker, start_worker, receiver: Receiver) -> None:
    install(stub_broker)
    receiver.script(410)
    gone_before = outcome_count("gone")

    @dramatiq.actor(webhook=receiver.url())
    def ping() -> str:
        return "pong"

    worker = start_worker(stub_broker)
    ping.send()
    receiver.wait_for(1)
    drain(stub_broker, worker, "default")

    assert [r.answer for r in receiver.requests] == [410]
    assert outcome_count("gone") == gone_before + 1


def test_webhook_redirect_to_another_host_is_refused(
    stub_broker, start_worker, receiver: Receiver, other_receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a receiver that redirects to another host (localhost is not 127.0.0.1 by name)
    install(stub_broker)
    receiver.script(("redirect", 307, f"http://localhost:{other_receiver.port}/stolen"))

    @dramatiq.actor(webhook=receiver.url())
    def ping() -> str:
        return "pong"

    worker = start_worker(stub_broker)
    with caplog.at_level(logging.ERROR, logger="dramatiq_ray.delivery.webhooks"):
        ping.send()
        receiver.wait_for(1)
        drain(stub_broker, worker, "default")

    # Then the redirect is not followed, nor retried, and the refusal is logged at ERROR
    assert other_receiver.requests == []
    assert len(receiver.requests) == 1
    assert any("redirected to another origin" in r.getMessage() for r in caplog.records)


def test_webhook_redirect_on_the_same_origin_is_followed_with_the_same_signed_body(
    stub_broker, start_worker, receiver: Receiver
) -> None:
    install(stub_broker)
    receiver.script(("redirect", 308, "/moved-here"))

    @dramatiq.actor(webhook=receiver.url("/old"))
    def ping() -> str:
        return "pong"

    start_worker(stub_broker)
    ping.send()

    first, second = receiver.wait_for(2)
    assert (first.path, second.path, second.answer) == ("/old", "/moved-here", 200)
    assert second.body == first.body
    assert verify(second.body, second.headers, [SECRET])["result"] == {"value": "pong"}


def test_webhook_plain_http_is_refused_without_allow_http(stub_broker) -> None:
    stub_broker.add_middleware(Webhooks(secrets=[SECRET]))

    with pytest.raises(ConfigurationError, match="plain http"):

        @dramatiq.actor(webhook="http://example.com/hook")
        def declared() -> None: ...

    @dramatiq.actor(webhook="https://example.com/hook")
    def ping() -> None: ...

    with pytest.raises(ConfigurationError, match="allow_http=True"):
        ping.send_with_options(webhook="http://example.com/hook")
    with pytest.raises(ConfigurationError, match="plain http"):
        Webhooks(secrets=[SECRET], url="http://example.com/hook")


def test_webhooks_secrets_must_be_a_list_of_whsec_secrets() -> None:
    with pytest.raises(ConfigurationError, match="list of strings"):
        Webhooks(secrets=SECRET)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="at least one secret"):
        Webhooks(secrets=[])
    with pytest.raises(ConfigurationError, match="without the whsec_ prefix"):
        Webhooks(secrets=[""])


def test_webhook_message_option_wins_over_the_actor_option_and_the_default(
    stub_broker, start_worker, receiver: Receiver
) -> None:
    install(stub_broker, url=receiver.url("/default"))

    @dramatiq.actor(webhook=receiver.url("/actor"))
    def with_actor_url() -> int:
        return 1

    @dramatiq.actor
    def without_url() -> int:
        return 2

    worker = start_worker(stub_broker)
    with_actor_url.send_with_options(webhook=receiver.url("/message"))
    drain(stub_broker, worker, "default")
    with_actor_url.send()
    drain(stub_broker, worker, "default")
    without_url.send()
    drain(stub_broker, worker, "default")
    without_url.send_with_options(webhook=None)  # None on the message: no webhook
    drain(stub_broker, worker, "default")

    assert [r.path for r in receiver.wait_for(3)] == ["/message", "/actor", "/default"]


def test_webhook_of_a_value_larger_than_max_value_bytes_omits_it(stub_broker, start_worker, receiver: Receiver) -> None:
    install(stub_broker, max_value_bytes=100)

    @dramatiq.actor(store_results=True, webhook=receiver.url())
    def big() -> str:
        return "x" * 200

    start_worker(stub_broker)
    big.send()

    (request,) = receiver.wait_for(1)
    assert verify(request.body, request.headers, [SECRET])["result"] == {"omitted": "too_large"}


def test_webhook_delivery_waiting_for_a_retry_holds_no_worker_thread(
    stub_broker, start_worker, receiver: Receiver
) -> None:
    # Given one worker thread, and a webhook whose first POST fails, so its next attempt is 30-60 s away
    install(stub_broker, backoff=60_000)
    receiver.script(500)

    @dramatiq.actor(store_results=True, webhook=receiver.url())
    def ping(n: int) -> int:
        return n

    start_worker(stub_broker, threads=1)
    ping.send(1)
    receiver.wait_for(1)

    # Then the one thread still runs other messages while the retry waits
    assert ping.send(2).get_result(block=True, timeout=10_000) == 2


def test_webhook_payload_carries_a_signature_for_each_secret(stub_broker, start_worker, receiver: Receiver) -> None:
    old = "whsec_ZHJhbWF0aXEtcmF5IG9sZCB0ZXN0IGtleSAwMTIzNA=="
    install(stub_broker, secrets=[old, SECRET])

    @dramatiq.actor(webhook=receiver.url())
    def ping() -> None:
        return None

    start_worker(stub_broker)
    ping.send()

    (request,) = receiver.wait_for(1)
    header = request.headers[SIGNATURE_HEADER]
    assert [entry[:3] for entry in header.split(" ")] == ["v1,", "v1,"]
    assert verify(request.body, request.headers, [SECRET])["result"] == {"value": None}
    assert verify(request.body, request.headers, [old])["status"] == "succeeded"
    assert json.loads(request.body)["result"] == {"value": None}


def test_webhook_duplicate_of_a_message_does_not_post_while_its_first_post_is_in_flight(
    stub_broker, start_worker, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a message whose webhook POST hangs (then times out and is retried)
    webhooks = install(stub_broker, read_timeout=500)
    receiver.script("hang")

    @dramatiq.actor(webhook=receiver.url())
    def ping() -> str:
        return "pong"

    start_worker(stub_broker, threads=4)
    message = ping.message()
    with caplog.at_level(logging.INFO, logger="dramatiq_ray.delivery.webhooks"):
        stub_broker.enqueue(message)
        receiver.wait_for(1)
        # When the same message runs again meanwhile (as after a redelivery) and reports its result again
        stub_broker.enqueue(message)
        wait_until(
            lambda: any("another POST is in flight" in r.getMessage() for r in caplog.records),
            timeout=30,
            what="the duplicate delivery to defer",
        )
        requests = receiver.wait_for(2)

    # Then the duplicate waited for the lease instead of posting: one POST timed out, the retry was answered
    assert [r.answer for r in requests] == ["hang", 200]
    ledger = webhooks._ledger_for(stub_broker)
    wait_until(lambda: ledger.settled(message.message_id) == "delivered", timeout=30, what="the webhook to settle")


def test_webhook_of_a_value_spilled_by_the_backend_itself_carries_its_pointer(
    stub_broker, start_worker, receiver: Receiver, tmp_path: Any
) -> None:
    # Given Dramatiq's own Results with a SpillingBackend (it spills when it stores, after the body returned)
    from dramatiq.results import Results as DramatiqResults

    from dramatiq_ray import FilesystemStore, SpillingBackend, get_pointer

    backend = SpillingBackend(StubBackend(), store=FilesystemStore(str(tmp_path)), max_inline_bytes=10)
    stub_broker.add_middleware(DramatiqResults(backend=backend))
    stub_broker.add_middleware(Webhooks(secrets=[SECRET], allow_http=True, max_value_bytes=10))

    @dramatiq.actor(store_results=True, webhook=receiver.url())
    def big() -> str:
        return "x" * 100

    start_worker(stub_broker)
    message = big.send()

    # Then the webhook names the pointer the backend stored, without reading the blob
    (request,) = receiver.wait_for(1)
    result = verify(request.body, request.headers, [SECRET])["result"]
    assert result["pointer"] == get_pointer(message, backend=backend)
    assert result["bytes"] == 102 and "url_error" in result


class NeverAcks(Middleware):
    """Makes Dramatiq give up acknowledging every message of ``actor_name`` (a MiddlewareError in before_ack ends
    the worker's post-processing: no ack, no after_ack), as an ack that never happens does."""

    def __init__(self, actor_name: str) -> None:
        self.actor_name = actor_name

    def before_ack(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        if message.actor_name == self.actor_name:
            raise MiddlewareError("this test never acknowledges it")


def test_webhooks_forget_messages_never_acked_when_the_worker_stops(
    redis_broker, start_worker, receiver: Receiver
) -> None:
    # Given messages that succeed but are never acked
    redis_broker.add_middleware(NeverAcks("add"))
    webhooks = install(redis_broker, url=receiver.url())

    @dramatiq.actor(store_results=True)
    def add(x: int, y: int) -> int:
        return x + y

    worker = start_worker(redis_broker)
    messages = [add.send(x, 1) for x in range(3)]
    for message in messages:
        message.get_result(block=True, timeout=30_000)
    wait_until(lambda: len(webhooks._tracking.succeeded) == 3, timeout=30, what="the three messages to be processed")

    # When the worker stops, then Webhooks keeps nothing of them (and posted nothing)
    worker.stop()
    assert (webhooks._tracking.running, webhooks._tracking.succeeded) == ({}, {})
    assert receiver.requests == []


def test_webhooks_keep_at_most_max_tracked_messages_never_acked(
    redis_broker, start_worker, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tracking_module, "MAX_TRACKED", 2)
    redis_broker.add_middleware(NeverAcks("add"))
    webhooks = install(redis_broker, url=receiver.url())

    @dramatiq.actor(store_results=True)
    def add(x: int, y: int) -> int:
        return x + y

    start_worker(redis_broker)
    messages = [add.send(x, 1) for x in range(4)]
    for message in messages:
        message.get_result(block=True, timeout=30_000)
    wait_until(lambda: webhooks._tracking.succeeded, timeout=30, what="a message to be processed")
    assert len(webhooks._tracking.running) <= 2 and len(webhooks._tracking.succeeded) <= 2


def test_webhook_of_a_cancelled_message_says_cancelled(
    redis_broker, redis_url, redis_namespace, start_worker, receiver: Receiver
) -> None:
    from dramatiq.results.backends import RedisBackend

    from dramatiq_ray import cancel

    redis_broker.add_middleware(Results(backend=RedisBackend(url=redis_url, namespace=redis_namespace)))
    redis_broker.add_middleware(
        Webhooks(secrets=[SECRET], allow_http=True, backoff=10, max_backoff=50, read_timeout=2_000)
    )

    @dramatiq.actor(broker=redis_broker, webhook=receiver.url())
    def render() -> None:
        return None

    message = render.send_with_options(delay=200)
    cancel(message, broker=redis_broker)
    start_worker(redis_broker)

    (request,) = receiver.wait_for(1)
    event = verify(request.body, request.headers, [SECRET])
    assert (event["message_id"], event["status"]) == (message.message_id, "cancelled")
    assert event["error"]["type"] == "dramatiq_ray.errors.MessageCancelledError"
