"""Session fixtures: a real registry started with the testkit binary
(VICPULL_TESTKIT, default target/release/testkit), images seeded into it,
and a throttling proxy in front of it. Everything listens on 127.0.0.1."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List

import pytest

ROOT = Path(__file__).resolve().parents[3]
SRC = ROOT / "bindings" / "python" / "src"


def testkit() -> str:
    return os.environ.get("VICPULL_TESTKIT", str(ROOT / "target" / "release" / "testkit"))


@dataclass
class Image:
    reference: str
    digest: str


@dataclass
class Registry:
    addr: str
    app: Image  # two layers of real files
    big: Image  # two 16 MiB layers, reached through the 1 MiB/s proxy


class ThrottleProxy:
    """Forwards connections to `target`, passing at most `rate` bytes per
    second per connection from the server back to the client."""

    def __init__(self, target: str, rate: int) -> None:
        host, port = target.rsplit(":", 1)
        self.target = (host, int(port))
        self.rate = rate
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.addr = "127.0.0.1:%d" % self.sock.getsockname()[1]
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            server = socket.create_connection(self.target)
        except OSError:
            client.close()
            return

        def upstream() -> None:
            try:
                while data := client.recv(65536):
                    server.sendall(data)
            except OSError:
                pass
            finally:
                try:
                    server.shutdown(socket.SHUT_WR)
                except OSError:
                    pass

        threading.Thread(target=upstream, daemon=True).start()
        try:
            while data := server.recv(16384):
                client.sendall(data)
                time.sleep(len(data) / self.rate)
        except OSError:
            pass
        finally:
            client.close()
            server.close()

    def close(self) -> None:
        self.closed = True
        self.sock.close()


def _seed(addr: str, *args: str) -> str:
    out = subprocess.run(
        [testkit(), args[0], "--registry", addr, *args[1:]],
        check=True, capture_output=True, text=True,
    )
    return out.stdout.strip()


@pytest.fixture(scope="session")
def registry() -> Iterator[Registry]:
    if not os.access(testkit(), os.X_OK):
        pytest.fail(f"no testkit binary at {testkit()}: cargo build --release -p vicpull-testkit")
    tmp = tempfile.mkdtemp(prefix="vicpull-py-registry")
    proc = subprocess.Popen(
        [testkit(), "registry", "--dir", tmp], stdout=subprocess.PIPE, text=True
    )
    proxy = None
    try:
        assert proc.stdout is not None
        addr = proc.stdout.readline().strip()
        assert addr.startswith("127.0.0.1:"), addr
        app = _seed(addr, "seed", "--repo", "py/app", "--tag", "1", "--from", "/etc",
                    "--from", "/usr/share/doc", "--layer-bytes", "1M")
        _seed(addr, "bench-image", "--repo", "py/big", "--tag", "1", "--seed", "5",
              "--layers", "2", "--layer-bytes", "16M")
        proxy = ThrottleProxy(addr, 1 << 20)
        yield Registry(
            addr=addr,
            app=Image(f"{addr}/py/app:1", app),
            big=Image(f"{proxy.addr}/py/big:1", ""),
        )
    finally:
        if proxy:
            proxy.close()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        shutil.rmtree(tmp, ignore_errors=True)


def leftovers(store: Path) -> List[str]:
    """Temp and lock files a pull left in the store's ingest area. A
    `<hex>.partial` is kept on purpose (the next pull resumes from it)."""
    d = store / ".vicpull" / "ingest"
    names = sorted(os.listdir(d)) if d.is_dir() else []
    return [n for n in names if not n.endswith(".partial")]


def child_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(SRC) + os.pathsep + env.get("PYTHONPATH", "")
    return env
