"""AES-256-GCM encryption of result payloads: round trips, rotation, tampering and key hygiene."""

from __future__ import annotations

import os
import pickle

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


def test_encryption_keys_pickle_with_their_keys() -> None:
    keys = EncryptionKeys({"a": KEY_A, "b": KEY_B}, current="b")
    _, blob = keys.encrypt(DATA)
    copy = pickle.loads(pickle.dumps(keys))
    assert copy.current == "b"
    assert copy.key_ids == ("a", "b")
    assert copy.decrypt("b", blob) == DATA


def test_decryption_error_pickles_with_its_key_id() -> None:
    error = DecryptionError("nope", key_id="a")
    copy = pickle.loads(pickle.dumps(error))
    assert copy.key_id == "a"
    assert str(copy) == "nope"
