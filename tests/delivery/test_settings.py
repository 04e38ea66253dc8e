"""Webhook settings: WEBHOOK_* names, read from a mapping or the environment, validated, and installed by setup()."""

from __future__ import annotations

import pytest

import dramatiq_ray
from dramatiq_ray import ConfigurationError, Webhooks
from dramatiq_ray.settings import load_settings

OLD = "whsec_ZHJhbWF0aXEtcmF5IG9sZCB0ZXN0IGtleSAwMTIzNA=="
NEW = "whsec_ZHJhbWF0aXEtcmF5IG5ldyB0ZXN0IGtleSA1Njc4OQ=="


def problems_of(settings: dict[str, object], environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigurationError) as raised:
        load_settings(settings, environ=environ or {})
    return raised.value.problems


def test_setup_installs_webhooks_when_secrets_are_set(stub_broker) -> None:
    installed = dramatiq_ray.setup(
        stub_broker,
        {
            "WEBHOOK_SECRETS": [OLD, NEW],
            "WEBHOOK_URL": "https://app.example.com/hooks",
            "WEBHOOK_MAX_ATTEMPTS": 4,
            "WEBHOOK_MAX_AGE_SECONDS": 600,
        },
    )

    webhooks = installed.webhooks
    assert isinstance(webhooks, Webhooks) and webhooks in stub_broker.middleware
    assert (webhooks.url, webhooks.secrets, webhooks.max_attempts, webhooks.max_age) == (
        "https://app.example.com/hooks",
        (b"dramatiq-ray old test key 01234", b"dramatiq-ray new test key 56789"),
        4,
        600_000,
    )
    assert "webhook" in stub_broker.actor_options


def test_setup_without_webhook_secrets_installs_no_webhooks(stub_broker) -> None:
    installed = dramatiq_ray.setup(stub_broker, {})

    assert installed.webhooks is None
    assert not any(isinstance(m, Webhooks) for m in stub_broker.middleware)


def test_webhook_settings_are_read_from_the_environment() -> None:
    settings = load_settings(
        {},
        environ={
            "DRAMATIQ_RAY_WEBHOOK_SECRETS": f"{OLD},{NEW}",
            "DRAMATIQ_RAY_WEBHOOK_URL": "http://receiver.internal/hook",
            "DRAMATIQ_RAY_WEBHOOK_ALLOW_HTTP": "true",
            "DRAMATIQ_RAY_WEBHOOK_MAX_ATTEMPTS": "5",
        },
    )

    assert settings.webhook_secrets == [OLD, NEW]
    assert (settings.webhook_url, settings.webhook_allow_http, settings.webhook_max_attempts) == (
        "http://receiver.internal/hook",
        True,
        5,
    )


def test_webhook_url_without_secrets_or_over_plain_http_is_refused() -> None:
    assert problems_of({"WEBHOOK_URL": "https://app.example.com/hook"}) == [
        "WEBHOOK_URL is set but WEBHOOK_SECRETS is empty: webhooks are always signed; give a secret."
    ]
    assert problems_of({"WEBHOOK_URL": "http://app.example.com/hook", "WEBHOOK_SECRETS": [NEW]}) == [
        "WEBHOOK_URL: the webhook 'http://app.example.com/hook' is plain http, so its payload and signature travel "
        "unencrypted. Use https, or pass allow_http=True to Webhooks (WEBHOOK_ALLOW_HTTP=true) for a trusted network."
    ]
    assert problems_of({"WEBHOOK_SECRETS": "one-secret", "WEBHOOK_MAX_ATTEMPTS": 0}) == [
        "WEBHOOK_SECRETS must be a list of non-empty strings (several while rotating).",
        "WEBHOOK_MAX_ATTEMPTS must be an integer >= 1, not 0.",
    ]


def test_webhook_secrets_not_in_the_whsec_form_are_refused_by_position_without_showing_them() -> None:
    problems = problems_of({"WEBHOOK_SECRETS": [NEW, "plain-text-secret", "whsec_c2hvcnQ="]})

    assert [problem.split(":")[0] for problem in problems] == [
        "WEBHOOK_SECRETS, secret number 2",
        "WEBHOOK_SECRETS, secret number 3",
    ]
    assert "without the whsec_ prefix" in problems[0] and "at least 24 bytes" in problems[1]
    assert all("new_secret()" in problem for problem in problems)
    assert "plain-text-secret" not in repr(problems) and "c2hvcnQ" not in repr(problems)


def test_webhook_allow_http_that_is_not_a_boolean_is_refused_from_the_environment() -> None:
    assert problems_of({}, {"DRAMATIQ_RAY_WEBHOOK_ALLOW_HTTP": "maybe"}) == [
        "DRAMATIQ_RAY_WEBHOOK_ALLOW_HTTP='maybe' cannot be parsed: expected true or false"
    ]


def test_redacted_settings_mask_webhook_secrets_and_url_credentials() -> None:
    settings = load_settings(
        {"WEBHOOK_SECRETS": [NEW], "WEBHOOK_URL": "https://user:pw@app.example.com/hook"}, validate=False
    )

    shown = repr(settings.redacted())
    assert NEW[6:] not in shown and "pw@" not in shown
    assert settings.redacted()["WEBHOOK_SECRETS"] == ["…"]


def test_setup_turns_webhook_progress_events_on_from_settings(stub_broker) -> None:
    installed = dramatiq_ray.setup(
        stub_broker, {"WEBHOOK_SECRETS": [NEW], "WEBHOOK_PROGRESS": True, "WEBHOOK_PROGRESS_EVERY_SECONDS": 2.5}
    )

    webhooks = installed.webhooks
    assert webhooks is not None and (webhooks.progress, webhooks.progress_every) == (True, 2_500)
    assert "webhook_progress" in stub_broker.actor_options


def test_webhook_progress_settings_are_checked() -> None:
    assert problems_of({"WEBHOOK_PROGRESS": "often", "WEBHOOK_PROGRESS_EVERY_SECONDS": 0}) == [
        "WEBHOOK_PROGRESS must be true or false, not 'often'.",
        "WEBHOOK_PROGRESS_EVERY_SECONDS must be a number >= 0.001, not 0.",
    ]


@pytest.mark.parametrize(
    "url",
    [
        "ftp://app.example.com/hook",
        "https:///no-host",
        "app.example.com/hook",
        "https://user:pw@app.example.com/hook",
        "http://app.example.com/hook",
    ],
    ids=["other-scheme", "no-host", "not-absolute", "credentials", "plain-http"],
)
def test_webhook_url_setting_is_refused_exactly_as_the_webhooks_constructor_refuses_it(url: str) -> None:
    # Given a bad webhook URL, as a setting and as Webhooks(url=...)
    problems = problems_of({"WEBHOOK_URL": url, "WEBHOOK_SECRETS": [NEW]})
    with pytest.raises(ConfigurationError) as refused:
        Webhooks(secrets=[NEW], url=url)

    # Then both say the same thing (one check), and neither shows the credentials
    assert len(problems) == 1
    assert problems[0].removeprefix("WEBHOOK_URL: ") == str(refused.value).removeprefix("Webhooks(url=...): ")
    assert "pw@" not in problems[0] and "pw@" not in str(refused.value)
