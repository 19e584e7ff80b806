"""The on_commit hook, through pulls from the loopback registry."""

from __future__ import annotations

import hashlib
import json
import time
import traceback
from pathlib import Path
from typing import Callable, Dict, List, Optional

import pytest

import vicpull
from vicpull import LayerCommit, Progress, ProgressKind, State

from conftest import Registry, leftovers


def sha256_of(path: str) -> str:
    return "sha256:" + hashlib.sha256(Path(path).read_bytes()).hexdigest()


def named_images(store: Path) -> int:
    index = store / "index.json"
    if not index.exists():
        return 0
    manifests = json.loads(index.read_text()).get("manifests", [])
    return sum(1 for m in manifests
               if m.get("annotations", {}).get("org.opencontainers.image.ref.name"))


class HookLog:
    """What the hooks saw: each offer, the hash of its file read inside the
    hook, and how many PULL_COMPLETE events its layer had had by then."""

    def __init__(self, refuse: Optional[Callable[[LayerCommit], None]] = None) -> None:
        self.refuse = refuse
        self.offers: List[LayerCommit] = []
        self.hashed: Dict[str, str] = {}
        self.complete: Dict[str, int] = {}
        self.before: List[int] = []

    def on_progress(self, p: Progress) -> None:
        if p.kind == ProgressKind.PULL_COMPLETE and p.layer:
            self.complete[p.layer] = self.complete.get(p.layer, 0) + 1

    def on_commit(self, layer: LayerCommit) -> None:
        self.offers.append(layer)
        self.before.append(self.complete.get(layer.digest, 0))
        self.hashed[layer.digest] = sha256_of(layer.path)
        if self.refuse:
            self.refuse(layer)


def test_commit_hook_sees_every_layer_in_order(registry: Registry, tmp_path: Path) -> None:
    log = HookLog()
    r = vicpull.pull(registry.app.reference, store=tmp_path, plain_http=True,
                     on_progress=log.on_progress, on_commit=log.on_commit)
    assert len(r.layers) == 2 and len(log.offers) == 2
    blobs = tmp_path / "blobs" / "sha256"
    for i, (got, want) in enumerate(zip(log.offers, r.layers)):
        assert got.index == i
        assert (got.digest, got.diff_id, got.size, got.media_type) == (
            want.digest, want.diff_id, want.size, want.media_type)
        assert got.diff_id and got.diff_id.startswith("sha256:")
        assert got.path == str(blobs / got.digest.split(":", 1)[1])
        assert log.hashed[got.digest] == got.digest, "the file at path is the verified blob"
        # Offered before its "Pull complete", which still came once after.
        assert log.before[i] == 0 and log.complete[got.digest] == 1

    bare = HookLog()
    vicpull.pull(registry.app.reference, store=tmp_path / "bare", plain_http=True,
                 verify_diff_ids=False, on_commit=bare.on_commit)
    assert [o.diff_id for o in bare.offers] == [None, None]


class DiskFull(Exception):
    pass


def refuse_second(layer: LayerCommit) -> None:
    if layer.index == 1:
        raise DiskFull("disk image full")


def test_exception_in_commit_hook_refuses_second_layer(registry: Registry,
                                                       tmp_path: Path) -> None:
    log = HookLog(refuse_second)
    with vicpull.Pull(registry.app.reference, store=tmp_path, plain_http=True,
                      on_progress=log.on_progress, on_commit=log.on_commit) as p:
        with pytest.raises(vicpull.HostRejectedError) as info:
            p.wait()
        st = p.poll()
    assert st.state == State.FAILED and st.result == vicpull.Code.HOST_REJECTED
    assert st.layers_done == 1, "the first layer was committed"
    e = info.value
    assert e.code == vicpull.Code.HOST_REJECTED
    assert "DiskFull: disk image full" in e.message and log.offers[1].digest in e.message
    # Chained, with the hook's own frames in the traceback.
    assert isinstance(e.__cause__, DiskFull)
    frames = [f.name for f in traceback.extract_tb(e.__cause__.__traceback__)]
    assert "refuse_second" in frames, frames

    first, second = log.offers
    assert log.complete.get(first.digest) == 1 and second.digest not in log.complete
    assert named_images(tmp_path) == 0
    assert sha256_of(first.path) == first.digest
    # The refused layer was verified into the store before it was offered;
    # it stays there as a blob no image names.
    assert Path(second.path).is_file()
    assert leftovers(tmp_path) == []


def test_keyboard_interrupt_in_commit_hook(registry: Registry, tmp_path: Path) -> None:
    def on_commit(layer: LayerCommit) -> None:
        raise KeyboardInterrupt

    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        vicpull.pull(registry.app.reference, store=tmp_path, plain_http=True,
                     on_commit=on_commit)
    assert time.monotonic() - t0 < 10
    assert named_images(tmp_path) == 0
    assert leftovers(tmp_path) == []


def test_close_refuses_an_offer_nobody_polls_for(registry: Registry, tmp_path: Path) -> None:
    called: List[LayerCommit] = []
    p = vicpull.Pull(registry.app.reference, store=tmp_path, plain_http=True,
                     on_commit=called.append).start()
    # Without poll() the offer waits in the inbox and the library waits for it.
    deadline = time.monotonic() + 10
    while not p._inbox._waiting and time.monotonic() < deadline:
        time.sleep(0.01)
    assert p._inbox._waiting, "the first layer was never offered"
    t0 = time.monotonic()
    p.close()
    assert time.monotonic() - t0 < 5, "close() waited for an answer nobody gives"
    assert called == [] and named_images(tmp_path) == 0
