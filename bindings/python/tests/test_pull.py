"""pull() and Pull against the loopback registry."""

from __future__ import annotations

import gc
import hashlib
import json
import os
import threading
import time
from pathlib import Path
from typing import List

import pytest

import vicpull
from vicpull import Progress, ProgressKind, State

from conftest import Registry, leftovers


def check_blobs(store: Path) -> int:
    blobs = list((store / "blobs" / "sha256").iterdir())
    for b in blobs:
        assert hashlib.sha256(b.read_bytes()).hexdigest() == b.name, b
    return len(blobs)


def test_pull_matches_seeded_image(registry: Registry, tmp_path: Path) -> None:
    events: List[Progress] = []
    r = vicpull.pull(registry.app.reference, store=tmp_path, plain_http=True,
                     on_progress=events.append)
    assert r.manifest_digest == r.digest == registry.app.digest
    assert r.reference == registry.app.reference and r.store == str(tmp_path)
    assert len(r.layers) == 2 and not r.up_to_date
    assert all(l.digest.startswith("sha256:") and l.diff_id and l.size > 0 for l in r.layers)
    assert json.loads(r.json)["manifest_digest"] == registry.app.digest
    assert check_blobs(tmp_path) >= 4
    index = json.loads((tmp_path / "index.json").read_text())
    assert index["manifests"][0]["digest"] == r.stored_manifest_digest
    assert leftovers(tmp_path) == []

    # Order: image-level frame, then each layer's steps in order.
    assert events[0].kind == ProgressKind.PULLING_FROM and events[0].layer is None
    assert [e.kind for e in events[-2:]] == [ProgressKind.DIGEST, ProgressKind.STATUS]
    step = {ProgressKind.PULLING_FS_LAYER: 1, ProgressKind.WAITING: 2,
            ProgressKind.DOWNLOADING: 3, ProgressKind.VERIFYING_CHECKSUM: 4,
            ProgressKind.DOWNLOAD_COMPLETE: 5, ProgressKind.PULL_COMPLETE: 6}
    for layer in r.layers:
        mine = [e for e in events if e.layer == layer.digest]
        steps = [step[e.kind] for e in mine]
        assert steps == sorted(steps), mine
        got = [e.current for e in mine if e.kind == ProgressKind.DOWNLOADING]
        assert got == sorted(got) and got[-1] == layer.size
        assert {ProgressKind.PULLING_FS_LAYER, ProgressKind.DOWNLOAD_COMPLETE,
                ProgressKind.PULL_COMPLETE} <= {e.kind for e in mine}


def test_second_pull_is_up_to_date(registry: Registry, tmp_path: Path) -> None:
    first = vicpull.pull(registry.app.reference, store=str(tmp_path), plain_http=True)
    again = vicpull.pull(registry.app.reference, store=tmp_path,
                         plain_http=[registry.addr])
    assert not first.up_to_date and again.up_to_date
    assert again.layers == first.layers


@pytest.mark.parametrize(
    "options,exc,text",
    [
        ({"max_concurrent_downloads": 65}, vicpull.InvalidArgumentError,
         "max_concurrent_downloads must be 1 to 64"),
        ({"max_attempts": "three"}, vicpull.InvalidArgumentError, "max_attempts"),
        ({"bogus": 1}, vicpull.InvalidArgumentError, "unknown field `bogus`"),
        ({"username": "u"}, vicpull.InvalidArgumentError, "username and password"),
        ({"platform": "nope"}, vicpull.VicpullError, "platform"),
    ],
)
def test_bad_options_raise_with_library_message(tmp_path: Path, options: dict,
                                                exc: type, text: str) -> None:
    with pytest.raises(exc) as info:
        vicpull.pull("example.test/a/b", store=tmp_path, **options)
    e = info.value
    assert isinstance(e, vicpull.VicpullError) and text in e.message
    assert not e.message.startswith(e.code.name)
    assert str(e) == f"{e.code.name}: {e.message}"


def test_bad_reference(tmp_path: Path) -> None:
    with pytest.raises(vicpull.BadReferenceError) as info:
        vicpull.pull("UPPER/Case::x", store=tmp_path)
    assert info.value.code == vicpull.Code.BAD_REFERENCE
    assert isinstance(info.value, ValueError)


def test_missing_tag_is_not_found(registry: Registry, tmp_path: Path) -> None:
    with pytest.raises(vicpull.NotFoundError) as info:
        vicpull.pull(f"{registry.addr}/py/app:nope", store=tmp_path, plain_http=True)
    assert "404" in info.value.message


class Boom(Exception):
    pass


