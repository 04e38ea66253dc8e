"""Signing and verifying as the Standard Webhooks specification (v1.0) says: HMAC-SHA256 over
"<webhook-id>.<webhook-timestamp>.<body>", base64 ``v1,`` entries, one per secret, ``whsec_`` secrets, a tolerance;
checked against the specification's Python reference library (``standardwebhooks`` from PyPI). Real deliveries
verified by the reference libraries are in test_standard_webhooks.py."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import pytest
import standardwebhooks

from dramatiq_ray import ConfigurationError, Webhooks, WebhookSignatureError
from dramatiq_ray.webhooks import ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, new_secret, sign, verify
from tests.delivery.conftest import SECRET

BODY = json.dumps({"message_id": "m-1", "status": "succeeded", "result": {"value": "café"}}).encode()
NOW = 1_767_225_600
OLD = "whsec_ZHJhbWF0aXEtcmF5IG9sZCB0ZXN0IGtleSAwMTIzNA=="
OTHER = "whsec_ZHJhbWF0aXEtcmF5IG90aGVyIGtleSAwMTIzNDU2Nzg="


def signed(body: bytes = BODY, secrets: tuple[str, ...] = (SECRET,), timestamp: int = NOW) -> dict[str, str]:
    return sign(body, message_id="m-1", secrets=secrets, timestamp=timestamp)


def test_verify_returns_the_payload_of_a_correctly_signed_body() -> None:
    assert verify(BODY, signed(), [SECRET], now=NOW) == json.loads(BODY)


def test_sign_gives_the_three_standard_webhooks_headers() -> None:
    headers = signed(secrets=(OLD, SECRET))

    assert set(headers) == {"webhook-id", "webhook-timestamp", "webhook-signature"}
    assert (headers[ID_HEADER], headers[TIMESTAMP_HEADER]) == ("m-1", str(NOW))
    entries = headers[SIGNATURE_HEADER].split(" ")
    assert len(entries) == 2
    assert all(entry.startswith("v1,") and len(base64.b64decode(entry[3:], validate=True)) == 32 for entry in entries)


def test_sign_makes_the_signature_the_python_reference_library_makes() -> None:
    reference = standardwebhooks.Webhook(SECRET).sign("m-1", datetime.fromtimestamp(NOW, UTC), BODY.decode())

    assert signed()[SIGNATURE_HEADER] == reference


def test_verify_accepts_a_request_signed_by_the_python_reference_library() -> None:
    reference = standardwebhooks.Webhook(SECRET).sign("m-1", datetime.fromtimestamp(NOW, UTC), BODY.decode())
    headers = {ID_HEADER: "m-1", TIMESTAMP_HEADER: str(NOW), SIGNATURE_HEADER: reference}

    assert verify(BODY, headers, [SECRET], now=NOW)["message_id"] == "m-1"


def test_verify_accepts_a_body_signed_with_any_of_the_secrets_while_they_rotate() -> None:
    headers = signed(secrets=(OLD, SECRET))

    assert verify(BODY, headers, [SECRET], now=NOW)["message_id"] == "m-1"
    assert verify(BODY, headers, [OLD], now=NOW)["message_id"] == "m-1"
    assert verify(BODY, signed(secrets=(SECRET,)), [OLD, SECRET], now=NOW)["message_id"] == "m-1"


def test_verify_refuses_an_altered_body() -> None:
    with pytest.raises(WebhookSignatureError, match="No v1 signature of the request matches"):
        verify(BODY.replace(b"succeeded", b"failed"), signed(), [SECRET], now=NOW)


def test_verify_refuses_an_altered_webhook_id() -> None:
    headers = {**signed(), ID_HEADER: "m-2"}

    with pytest.raises(WebhookSignatureError, match="No v1 signature of the request matches"):
        verify(BODY, headers, [SECRET], now=NOW)


def test_verify_refuses_a_body_signed_with_an_unknown_secret() -> None:
    with pytest.raises(WebhookSignatureError, match="does not have"):
        verify(BODY, signed(secrets=(OTHER,)), [SECRET], now=NOW)


def test_verify_refuses_a_timestamp_outside_the_tolerance_either_way() -> None:
    with pytest.raises(WebhookSignatureError, match="tolerance 300 s"):
        verify(BODY, signed(timestamp=NOW - 301), [SECRET], now=NOW)
    with pytest.raises(WebhookSignatureError, match="tolerance 300 s"):
        verify(BODY, signed(timestamp=NOW + 301), [SECRET], now=NOW)
    assert verify(BODY, signed(timestamp=NOW - 300), [SECRET], now=NOW)["status"] == "succeeded"
    assert verify(BODY, signed(timestamp=NOW - 3600), [SECRET], tolerance=None, now=NOW)["status"] == "succeeded"


def test_verify_refuses_a_changed_timestamp_within_the_tolerance() -> None:
    headers = {**signed(), TIMESTAMP_HEADER: str(NOW + 1)}

    with pytest.raises(WebhookSignatureError, match="No v1 signature of the request matches"):
        verify(BODY, headers, [SECRET], now=NOW)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({ID_HEADER: None}, "no webhook-id header"),
        ({TIMESTAMP_HEADER: None}, "no webhook-timestamp header"),
        ({SIGNATURE_HEADER: None}, "no webhook-signature header"),
        ({ID_HEADER: None, SIGNATURE_HEADER: None}, "no webhook-id, webhook-signature header"),
        ({TIMESTAMP_HEADER: "1767225600.5"}, "not whole Unix seconds"),
        ({TIMESTAMP_HEADER: "-5"}, "not whole Unix seconds"),
        ({SIGNATURE_HEADER: ""}, "no webhook-signature header"),
        ({SIGNATURE_HEADER: "v1=abc"}, "holds no v1 signature"),
        ({SIGNATURE_HEADER: "v2,c2lnbmF0dXJl"}, "holds no v1 signature"),
        ({SIGNATURE_HEADER: "v1,not*base64"}, "holds no v1 signature"),
    ],
)
def test_verify_refuses_a_missing_or_malformed_header(change: dict[str, str | None], message: str) -> None:
    headers = {name: value for name, value in {**signed(), **change}.items() if value is not None}

    with pytest.raises(WebhookSignatureError, match=message):
        verify(BODY, headers, [SECRET], now=NOW)


def test_verify_skips_signature_versions_it_does_not_know() -> None:
    headers = signed()
    headers[SIGNATURE_HEADER] = f"v1a,c2lnbmF0dXJl v2,c2lnbmF0dXJl {headers[SIGNATURE_HEADER]}"

    assert verify(BODY, headers, [SECRET], now=NOW)["message_id"] == "m-1"


def test_verify_finds_the_headers_whatever_their_case() -> None:
    headers = {name.title(): value for name, value in signed().items()}

    assert verify(BODY, headers, [SECRET], now=NOW)["message_id"] == "m-1"
    assert verify(BODY.decode(), headers, [SECRET], now=NOW)["message_id"] == "m-1"


def test_verify_refuses_a_signed_body_that_is_not_a_json_object() -> None:
    with pytest.raises(WebhookSignatureError, match="not a JSON object"):
        verify(b"[1]", signed(b"[1]"), [SECRET], now=NOW)


def test_verify_needs_a_list_of_secrets() -> None:
    with pytest.raises(ConfigurationError, match="list of strings"):
        verify(BODY, signed(), SECRET, now=NOW)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="at least one secret"):
        verify(BODY, signed(), [], now=NOW)


RAW = "a-raw-secret-of-thirty-two-chars"
BAD_SECRETS = [
    pytest.param(RAW, "without the whsec_ prefix", id="raw"),
    pytest.param("whsec_" + "not base64!" * 4, "must be standard base64", id="not-base64"),
    pytest.param(SECRET.rstrip("="), "must be standard base64", id="unpadded"),
    pytest.param("whsec_" + base64.b64encode(b"sixteen byte key").decode(), "at least 24 bytes", id="short"),
    pytest.param("whsec_", "at least 24 bytes", id="empty-key"),
    pytest.param(SECRET.encode(), "must be a string", id="bytes"),
]


@pytest.mark.parametrize(("secret", "message"), BAD_SECRETS)
def test_webhooks_refuses_a_secret_not_in_the_whsec_form_without_showing_it(secret: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message) as error:
        Webhooks(secrets=[SECRET, secret])

    shown = str(error.value)
    assert "secret number 2" in shown and "new_secret()" in shown
    key = (secret if isinstance(secret, str) else secret.decode()).removeprefix("whsec_")
    assert not key or key not in shown


@pytest.mark.parametrize(("secret", "message"), BAD_SECRETS)
def test_verify_and_sign_refuse_a_secret_not_in_the_whsec_form(secret: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        verify(BODY, signed(), [secret], now=NOW)
    with pytest.raises(ConfigurationError, match=message):
        sign(BODY, message_id="m-1", secrets=[secret])


def test_new_secret_makes_a_key_the_reference_library_reads() -> None:
    secret = new_secret()
    headers = sign(BODY, message_id="m-1", secrets=[secret])

    assert secret.startswith("whsec_") and len(base64.b64decode(secret[6:])) == 32
    assert standardwebhooks.Webhook(secret).verify(BODY, headers) == json.loads(BODY)
    assert len(base64.b64decode(new_secret(64)[6:])) == 64
    with pytest.raises(ConfigurationError, match="from 24 to 64"):
        new_secret(16)
