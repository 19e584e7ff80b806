"""Exceptions mirroring vic_result codes: one class per failure code, all
under VicpullError, which carries the code and the library's message."""

from __future__ import annotations

import enum
from typing import Dict, Type


class Code(enum.IntEnum):
    """vic_result values (fixed by the C API, never reused)."""

    OK = 0
    PENDING = 1
    INVALID_ARGUMENT = 2
    BAD_REFERENCE = 3
    AUTH = 4
    NOT_FOUND = 5
    NETWORK = 6
    REGISTRY = 7
    DIGEST_MISMATCH = 8
    UNSUPPORTED = 9
    STORE_IO = 10
    CANCELLED = 11
    INTERNAL = 12
    RATE_LIMITED = 13
    BUFFER_TOO_SMALL = 14
    HOST_REJECTED = 15


class VicpullError(Exception):
    """A failure reported by libvicpull.

    ``code`` is the vic_result value and ``message`` the library's text
    (without the "NAME: " prefix that vic_last_error_message puts on it).
    """

    code: Code = Code.INTERNAL

    def __init__(self, message: str, code: "Code | int | None" = None) -> None:
        if code is not None:
            try:
                self.code = Code(code)
            except ValueError:
                self.code = Code.INTERNAL
                message = f"unknown result code {code}: {message}"
        prefix = self.code.name + ": "
        if message.startswith(prefix):
            message = message[len(prefix):]
        self.message = message
        super().__init__(f"{self.code.name}: {message}")


class InvalidArgumentError(VicpullError, ValueError):
    """A bad option: unknown key, wrong type, value out of range."""

    code = Code.INVALID_ARGUMENT


class BadReferenceError(VicpullError, ValueError):
    """The image reference is malformed."""

    code = Code.BAD_REFERENCE


class AuthError(VicpullError):
    """The registry or its token server refused the credentials."""

    code = Code.AUTH


class NotFoundError(VicpullError):
    """The repository, tag, blob or a matching platform does not exist."""

    code = Code.NOT_FOUND


class NetworkError(VicpullError):
    """Connection failed, reset or timed out after the allowed retries."""

    code = Code.NETWORK


class RegistryError(VicpullError):
    """The registry answered something the protocol does not allow."""

    code = Code.REGISTRY


class DigestMismatchError(VicpullError):
    """Bytes did not match their digest (or a layer its diffID)."""

    code = Code.DIGEST_MISMATCH


class UnsupportedError(VicpullError):
    """A media type, digest algorithm or schema vicpull cannot use."""

    code = Code.UNSUPPORTED


class StoreIOError(VicpullError):
    """Reading or writing the store failed."""

    code = Code.STORE_IO


class PullCancelledError(VicpullError):
    """The pull was cancelled (named so as not to clash with
    asyncio.CancelledError or concurrent.futures.CancelledError)."""

    code = Code.CANCELLED


class InternalError(VicpullError):
    """A bug in vicpull: a caught panic or a broken invariant."""

    code = Code.INTERNAL


class RateLimitedError(VicpullError):
    """The registry kept answering 429 Too Many Requests."""

    code = Code.RATE_LIMITED


class BufferTooSmallError(VicpullError):
    """A caller buffer was too small (the binding retries; not expected)."""

    code = Code.BUFFER_TOO_SMALL


class HostRejectedError(VicpullError):
    """The ``on_commit`` hook refused a layer; the exception it raised is
    this error's ``__cause__``."""

    code = Code.HOST_REJECTED


_BY_CODE: Dict[Code, Type[VicpullError]] = {
    cls.code: cls
    for cls in (
        InvalidArgumentError, BadReferenceError, AuthError, NotFoundError,
        NetworkError, RegistryError, DigestMismatchError, UnsupportedError,
        StoreIOError, PullCancelledError, InternalError, RateLimitedError,
        BufferTooSmallError, HostRejectedError,
    )
}


def error_for(code: int, message: str) -> VicpullError:
    """The exception for a vic_result code and message."""
    try:
        cls = _BY_CODE.get(Code(code), VicpullError)
    except ValueError:
        cls = VicpullError
    return cls(message, code)
