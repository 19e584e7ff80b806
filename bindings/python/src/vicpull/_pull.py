"""Pulls: the blocking pull() and the non-blocking Pull handle.

Callbacks from the library run on its thread for the pull. The module-level
trampolines below only copy each event into the pull's queue.SimpleQueue;
the thread that polls (Pull.poll, usually the caller of pull()) drains the
queue and calls on_progress. So user code never runs on a library thread,
an exception from it surfaces where the caller can catch it, and Ctrl-C
reaches the main thread, which polls in short slices.

The commit hook is the one callback the library waits on: its trampoline
queues the offered layer like an event and blocks until the polling thread
has run on_commit and answered (or until the pull is cancelled or closed,
which refuses every layer still waiting).
"""

from __future__ import annotations

import atexit
import ctypes
import itertools
import json
import os
import queue
import sys
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional, Set, Union

from . import _ffi
from ._errors import Code, HostRejectedError, PullCancelledError, VicpullError, error_for
from ._types import LayerCommit, Progress, ProgressKind, Result, State, Status

if TYPE_CHECKING:
    if sys.version_info >= (3, 11):
        from typing import Unpack
    else:
        from typing_extensions import Unpack
    from ._types import PullOptions

ProgressCallback = Callable[[Progress], None]
CommitCallback = Callable[[LayerCommit], None]
StrPath = Union[str, "os.PathLike[str]"]

# How long one poll waits at most while pull() blocks: the latency of
# Ctrl-C and of progress delivery.
_SLICE_S = 0.05


class _Offer:
    """A layer offered to on_commit; the library thread waits for answer()."""

    def __init__(self, layer: LayerCommit) -> None:
        self.layer = layer
        self.refusal: Optional[str] = None
        self.answered = threading.Event()
        self._lock = threading.Lock()

    def answer(self, refusal: Optional[str]) -> bool:
        """Accept (None) or refuse with a reason; only the first answer
        counts. Returns whether this one did."""
        with self._lock:
            if self.answered.is_set():
                return False
            self.refusal = refusal
            self.answered.set()
            return True


class _Inbox:
    """What the library thread hands over for one pull."""

    def __init__(self) -> None:
        self.events: "queue.SimpleQueue[Union[Progress, _Offer]]" = queue.SimpleQueue()
        self.fault: Optional[BaseException] = None
        # Offers not answered yet, and whether new ones are refused at once
        # (after cancel or close, when nobody may poll to answer them).
        self._lock = threading.Lock()
        self._waiting: Set[_Offer] = set()
        self._refusing: Optional[str] = None

    def offer(self, layer: LayerCommit) -> Optional[str]:
        """On the library thread: queue the layer for on_commit and wait for
        the answer. Returns None to accept, else the reason to refuse."""
        o = _Offer(layer)
        with self._lock:
            if self._refusing is not None:
                return self._refusing
            self._waiting.add(o)
        self.events.put(o)
        o.answered.wait()
        with self._lock:
            self._waiting.discard(o)
        return o.refusal

    def refuse_all(self, reason: str) -> None:
        """Refuse every waiting offer and every later one."""
        with self._lock:
            self._refusing = reason
            waiting = list(self._waiting)
        for o in waiting:
            o.answer(reason)


# user_data carries a key into this map, never a Python pointer. Entries
# leave in the finalizer trampoline, which the library calls exactly once.
_inboxes: Dict[int, _Inbox] = {}
_inboxes_lock = threading.Lock()
_keys = itertools.count(1)


def _inbox(user_data: Optional[int]) -> Optional[_Inbox]:
    with _inboxes_lock:
        return _inboxes.get(user_data or 0)


def _text(p: Optional[bytes]) -> Optional[str]:
    return None if p is None else p.decode("utf-8", "replace")


def _on_progress(user_data: Optional[int], p: Any) -> None:
    box = _inbox(user_data)
    if box is None:
        return
    try:
        ev = p.contents
        box.events.put(
            Progress(
                layer=_text(ev.layer_digest),
                kind=ProgressKind(ev.kind),
                current=ev.current,
                total=ev.total,
                message=_text(ev.message) or "",
            )
        )
    except BaseException as e:  # never let an exception reach ctypes
        box.fault = e


