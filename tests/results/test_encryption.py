"""AES-256-GCM encryption of result payloads: round trips, rotation, tampering and key hygiene."""

from __future__ import annotations

import base64
import os
import pickle
from pathlib import Path

import pytest

from dramatiq_ray.errors import ConfigurationError, DecryptionError, SpilledResultError
from dramatiq_ray.payloads.encryption import EncryptionKeys

KEY_A = os.urandom(32)
KEY_B = os.urandom(32)
DATA = b"a large result payload " * 1000


def test_encryption_keys_round_trip_with_the_current_key() -> None:
    keys = EncryptionKeys({"a": KEY_A}, current="a")
    key_id, blob = keys.encrypt(DATA)
    assert key_id == "a"
    assert DATA not in blob
    assert keys.decrypt(key_id, blob) == DATA


def test_encryption_keys_accept_a_memoryview() -> None:
    keys = EncryptionKeys({"a": KEY_A}, current="a")
    key_id, blob = keys.encrypt(memoryview(DATA))
    assert keys.decrypt(key_id, memoryview(blob)) == DATA


def test_encryption_keys_use_a_fresh_nonce_per_blob() -> None:
    keys = EncryptionKeys({"a": KEY_A}, current="a")
    assert keys.encrypt(DATA)[1] != keys.encrypt(DATA)[1]


def test_encryption_keys_decrypt_older_blobs_after_rotation() -> None:
    before = EncryptionKeys({"a": KEY_A}, current="a")
    old_id, old_blob = before.encrypt(DATA)
    after = EncryptionKeys({"a": KEY_A, "b": KEY_B}, current="b")
    new_id, new_blob = after.encrypt(DATA)
    assert new_id == "b"
    assert after.decrypt(old_id, old_blob) == DATA
    assert after.decrypt(new_id, new_blob) == DATA


def test_encryption_keys_refuse_a_blob_encrypted_with_another_key() -> None:
    _, blob = EncryptionKeys({"a": KEY_A}, current="a").encrypt(DATA)
    impostor = EncryptionKeys({"a": KEY_B}, current="a")
    with pytest.raises(DecryptionError, match="authentication failed"):
        impostor.decrypt("a", blob)


def test_encryption_keys_refuse_an_altered_byte() -> None:
    keys = EncryptionKeys({"a": KEY_A}, current="a")
    _, blob = keys.encrypt(DATA)
    altered = bytearray(blob)
    altered[100] ^= 1
    with pytest.raises(DecryptionError, match="authentication failed"):
        keys.decrypt("a", bytes(altered))


def test_encryption_keys_refuse_a_truncated_blob() -> None:
    keys = EncryptionKeys({"a": KEY_A}, current="a")
    _, blob = keys.encrypt(DATA)
    with pytest.raises(DecryptionError, match="authentication failed"):
        keys.decrypt("a", blob[:-1])


def test_encryption_keys_refuse_a_blob_shorter_than_nonce_and_tag() -> None:
    keys = EncryptionKeys({"a": KEY_A}, current="a")
    with pytest.raises(DecryptionError, match="truncated"):
        keys.decrypt("a", b"short")


def test_encryption_keys_refuse_different_associated_data() -> None:
    keys = EncryptionKeys({"a": KEY_A}, current="a")
    _, blob = keys.encrypt(DATA, associated_data=b"pointer-1")
    assert keys.decrypt("a", blob, associated_data=b"pointer-1") == DATA
    with pytest.raises(DecryptionError):
        keys.decrypt("a", blob, associated_data=b"pointer-2")


def test_encryption_keys_unknown_id_error_lists_configured_ids_without_key_bytes() -> None:
    keys = EncryptionKeys({"a": KEY_A, "b": KEY_B}, current="a")
    with pytest.raises(DecryptionError) as caught:
        keys.decrypt("retired-2023", b"\x00" * 64)
    message = str(caught.value)
    assert "'retired-2023'" in message
    assert "'a'" in message and "'b'" in message
    assert KEY_A.hex() not in message and repr(KEY_A) not in message
    assert caught.value.key_id == "retired-2023"
    assert isinstance(caught.value, SpilledResultError)


def test_encryption_keys_repr_shows_ids_but_never_keys() -> None:
    text = repr(EncryptionKeys({"a": KEY_A, "b": KEY_B}, current="b"))
    assert "'a'" in text and "'b'" in text
    assert repr(KEY_A) not in text and KEY_A.hex() not in text


@pytest.mark.parametrize(
    "keys,current,fragment",
    [
        ({"a": b"short"}, "a", "32 bytes"),
        ({"a": "x" * 32}, "a", "must be bytes"),
        ({"bad id": KEY_A}, "bad id", "key id"),
        ({"x" * 65: KEY_A}, "x" * 65, "key id"),
        ({"a": KEY_A}, "b", "current='b'"),
        ({}, "a", "non-empty"),
    ],
)
def test_encryption_keys_reject_bad_construction(keys: dict[str, object], current: str, fragment: str) -> None:
    with pytest.raises(ConfigurationError, match=fragment):
        EncryptionKeys(keys, current=current)  # type: ignore[arg-type]


