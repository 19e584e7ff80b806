"""vicpull: pull container images from Docker/OCI registries into an OCI
image-layout directory, through libvicpull's C API (ctypes, no compiled
parts).

    >>> import vicpull
    >>> r = vicpull.pull("127.0.0.1:5000/app:1", store="/tmp/oci",
    ...                  plain_http=True)  # doctest: +SKIP
"""

from __future__ import annotations

from . import _ffi
from ._errors import (
    AuthError,
    BadReferenceError,
    BufferTooSmallError,
    Code,
    DigestMismatchError,
    HostRejectedError,
    InternalError,
    InvalidArgumentError,
    NetworkError,
    NotFoundError,
    PullCancelledError,
    RateLimitedError,
    RegistryError,
    StoreIOError,
    UnsupportedError,
    VicpullError,
    error_for,
)
from ._ffi import LibraryNotFoundError, library_path
from ._pull import Pull, pull, purge_partials
from ._types import (
    Layer,
    LayerCommit,
    Progress,
    ProgressKind,
    PullOptions,
    Result,
    State,
    Status,
)

__version__ = "0.1.0"


def library_version() -> str:
    """The loaded libvicpull's version, e.g. "0.1.0"."""
    v: bytes = _ffi.lib().vic_version()
    return v.decode()


__all__ = [
    "AuthError", "BadReferenceError", "BufferTooSmallError", "Code",
    "DigestMismatchError", "HostRejectedError", "InternalError", "InvalidArgumentError", "Layer",
    "LayerCommit", "LibraryNotFoundError", "NetworkError", "NotFoundError", "Progress",
    "ProgressKind", "Pull", "PullCancelledError", "PullOptions", "RateLimitedError",
    "RegistryError", "Result", "State", "Status", "StoreIOError",
    "UnsupportedError", "VicpullError", "error_for", "library_path",
    "library_version", "pull", "purge_partials",
]