def _write_reason(buf: Any, size: int, reason: str) -> None:
    """Copy reason into the library's buffer, cut to fit, NUL-terminated."""
    if not buf or size == 0:
        return
    data = reason.encode("utf-8", "replace")[: size - 1]
    data = data.decode("utf-8", "ignore").encode()  # no half character at the cut
    ctypes.memmove(buf, data, len(data))
    buf[len(data)] = b"\0"


def _on_commit(user_data: Optional[int], layer: Any, err_buf: Any, err_len: int) -> int:
    box = _inbox(user_data)
    if box is None:
        _write_reason(err_buf, err_len, "the pull is closed")
        return 1
    try:
        c = layer.contents
        reason = box.offer(
            LayerCommit(
                index=c.index,
                digest=_text(c.digest) or "",
                diff_id=_text(c.diff_id),
                media_type=_text(c.media_type) or "",
                size=c.size,
                path=_text(c.path) or "",
            )
        )
    except BaseException as e:  # never let an exception reach ctypes
        box.fault = e
        reason = f"commit trampoline failed: {e!r}"
    if reason is None:
        return 0
    _write_reason(err_buf, err_len, reason)
    return 1


def _on_done(user_data: Optional[int], result: int, message: Optional[bytes]) -> None:
    pass  # the outcome is read through vic_pull_poll and friends


def _finalize(user_data: Optional[int]) -> None:
    with _inboxes_lock:
        _inboxes.pop(user_data or 0, None)


# Pulls not yet closed. At interpreter exit they are closed (cancelled and
# freed) while Python can still run the library's callbacks: a callback
# thread entering a finalizing interpreter would be killed mid-call.
_live: "weakref.WeakSet[Pull]" = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    for p in list(_live):
        p.close()


# The C function pointers: module globals, so they live as long as the
# library may call them.
_on_progress_c = _ffi.vic_progress_callback(_on_progress)
_on_done_c = _ffi.vic_done_callback(_on_done)
_finalize_c = _ffi.vic_finalizer(_finalize)
_on_commit_c = _ffi.vic_commit_callback(_on_commit)


def _options_json(reference: str, store: StrPath, options: Dict[str, Any]) -> bytes:
    opts: Dict[str, Any] = {"reference": reference, "store": os.fspath(store)}
    for k, v in options.items():
        if v is None:
            continue
        opts[k] = list(v) if k == "plain_http" and not isinstance(v, bool) else v
    return json.dumps(opts).encode()