def test_encryption_keys_construction_error_never_shows_key_bytes() -> None:
    with pytest.raises(ConfigurationError) as caught:
        EncryptionKeys({"a": KEY_A, "b": b"\x01" * 31}, current="missing")
    assert repr(KEY_A) not in str(caught.value)
    assert len(caught.value.problems) == 2


def test_encryption_keys_from_key_bytes_refuse_to_pickle_saying_how_to_provide_keys() -> None:
    keys = EncryptionKeys({"a": KEY_A, "b": KEY_B}, current="b")
    with pytest.raises(ConfigurationError, match="from_env") as refused:
        pickle.dumps(keys)
    assert "from_file" in str(refused.value) and "from_provider" in str(refused.value)
    assert KEY_A.hex() not in str(refused.value) and repr(KEY_A) not in str(refused.value)


def _key_text(*pairs: tuple[str, bytes]) -> str:
    return ",".join(f"{key_id}:{base64.b64encode(key).decode()}" for key_id, key in pairs)


def provide_keys() -> EncryptionKeys:
    """A provider named by module path in the tests below."""
    return EncryptionKeys({"p": KEY_A}, current="p")


@pytest.mark.parametrize("source", ["env", "file", "registered provider", "module provider"])
def test_encryption_keys_pickle_as_a_reference_never_with_key_material(
    source: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Given keys from each kind of source
    text = _key_text(("b", KEY_B), ("a", KEY_A))
    if source == "env":
        monkeypatch.setenv("DRAMATIQ_RAY_TEST_KEYS", text)
        keys = EncryptionKeys.from_env("DRAMATIQ_RAY_TEST_KEYS")
    elif source == "file":
        (tmp_path / "keys").write_text(text + "\n")
        keys = EncryptionKeys.from_file(tmp_path / "keys")
    elif source == "registered provider":
        EncryptionKeys.register_provider("tests.keys", lambda: EncryptionKeys.parse(text))
        keys = EncryptionKeys.from_provider("tests.keys")
    else:
        keys = EncryptionKeys.from_provider(f"{__name__}:provide_keys")
    key_id, blob = keys.encrypt(DATA)
    # When pickled (as Ray does, with cloudpickle, and with pickle)
    import ray.cloudpickle

    for dumped in (pickle.dumps(keys), ray.cloudpickle.dumps(keys)):
        # Then no key material is in the bytes, in any form
        for key in (KEY_A, KEY_B):
            assert key not in dumped and key.hex().encode() not in dumped
            assert base64.b64encode(key) not in dumped
        # And the copy reads its keys from the same source and decrypts
        assert pickle.loads(dumped).decrypt(key_id, blob) == DATA


def test_encryption_keys_from_env_read_in_the_unpickling_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRAMATIQ_RAY_TEST_KEYS", _key_text(("a", KEY_A)))
    dumped = pickle.dumps(EncryptionKeys.from_env("DRAMATIQ_RAY_TEST_KEYS"))
    # In a process where the variable names other keys, the copy uses those
    monkeypatch.setenv("DRAMATIQ_RAY_TEST_KEYS", _key_text(("b", KEY_B)))
    assert pickle.loads(dumped).key_ids == ("b",)
    # And where it is not set, the first use says what to set, and where
    monkeypatch.delenv("DRAMATIQ_RAY_TEST_KEYS")
    copy = pickle.loads(dumped)
    with pytest.raises(ConfigurationError, match=r"DRAMATIQ_RAY_TEST_KEYS is not set.*runtime_env"):
        copy.encrypt(DATA)


def test_encryption_keys_text_names_the_first_key_current() -> None:
    keys = EncryptionKeys.parse(_key_text(("2026-12", KEY_B), ("2026-11", KEY_A)))
    assert (keys.current, keys.key_ids) == ("2026-12", ("2026-11", "2026-12"))


@pytest.mark.parametrize(
    "text", ["", "a", "a:not-base64!", f"a:{base64.b64encode(bytes(range(31))).decode()}", "a:AAAA,a:AAAA"]
)
def test_malformed_key_text_is_refused_without_showing_it(text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRAMATIQ_RAY_TEST_KEYS", text)
    with pytest.raises(ConfigurationError) as refused:
        EncryptionKeys.from_env("DRAMATIQ_RAY_TEST_KEYS")
    assert "DRAMATIQ_RAY_TEST_KEYS" in str(refused.value)
    if len(text) > 2:
        assert text.partition(":")[2] not in str(refused.value)


def test_unknown_key_provider_error_says_how_to_register_it() -> None:
    with pytest.raises(ConfigurationError, match="register_provider"):
        EncryptionKeys.from_provider("tests.nobody-registered-this".replace("-", "_"))


def test_decryption_error_pickles_with_its_key_id() -> None:
    error = DecryptionError("nope", key_id="a")
    copy = pickle.loads(pickle.dumps(error))
    assert copy.key_id == "a"
    assert str(copy) == "nope"
