"""Compare pulls of one image made by different clients.

usage: compare.py [--digest D] DIR CLIENT...

For each CLIENT, DIR/CLIENT.json holds its result JSON and DIR/CLIENT/ its
store. The result JSON must be identical apart from "store" (which must
name the client's own store), with manifest_digest D when given; the
stores must hold the same files with the same bytes: everything under
blobs/, index.json and oci-layout.
Prints one line per check and "N passed, N failed".
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from typing import Dict, List


def store_files(store: str) -> Dict[str, str]:
    """relative path -> sha256 of its bytes, for the files compared."""
    out = {}
    for name in ("index.json", "oci-layout"):
        with open(os.path.join(store, name), "rb") as f:
            out[name] = hashlib.sha256(f.read()).hexdigest()
    for dirpath, _, files in os.walk(os.path.join(store, "blobs")):
        for f in files:
            path = os.path.join(dirpath, f)
            with open(path, "rb") as fh:
                out[os.path.relpath(path, store)] = hashlib.sha256(fh.read()).hexdigest()
    return out


def main(argv: List[str]) -> int:
    digest = None
    if argv[:1] == ["--digest"]:
        digest, argv = argv[1], argv[2:]
    base, clients = argv[0], argv[1:]
    passed = failed = 0

    def check(ok: bool, what: str) -> None:
        nonlocal passed, failed
        print(("ok   " if ok else "FAIL ") + what)
        if ok:
            passed += 1
        else:
            failed += 1

    results, stores = {}, {}
    for c in clients:
        store = os.path.join(base, c)
        with open(os.path.join(base, c + ".json")) as f:
            r = json.load(f)
        check(os.path.realpath(r.pop("store")) == os.path.realpath(store),
              f"{c}: result names its own store")
        results[c], stores[c] = r, store_files(store)

    ref = clients[0]
    if digest is not None:
        got = results[ref]["manifest_digest"]
        check(got == digest, f"{ref}: manifest digest {got} is the one testkit pushed")
    check(len(results[ref]["layers"]) > 0 and len(stores[ref]) > 3,
          f"{ref}: pulled {len(results[ref]['layers'])} layers, {len(stores[ref])} files")
    for c in clients[1:]:
        same = results[c] == results[ref]
        check(same, f"{c}: result JSON equals {ref}'s (store aside)")
        if not same:
            for k in sorted(set(results[c]) | set(results[ref])):
                if results[c].get(k) != results[ref].get(k):
                    print(f"     {k}: {c}={results[c].get(k)!r} {ref}={results[ref].get(k)!r}")
        same = stores[c] == stores[ref]
        check(same, f"{c}: store files equal {ref}'s ({len(stores[c])} files)")
        if not same:
            for k in sorted(set(stores[c]) ^ set(stores[ref])):
                print(f"     only in {c if k in stores[c] else ref}'s store: {k}")
            for k in sorted(set(stores[c]) & set(stores[ref])):
                if stores[c][k] != stores[ref][k]:
                    print(f"     differs: {k}")
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
