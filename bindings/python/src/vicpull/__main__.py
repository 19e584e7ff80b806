"""``python -m vicpull pull REF --store DIR [--plain-http] [--platform P]
[--json]``: pull an image with a progress display on stderr.

On a terminal the display redraws one line per layer, as ``docker pull``
does; otherwise it prints one line per step (Downloading every 10%).
Ctrl-C cancels the pull and exits with status 130.
"""

from __future__ import annotations

import argparse
import sys
from typing import Dict, List, Optional, TextIO

from . import LibraryNotFoundError, Progress, ProgressKind, VicpullError, library_path, pull


def _short(digest: str) -> str:
    return digest.split(":", 1)[-1][:12]


def _bar(current: int, total: int, width: int = 30) -> str:
    if total <= 0:
        return ""
    done = min(width, current * width // total)
    head = ">" if done < width else ""
    return "[" + "=" * done + head + " " * (width - done - len(head)) + f"] {current}/{total}"


class LineDisplay:
    """One line per step; Downloading only when it moved 10 points."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.shown: Dict[str, int] = {}

    def __call__(self, p: Progress) -> None:
        if p.layer is None:
            print(p.message, file=self.out, flush=True)
            return
        if p.kind == ProgressKind.DOWNLOADING and p.total > 0:
            pct = p.current * 100 // p.total
            last = self.shown.get(p.layer)
            if last is not None and pct < last + 10 and pct != 100:
                return
            self.shown[p.layer] = pct
            print(f"{_short(p.layer)}: {p.message} {pct:3d}%", file=self.out, flush=True)
            return
        print(f"{_short(p.layer)}: {p.message}", file=self.out, flush=True)


class TerminalDisplay:
    """Redraws one line per layer in place (ANSI cursor movement)."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.order: List[str] = []
        self.lines: Dict[str, str] = {}
        self.drawn = 0

    def __call__(self, p: Progress) -> None:
        if p.layer is None:
            self._redraw(extra=p.message)
            return
        if p.layer not in self.lines:
            self.order.append(p.layer)
        text = p.message
        if p.kind == ProgressKind.DOWNLOADING:
            text += " " + _bar(p.current, p.total)
        self.lines[p.layer] = f"{_short(p.layer)}: {text}"
        self._redraw()

    def _redraw(self, extra: Optional[str] = None) -> None:
        w = self.out.write
        if self.drawn:
            w(f"\x1b[{self.drawn}F")
        for layer in self.order:
            w("\x1b[2K" + self.lines[layer] + "\n")
        self.drawn = len(self.order)
        if extra is not None:
            # Image-level lines scroll above the layer block.
            w("\x1b[2K" + extra + "\n")
            self.order, self.lines, self.drawn = [], {}, 0
        self.out.flush()


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m vicpull", description=__doc__.split("\n")[0])
    ap.add_argument("--library", action="store_true", help="print the loaded libvicpull path")
    sub = ap.add_subparsers(dest="command")
    p = sub.add_parser("pull", help="pull an image into an OCI layout")
    p.add_argument("reference")
    p.add_argument("--store", required=True, help="OCI layout directory")
    p.add_argument("--plain-http", action="store_true", help="reach the registry over HTTP")
    p.add_argument("--platform", help="os/arch[/variant] (default: this host)")
    p.add_argument("--json", action="store_true", help="print the result JSON on stdout")
    args = ap.parse_args(argv)
    if args.command != "pull" and not args.library:
        ap.print_help(sys.stderr)
        return 2
    try:
        if args.library:
            print(library_path())
            return 0
        return _pull(args)
    except LibraryNotFoundError as e:
        print(f"vicpull: {e}", file=sys.stderr)
        return 1


def _pull(args: argparse.Namespace) -> int:
    err = sys.stderr
    display = TerminalDisplay(err) if err.isatty() else LineDisplay(err)
    try:
        result = pull(
            args.reference,
            args.store,
            on_progress=display,
            plain_http=args.plain_http,
            platform=args.platform,
        )
    except KeyboardInterrupt:
        print("\ninterrupted: pull cancelled", file=err)
        return 130
    except VicpullError as e:
        print(f"vicpull: {e}", file=err)
        return 1
    if args.json:
        print(result.json)
    else:
        print(f"{result.reference}\n  manifest {result.manifest_digest}\n"
              f"  {len(result.layers)} layers, {result.bytes_downloaded} bytes downloaded,"
              f" into {result.store}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
