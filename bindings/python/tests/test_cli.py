"""The CLI, Ctrl-C handling in a real process, and the library loader."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import Registry, child_env, leftovers

PY = sys.executable


def test_cli_pulls_and_prints_json(registry: Registry, tmp_path: Path) -> None:
    out = subprocess.run(
        [PY, "-m", "vicpull", "pull", registry.app.reference, "--store", str(tmp_path),
         "--plain-http", "--json"],
        env=child_env(), capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["manifest_digest"] == registry.app.digest
    lines = out.stderr.splitlines()
    assert lines[0].endswith("Pulling from py/app")
    assert any(l.endswith(": Pull complete") for l in lines)
    assert lines[-1].startswith("Status: Downloaded newer image for")


def test_cli_reports_errors(tmp_path: Path) -> None:
    out = subprocess.run(
        [PY, "-m", "vicpull", "pull", "UPPER/Case::x", "--store", str(tmp_path)],
        env=child_env(), capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 1 and "BAD_REFERENCE" in out.stderr


def _start_and_interrupt(argv: list, store: Path) -> "tuple[subprocess.CompletedProcess, float]":
    proc = subprocess.Popen(argv, env=child_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    # Wait until bytes flow, then press Ctrl-C.
    for line in proc.stderr:
        if "Downloading" in line and " 0%" not in line:
            break
    else:
        raise AssertionError("no download progress: rc=%s" % proc.wait())
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    took = time.monotonic() - t0
    return subprocess.CompletedProcess(argv, proc.returncode, out, err), took


def test_ctrl_c_cancels_cli_pull(registry: Registry, tmp_path: Path) -> None:
    done, took = _start_and_interrupt(
        [PY, "-m", "vicpull", "pull", registry.big.reference, "--store", str(tmp_path),
         "--plain-http"], tmp_path)
    assert done.returncode == 130, done.stderr
    assert "interrupted" in done.stderr
    assert took < 2.0, f"took {took:.2f}s to stop"
    assert leftovers(tmp_path) == []


SCRIPT = """
import sys, vicpull
def show(p):
    if p.kind == vicpull.ProgressKind.DOWNLOADING:
        print("Downloading", p.current, file=sys.stderr, flush=True)
try:
    vicpull.pull(sys.argv[1], store=sys.argv[2], plain_http=True, on_progress=show)
except KeyboardInterrupt:
    print("KeyboardInterrupt", flush=True)
    sys.exit(42)
"""


def test_ctrl_c_raises_keyboard_interrupt_from_pull(registry: Registry, tmp_path: Path) -> None:
    done, took = _start_and_interrupt(
        [PY, "-c", SCRIPT, registry.big.reference, str(tmp_path)], tmp_path)
    assert done.returncode == 42 and done.stdout.strip() == "KeyboardInterrupt", done.stderr
    assert took < 2.0
    assert leftovers(tmp_path) == []


def test_loader_names_what_it_tried(tmp_path: Path) -> None:
    env = child_env()
    env["VICPULL_LIBRARY"] = str(tmp_path / "nope" / "libvicpull.so")
    out = subprocess.run(
        [PY, "-c", "import vicpull; vicpull.library_version()"],
        env=env, capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 1
    assert "LibraryNotFoundError" in out.stderr
    assert f"{tmp_path}/nope/libvicpull.so (VICPULL_LIBRARY): no such file" in out.stderr
    assert "cargo build --release" in out.stderr
    cli = subprocess.run([PY, "-m", "vicpull", "pull", "a/b", "--store", str(tmp_path)],
                         env=env, capture_output=True, text=True, timeout=60)
    assert cli.returncode == 1 and cli.stderr.startswith("vicpull: cannot load libvicpull")


def test_loader_search_order(monkeypatch: object) -> None:
    from vicpull import _ffi

    mp = monkeypatch  # type: ignore[assignment]
    mp.setenv("VICPULL_LIBRARY", "/x/libvicpull.so")  # type: ignore[attr-defined]
    hows = [how for how, _ in _ffi._candidates()]
    order = ["VICPULL_LIBRARY", "next to the package", "repository target/release",
             "repository target/debug", "system loader"]
    assert [h for h in dict.fromkeys(hows) if h != "ctypes.util.find_library"] == order


def test_loader_uses_vicpull_library(tmp_path: Path) -> None:
    from vicpull import _ffi

    env = child_env()
    env["VICPULL_LIBRARY"] = _ffi.library_path()
    out = subprocess.run([PY, "-m", "vicpull", "--library"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == _ffi.library_path()


def test_loader_lists_every_place_it_tried(monkeypatch: object, tmp_path: Path) -> None:
    import pytest

    from vicpull import _ffi

    bogus = tmp_path / "libvicpull.so"
    bogus.write_text("not an ELF file")
    places = [("next to the package", str(tmp_path / "missing.so")),
              ("repository target/release", str(bogus)),
              ("system loader", "libvicpull-does-not-exist.so.0")]
    monkeypatch.setattr(_ffi, "_candidates", lambda: places)  # type: ignore[attr-defined]
    with pytest.raises(_ffi.LibraryNotFoundError) as info:
        _ffi.load()
    text = str(info.value)
    assert f"{tmp_path}/missing.so (next to the package): no such file" in text
    assert f"{bogus} (repository target/release): " in text
    assert "libvicpull-does-not-exist.so.0 (system loader): " in text


EXIT_SCRIPT = """
import sys, threading, time, vicpull
mode, ref, store = sys.argv[1:]
if mode == "handle":
    p = vicpull.Pull(ref, store=store, plain_http=True, on_progress=lambda e: None).start()
else:  # a daemon thread is inside pull() when the interpreter exits
    def run():
        try:
            vicpull.pull(ref, store=store, plain_http=True, on_progress=lambda e: None)
        except BaseException as e:
            print("thread:", type(e).__name__, flush=True)
    threading.Thread(target=run, daemon=True).start()
time.sleep(0.3)
print("exiting", flush=True)
"""


def test_exit_with_a_running_pull_is_clean(registry: Registry, tmp_path: Path) -> None:
    # Without the binding's atexit hook the library's callback thread would
    # enter a finalizing interpreter and the process would abort.
    for mode in ("handle", "daemon-thread"):
        out = subprocess.run(
            [PY, "-c", EXIT_SCRIPT, mode, registry.big.reference, str(tmp_path / mode)],
            env=child_env(), capture_output=True, text=True, timeout=60,
        )
        assert out.returncode == 0, (mode, out.returncode, out.stderr)
        assert "exiting" in out.stdout
        assert leftovers(tmp_path / mode) == []