def test_exception_in_on_progress_cancels_and_reraises(registry: Registry,
                                                       tmp_path: Path) -> None:
    seen: List[Progress] = []

    def on_progress(p: Progress) -> None:
        seen.append(p)
        if p.kind == ProgressKind.DOWNLOADING and p.current > 0:
            raise Boom("stop here")

    t0 = time.monotonic()
    with pytest.raises(Boom, match="stop here"):
        vicpull.pull(registry.big.reference, store=tmp_path, plain_http=True,
                     on_progress=on_progress)
    assert time.monotonic() - t0 < 10, "the pull was not cancelled"
    # No event after the one that raised.
    assert seen[-1].kind == ProgressKind.DOWNLOADING and seen[-1].current > 0
    assert leftovers(tmp_path) == []


def test_keyboard_interrupt_in_on_progress(registry: Registry, tmp_path: Path) -> None:
    def on_progress(p: Progress) -> None:
        if p.kind == ProgressKind.DOWNLOADING and p.current > 0:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        vicpull.pull(registry.big.reference, store=tmp_path, plain_http=True,
                     on_progress=on_progress)
    assert leftovers(tmp_path) == []


def test_pull_object_lifecycle(registry: Registry, tmp_path: Path) -> None:
    p = vicpull.Pull(registry.big.reference, store=tmp_path, plain_http=True)
    with pytest.raises(ValueError, match="not started"):
        p.poll()
    with p:
        st = p.poll()
        assert st.state == State.PENDING and st.result == vicpull.Code.PENDING
        with pytest.raises(TimeoutError):
            p.wait(timeout=0.1)
        p.cancel()
        p.cancel()
        with pytest.raises(vicpull.PullCancelledError) as info:
            p.wait()
        assert info.value.code == vicpull.Code.CANCELLED
        assert p.poll().state == State.CANCELLED
    p.close()  # idempotent
    with pytest.raises(ValueError, match="closed"):
        p.poll()
    p.cancel()  # a no-op once closed
    assert leftovers(tmp_path) == []


def test_poll_delivers_progress_and_counters(registry: Registry, tmp_path: Path) -> None:
    got: List[Progress] = []
    with vicpull.Pull(registry.app.reference, store=tmp_path, plain_http=True,
                      on_progress=got.append) as p:
        while not (st := p.poll(0.02)).finished:
            pass
        r = p.result()
    assert st.state == State.DONE and st.layers_done == st.layers_total == 2
    assert st.bytes_done == st.bytes_total == sum(l.size for l in r.layers)
    assert got[-1].kind == ProgressKind.STATUS


def test_dropped_pull_is_freed(registry: Registry, tmp_path: Path) -> None:
    from vicpull import _pull

    p = vicpull.Pull(registry.big.reference, store=tmp_path, plain_http=True,
                     on_progress=lambda e: None).start()
    key = p._key
    assert key in _pull._inboxes
    del p
    gc.collect()
    # vic_pull_free ran the finalizer, which dropped the key.
    assert key not in _pull._inboxes
    assert leftovers(tmp_path) == []


def test_concurrent_pulls_from_threads(registry: Registry, tmp_path: Path) -> None:
    results: List[object] = []

    def one(i: int) -> None:
        try:
            n: List[Progress] = []
            r = vicpull.pull(registry.app.reference, store=tmp_path / str(i),
                             plain_http=True, on_progress=n.append)
            results.append((r.manifest_digest, len(n) > 0))
        except BaseException as e:  # pragma: no cover - reported below
            results.append(e)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [(registry.app.digest, True)] * 4


def test_cancelled_pull_resumes_and_partials_can_be_purged(registry: Registry,
                                                           tmp_path: Path) -> None:
    def stop(p: Progress) -> None:
        if p.kind == ProgressKind.DOWNLOADING and p.current > 0:
            raise Boom

    with pytest.raises(Boom):
        vicpull.pull(registry.big.reference, store=tmp_path, plain_http=True, on_progress=stop)
    partials = list((tmp_path / ".vicpull" / "ingest").glob("*.partial"))
    assert partials, "a cancelled download keeps its partial"
    size = sum(p.stat().st_size for p in partials)
    assert vicpull.purge_partials(tmp_path) == (len(partials), size)
    assert not list((tmp_path / ".vicpull" / "ingest").glob("*.partial"))
    assert vicpull.purge_partials(tmp_path) == (0, 0)


def test_purge_partials_edge_cases(tmp_path: Path) -> None:
    assert vicpull.purge_partials(tmp_path / "no" / "such" / "store") == (0, 0)
    not_utf8 = os.fsdecode(os.fsencode(str(tmp_path)) + b"/\xff")
    with pytest.raises(vicpull.InvalidArgumentError) as info:
        vicpull.purge_partials(not_utf8)
    assert "UTF-8" in info.value.message
