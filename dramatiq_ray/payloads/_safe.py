"""Describing payloads and foreign errors safely, for error messages and logs.

Errors and logs never carry payloads or key material: a size, a digest, at most a short prefix. Payload bytes end
up in messages mostly by accident, through another library's error text (Dramatiq's ``DecodeError`` holds the
repr of everything it failed to decode; numpy's header errors hold the header). Every error or log line of the
payload layer that shows bytes, a user's value, or another library's error text goes through here.
"""

from __future__ import annotations

__all__ = ["MAX_TEXT", "PREFIX_BYTES", "describe_bytes", "describe_error", "shorten"]

#: How many leading bytes of a payload a message may show (as hex).
PREFIX_BYTES = 16
#: The longest text taken from elsewhere (an error message, a repr) a message may show, in characters.
MAX_TEXT = 200


def shorten(text: str, limit: int = MAX_TEXT) -> str:
    """``text`` when it is at most ``limit`` characters, else its first characters, an ellipsis and the count."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text)} characters)"


def describe_bytes(data: bytes | bytearray | memoryview) -> str:
    """``"3145728 bytes starting 9f3a0c..."``: the size and at most :data:`PREFIX_BYTES` leading bytes, in hex."""
    view = memoryview(data).cast("B") if isinstance(data, memoryview) else memoryview(data)
    size = view.nbytes
    if size == 0:
        return "0 bytes"
    head = bytes(view[:PREFIX_BYTES]).hex()
    return f"{size} bytes starting {head}{'...' if size > PREFIX_BYTES else ''}"


def describe_error(error: BaseException) -> str:
    """``"TypeName: message"``, the message cut to :data:`MAX_TEXT` characters (it may quote the payload)."""
    text = str(error)
    name = type(error).__name__
    return f"{name}: {shorten(text)}" if text else name
