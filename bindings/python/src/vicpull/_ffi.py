"""Loading libvicpull and declaring its C API for ctypes.

Every function of include/vicpull.h is declared here with argtypes and
restype; tests/test_header.py checks the declarations against the header.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from pathlib import Path
from typing import Callable, List, Optional, Tuple


class LibraryNotFoundError(OSError):
    """libvicpull could not be loaded; the message lists every place tried."""


def _file_names() -> List[str]:
    if sys.platform == "darwin":
        return ["libvicpull.dylib"]
    if sys.platform == "win32":
        return ["vicpull.dll"]
    return ["libvicpull.so", "libvicpull.so.0"]


def _candidates() -> List[Tuple[str, str]]:
    """(how it was found, what to pass to CDLL), in search order."""
    out: List[Tuple[str, str]] = []
    env = os.environ.get("VICPULL_LIBRARY")
    if env:
        out.append(("VICPULL_LIBRARY", env))
    here = Path(__file__).resolve().parent
    for name in _file_names():
        out.append(("next to the package", str(here / name)))
    # A checkout: bindings/python/src/vicpull -> the repository root.
    root = here.parents[3] if len(here.parents) > 3 else None
    if root is not None and (root / "Cargo.toml").is_file():
        for profile in ("release", "debug"):
            for name in _file_names():
                out.append((f"repository target/{profile}", str(root / "target" / profile / name)))
    found = ctypes.util.find_library("vicpull")
    if found:
        out.append(("ctypes.util.find_library", found))
    for name in reversed(_file_names()):  # the soname first
        out.append(("system loader", name))
    return out


def load() -> Tuple[ctypes.CDLL, str]:
    """Load the first libvicpull that opens; raise LibraryNotFoundError."""
    tried: List[str] = []
    for how, path in _candidates():
        if os.sep in path and not os.path.exists(path):
            tried.append(f"  {path} ({how}): no such file")
        else:
            try:
                return ctypes.CDLL(path), path
            except OSError as e:
                tried.append(f"  {path} ({how}): {e}")
        if how == "VICPULL_LIBRARY":
            break  # an explicit choice that fails is not silently replaced
    raise LibraryNotFoundError(
        "cannot load libvicpull; tried:\n" + "\n".join(tried) + "\n"
        "Build it with `cargo build --release`, or set VICPULL_LIBRARY to its path."
    )


# --- Types of include/vicpull.h ------------------------------------------

vic_result = ctypes.c_uint32
vic_progress_kind = ctypes.c_uint32
vic_log_level = ctypes.c_uint32
vic_pull_state = ctypes.c_uint32


class vic_pull(ctypes.Structure):
    """Opaque handle; only pointers to it are used."""


class vic_progress(ctypes.Structure):
    _fields_ = [
        ("layer_digest", ctypes.c_char_p),
        ("kind", vic_progress_kind),
        ("current", ctypes.c_uint64),
        ("total", ctypes.c_uint64),
        ("message", ctypes.c_char_p),
    ]


class vic_log_params(ctypes.Structure):
    _fields_ = [
        ("level", vic_log_level),
        ("target", ctypes.c_char_p),
        ("message", ctypes.c_char_p),
    ]


class vic_pull_status(ctypes.Structure):
    _fields_ = [
        ("state", vic_pull_state),
        ("result", vic_result),
        ("layers_total", ctypes.c_uint32),
        ("layers_done", ctypes.c_uint32),
        ("bytes_total", ctypes.c_uint64),
        ("bytes_done", ctypes.c_uint64),
    ]


vic_progress_callback = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.POINTER(vic_progress))
vic_done_callback = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_uint32, ctypes.c_char_p)
vic_finalizer = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
vic_log_callback = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.POINTER(vic_log_params))


class vic_layer_commit(ctypes.Structure):
    _fields_ = [
        ("index", ctypes.c_uint32),
        ("digest", ctypes.c_char_p),
        ("diff_id", ctypes.c_char_p),
        ("media_type", ctypes.c_char_p),
        ("size", ctypes.c_uint64),
        ("path", ctypes.c_char_p),
    ]


# err_buf is written by the hook: POINTER(c_char), as a c_char_p argument
# would arrive as an immutable bytes copy.
vic_commit_callback = ctypes.CFUNCTYPE(
    ctypes.c_int32, ctypes.c_void_p, ctypes.POINTER(vic_layer_commit),
    ctypes.POINTER(ctypes.c_char), ctypes.c_size_t,
)


# The library reads the whole struct: every member must be declared, even
# those this binding leaves NULL, or it reads past the end.
class vic_callbacks(ctypes.Structure):
    _fields_ = [
        ("user_data", ctypes.c_void_p),
        ("on_progress", vic_progress_callback),
        ("on_done", vic_done_callback),
        ("finalizer", vic_finalizer),
        ("on_commit", vic_commit_callback),
    ]


_P = ctypes.POINTER
_size_p = _P(ctypes.c_size_t)

# name: (restype, argtypes), in header order.
SIGNATURES = {
    "vic_log_set": (vic_result, [vic_log_callback, ctypes.c_void_p, ctypes.c_uint32]),
    "vic_pull_start": (
        vic_result,
        [ctypes.c_char_p, _P(vic_callbacks), _P(_P(vic_pull))],
    ),
    "vic_pull_poll": (vic_result, [_P(vic_pull), ctypes.c_uint32, _P(vic_pull_status)]),
    "vic_pull_cancel": (None, [_P(vic_pull)]),
    "vic_pull_free": (None, [_P(vic_pull)]),
    "vic_pull_result_json": (
        vic_result,
        [_P(vic_pull), ctypes.c_char_p, ctypes.c_size_t, _size_p],
    ),
    "vic_pull_error_message": (
        vic_result,
        [_P(vic_pull), ctypes.c_char_p, ctypes.c_size_t, _size_p],
    ),
    "vic_result_name": (ctypes.c_char_p, [ctypes.c_uint32]),
    "vic_last_error_message": (vic_result, [ctypes.c_char_p, ctypes.c_size_t, _size_p]),
    "vic_version": (ctypes.c_char_p, []),
    "vic_store_purge_partials": (
        vic_result,
        [ctypes.c_char_p, ctypes.c_uint64, ctypes.c_uint64, _P(ctypes.c_uint64),
         _P(ctypes.c_uint64)],
    ),
}


def _declare(lib: ctypes.CDLL) -> ctypes.CDLL:
    for name, (restype, argtypes) in SIGNATURES.items():
        fn = getattr(lib, name)
        fn.restype = restype
        fn.argtypes = argtypes
    return lib


_lib: Optional[ctypes.CDLL] = None
_path: Optional[str] = None


def lib() -> ctypes.CDLL:
    """The loaded, declared library (loaded on first use)."""
    global _lib, _path
    if _lib is None:
        loaded, _path = load()
        _lib = _declare(loaded)
    return _lib


def library_path() -> str:
    """Where the loaded library came from."""
    lib()
    assert _path is not None
    return _path


OK = 0
BUFFER_TOO_SMALL = 14


def read_text(fill: Callable[..., int], *args: object) -> Tuple[int, str]:
    """Call a caller-buffer text function (buf, len, out_n) twice: once for
    the length, once for the text. Returns (result code, text)."""
    n = ctypes.c_size_t(0)
    rc = fill(*args, None, 0, ctypes.byref(n))
    if rc not in (OK, BUFFER_TOO_SMALL):
        return rc, ""
    buf = ctypes.create_string_buffer(n.value + 1)
    rc = fill(*args, buf, len(buf), ctypes.byref(n))
    return rc, buf.raw[: n.value].decode("utf-8", "replace")


def last_error() -> str:
    """vic_last_error_message of this OS thread."""
    return read_text(lib().vic_last_error_message)[1]