class Pull:
    """One pull, driven without blocking.

    ``Pull(reference, store=..., on_progress=None, on_commit=None,
    **options)`` prepares it; ``start()`` (or ``with``) starts it; ``poll()``
    delivers progress and commit offers and reports the status; ``wait()``
    blocks until it ends and returns the Result; ``cancel()`` asks it to
    stop; ``close()`` releases it (also on ``with`` exit and, as a last
    resort, on garbage collection). Methods may be called from any thread
    (close() waits for a poll() running in another thread to return);
    on_progress and on_commit run on the thread that calls poll() or
    wait(), and the pull waits at each layer until that thread has run
    on_commit: keep polling. cancel() and close() refuse layers waiting.
    """

    def __init__(
        self,
        reference: str,
        store: StrPath,
        *,
        on_progress: Optional[ProgressCallback] = None,
        on_commit: Optional[CommitCallback] = None,
        **options: "Unpack[PullOptions]",
    ) -> None:
        self._json = _options_json(reference, store, dict(options))
        self._on_progress = on_progress
        self._on_commit = on_commit
        # The exception on_commit refused a layer with (HostRejectedError's
        # __cause__).
        self._veto: Optional[Exception] = None
        self._handle: Optional["ctypes._Pointer[_ffi.vic_pull]"] = None
        self._inbox = _Inbox()
        self._key = 0
        self._closed = False
        self._callback_error: Optional[BaseException] = None
        self._status: Optional[Status] = None
        # Held around every C call that uses the handle, so close() from
        # another thread (or atexit) never frees it under a running call.
        self._lock = threading.Lock()

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> "Pull":
        """Start the pull; returns at once. Raises InvalidArgumentError or
        BadReferenceError for bad options, with the library's message."""
        if self._closed:
            raise ValueError("Pull is closed")
        if self._handle is not None:
            raise RuntimeError("Pull already started")
        lib = _ffi.lib()
        key = next(_keys)
        with _inboxes_lock:
            _inboxes[key] = self._inbox
        cbs = _ffi.vic_callbacks(
            user_data=key,
            on_progress=_on_progress_c if self._on_progress else _ffi.vic_progress_callback(),
            on_done=_on_done_c,
            finalizer=_finalize_c,
            on_commit=_on_commit_c if self._on_commit else _ffi.vic_commit_callback(),
        )
        out = ctypes.POINTER(_ffi.vic_pull)()
        rc = lib.vic_pull_start(self._json, ctypes.byref(cbs), ctypes.byref(out))
        if rc != _ffi.OK:
            with _inboxes_lock:  # the library never saw the key
                _inboxes.pop(key, None)
            raise error_for(rc, _ffi.last_error())
        self._key, self._handle = key, out
        _live.add(self)
        return self

    def _ptr(self) -> "ctypes._Pointer[_ffi.vic_pull]":
        """The live handle; call with self._lock held."""
        if self._handle is None:
            raise ValueError("Pull is closed" if self._closed else "Pull not started")
        return self._handle

    def close(self) -> None:
        """Cancel if still running and release the handle. Idempotent.
        Blocks until the library's callbacks for this pull have returned
        (usually milliseconds); undelivered progress is dropped."""
        # vic_pull_free waits for a commit offer, which nobody may answer now.
        self._inbox.refuse_all("the pull was closed before on_commit answered")
        with self._lock:
            if self._closed:
                return
            self._closed = True
            handle, self._handle = self._handle, None
            if handle is not None:
                _ffi.lib().vic_pull_free(handle)
        _live.discard(self)

    def __enter__(self) -> "Pull":
        if self._handle is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass  # interpreter shutdown: the module may be half torn down

    # -- driving -----------------------------------------------------------

    def cancel(self) -> None:
        """Ask the pull to stop; returns at once, idempotent. Layers offered
        to on_commit and not yet answered are refused."""
        self._inbox.refuse_all("the pull was cancelled before on_commit answered")
        with self._lock:
            if self._handle is not None:
                _ffi.lib().vic_pull_cancel(self._handle)

    def poll(self, timeout: float = 0.0) -> Status:
        """Wait up to ``timeout`` seconds for the pull to end, deliver the
        progress that arrived to on_progress and the offered layers to
        on_commit, and return the status.

        If on_progress raises, the pull is cancelled and the exception
        propagates (and wait() raises it again). If on_commit raises an
        Exception, the layer is refused and the pull fails with
        HostRejectedError; any other BaseException (KeyboardInterrupt)
        refuses the layer, cancels the pull and propagates."""
        if self._callback_error is not None:
            raise self._callback_error
        lib = _ffi.lib()
        st = _ffi.vic_pull_status()
        ms = max(0, min(int(timeout * 1000), 0xFFFFFFFF))
        with self._lock:
            rc = lib.vic_pull_poll(self._ptr(), ms, ctypes.byref(st))
        if rc != _ffi.OK:
            raise error_for(rc, _ffi.last_error())
        status = Status(
            State(st.state), st.result, st.layers_total, st.layers_done,
            st.bytes_total, st.bytes_done,
        )
        self._status = status
        self._deliver()
        return status

    def _deliver(self) -> None:
        events = self._inbox.events
        while True:
            try:
                ev = events.get_nowait()
            except queue.Empty:
                break
            if isinstance(ev, _Offer):
                self._answer(ev)
                continue
            if self._on_progress is None:
                continue
            try:
                self._on_progress(ev)
            except BaseException as e:
                self._callback_error = e
                self.cancel()
                raise
        if self._inbox.fault is not None:
            self.cancel()
            raise VicpullError(f"progress trampoline failed: {self._inbox.fault!r}", Code.INTERNAL)

    def _answer(self, offer: _Offer) -> None:
        if offer.answered.is_set():
            return  # refused by cancel() or close() meanwhile
        try:
            if self._on_commit is not None:
                self._on_commit(offer.layer)
        except Exception as e:
            if offer.answer(f"{type(e).__name__}: {e}") and self._veto is None:
                self._veto = e
            return
        except BaseException as e:
            offer.answer(f"{type(e).__name__} in on_commit")
            self._callback_error = e
            self.cancel()
            raise
        offer.answer(None)

    def wait(self, timeout: Optional[float] = None) -> Result:
        """Block until the pull ends and return its Result, or raise the
        error it ended with (PullCancelledError if cancelled).

        On KeyboardInterrupt (or any exception from on_progress) the pull is
        cancelled, its end awaited, and the exception re-raised. With a
        ``timeout`` that expires first, TimeoutError is raised and the pull
        keeps running."""
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while True:
                left = _SLICE_S if deadline is None else min(_SLICE_S, deadline - time.monotonic())
                status = self.poll(max(left, 0.0))
                if status.finished:
                    return self.result()
                if deadline is not None and time.monotonic() >= deadline:
                    raise TimeoutError("the pull is still running")
        except TimeoutError:
            raise
        except BaseException:
            self.cancel()
            self._settle()
            raise

    def _settle(self, limit_s: float = 10.0) -> None:
        """After a cancel: wait (without delivering progress) until the
        pull has ended, so its temp files are gone before we go on."""
        st = _ffi.vic_pull_status()
        end = time.monotonic() + limit_s
        while time.monotonic() < end:
            with self._lock:
                if self._handle is None:
                    return
                if _ffi.lib().vic_pull_poll(self._handle, 50, ctypes.byref(st)) != _ffi.OK:
                    return
            if st.state != State.PENDING:
                return

    def result(self) -> Result:
        """The Result of a finished pull; raises its error if it failed."""
        if self._callback_error is not None:
            raise self._callback_error
        lib = _ffi.lib()
        st = self._status if self._status and self._status.finished else self.poll()
        if not st.finished:
            raise RuntimeError("the pull is still running")
        with self._lock:
            ptr = self._ptr()
            if st.state != State.DONE:
                _, message = _ffi.read_text(lib.vic_pull_error_message, ptr)
                err = error_for(st.result, message)
                if isinstance(err, HostRejectedError) and self._veto is not None:
                    raise err from self._veto
                raise err
            rc, text = _ffi.read_text(lib.vic_pull_result_json, ptr)
            if rc != _ffi.OK:
                raise error_for(rc, _ffi.last_error())
        return Result.from_json(text)


