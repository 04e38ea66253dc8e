"""Arguments are recorded only with record_args=True, after the redact hook; a failing hook records nothing."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import dramatiq
import pytest

from dramatiq_ray import ConfigurationError, Results, SQLBackend


def send_render(broker: Any, *args: Any, **kwargs: Any) -> Any:
    @dramatiq.actor(broker=broker, store_results=True, actor_name="render")
    def render(*args: Any, **kwargs: Any) -> None:
        return None

    return render.send(*args, **kwargs)


def test_record_args_records_args_and_kwargs_as_sent(stub_broker: Any, new_backend: Callable[..., SQLBackend]) -> None:
    backend = new_backend(record_args=True)
    stub_broker.add_middleware(Results(backend=backend))

    message = send_render(stub_broker, 12, "frame.png", quality=0.9, tags=["a", "b"])

    record = backend.record(message)
    assert record is not None
    assert record.args == [12, "frame.png"]
    assert record.kwargs == {"quality": 0.9, "tags": ["a", "b"]}


def test_redact_hook_decides_what_is_recorded(stub_broker: Any, new_backend: Callable[..., SQLBackend]) -> None:
    def redact(actor: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> tuple[list[Any], dict[str, Any]]:
        hidden = {"password", "token"}
        return [actor, len(args)], {name: "***" if name in hidden else value for name, value in kwargs.items()}

    backend = new_backend(record_args=True, redact=redact)
    stub_broker.add_middleware(Results(backend=backend))

    message = send_render(stub_broker, "secret positional", user="ada", password="hunter2", token="t0k3n")

    record = backend.record(message)
    assert record is not None
    assert record.args == ["render", 1]
    assert record.kwargs == {"user": "ada", "password": "***", "token": "***"}


def test_failing_redact_hook_records_no_arguments_at_all(
    stub_broker: Any, new_backend: Callable[..., SQLBackend], caplog: pytest.LogCaptureFixture
) -> None:
    def redact(actor: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
        raise KeyError("oops")

    backend = new_backend(record_args=True, redact=redact)
    stub_broker.add_middleware(Results(backend=backend))

    message = send_render(stub_broker, password="hunter2")

    record = backend.record(message)
    assert record is not None and record.status == "enqueued"
    assert record.args is None and record.kwargs is None
    assert "The redact hook failed" in caplog.text and "hunter2" not in caplog.text


def test_arguments_json_cannot_encode_are_recorded_as_their_repr(
    stub_broker: Any, new_backend: Callable[..., SQLBackend]
) -> None:
    class Frame:
        def __repr__(self) -> str:
            return "Frame(3)"

    backend = new_backend(record_args=True)
    message = dramatiq.Message(queue_name="default", actor_name="render", args=(Frame(),), kwargs={}, options={})

    backend.record_message_event("enqueued", message, 60_000)

    record = backend.record(message)
    assert record is not None and record.args == ["Frame(3)"]


def test_redact_without_record_args_is_refused(database: Any) -> None:
    with pytest.raises(ConfigurationError, match="pass record_args=True too"):
        SQLBackend(url=database.url, redact=lambda actor, args, kwargs: (args, kwargs))