def purge_partials(store: StrPath, max_age_secs: int = 0, max_bytes: int = 0) -> "tuple[int, int]":
    """Remove resumable partial downloads from ``store``: those older than
    ``max_age_secs``, then the oldest until the rest fit in ``max_bytes``,
    plus temp files of dead processes; partials in use are kept. The
    defaults (0, 0) remove every idle partial. Returns (files, bytes)
    removed; raises StoreIOError or InvalidArgumentError."""
    removed, nbytes = ctypes.c_uint64(0), ctypes.c_uint64(0)
    rc = _ffi.lib().vic_store_purge_partials(
        os.fsencode(store), max_age_secs, max_bytes, ctypes.byref(removed), ctypes.byref(nbytes)
    )
    if rc != _ffi.OK:
        raise error_for(rc, _ffi.last_error())
    return removed.value, nbytes.value


def pull(
    reference: str,
    store: StrPath,
    *,
    on_progress: Optional[ProgressCallback] = None,
    on_commit: Optional[CommitCallback] = None,
    **options: "Unpack[PullOptions]",
) -> Result:
    """Pull ``reference`` into the OCI layout at ``store`` and return the
    Result.

    ``on_progress`` is called on this thread, in order, with every Progress
    event; all have been delivered when pull() returns. Options: platform,
    plain_http (True or a list of "host:port"), username + password or
    token, max_concurrent_downloads, max_attempts, verify_diff_ids; an
    unknown option raises InvalidArgumentError naming it.

    ``on_commit`` is called on this thread with each verified layer, in
    manifest order, before the library commits it (its blob is already in
    the store, at ``path``); returning accepts the layer, raising refuses it
    and fails the pull with HostRejectedError, whose ``__cause__`` is what
    on_commit raised.

    Ctrl-C cancels the pull and raises KeyboardInterrupt; an exception from
    on_progress cancels the pull and is re-raised here. Library failures
    raise a VicpullError subclass (PullCancelledError, NotFoundError, ...).
    """
    with Pull(reference, store, on_progress=on_progress, on_commit=on_commit,
              **options) as p:
        return p.wait()


__all__ = ["Pull", "pull", "purge_partials"]
