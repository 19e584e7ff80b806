"""The ctypes declarations match include/vicpull.h: every exported
function with its arity and types, the structs' fields, the enum values."""

from __future__ import annotations

import ctypes
import os
import re
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest

from vicpull import Code, ProgressKind, State, _ffi

from conftest import ROOT

# VICPULL_HEADER checks the binding against another copy (e.g. an installed one).
HEADER = Path(os.environ.get("VICPULL_HEADER", ROOT / "include" / "vicpull.h")).read_text()
CODE = re.sub(
    r"^\s*#[^\n]*", "",  # preprocessor lines
    re.sub(r"//[^\n]*", "", re.sub(r"/\*.*?\*/", "", HEADER, flags=re.S)),
    flags=re.M,
)

BASE: Dict[str, Any] = {
    "vic_result": ctypes.c_uint32,
    "vic_progress_kind": ctypes.c_uint32,
    "vic_log_level": ctypes.c_uint32,
    "vic_pull_state": ctypes.c_uint32,
    "uint32_t": ctypes.c_uint32,
    "uint64_t": ctypes.c_uint64,
    "int32_t": ctypes.c_int32,
    "size_t": ctypes.c_size_t,
}


def ctype(decl: str) -> Any:
    """The ctypes type for a C type such as `const struct vic_pull *`."""
    stars = decl.count("*")
    name = decl.replace("*", " ").replace("const", " ").replace("struct", " ").split()[0]
    if name == "void":
        t: Any = None if stars == 0 else ctypes.c_void_p
        stars = max(0, stars - 1)
    elif name == "char":
        assert stars >= 1, decl
        t, stars = ctypes.c_char_p, stars - 1
    else:
        t = BASE.get(name) or getattr(_ffi, name)
    for _ in range(stars):
        t = ctypes.POINTER(t)
    return t


def split_param(p: str) -> Tuple[str, str]:
    m = re.match(r"(.*?)(\w+)$", p.strip(), re.S)
    assert m, p
    return m.group(1).strip(), m.group(2)


def functions() -> Dict[str, Tuple[Any, List[Any]]]:
    body = CODE.split('extern "C" {', 1)[1].rsplit("}", 1)[0]
    out = {}
    for decl in body.split(";"):
        decl = " ".join(decl.split())
        m = re.match(r"(.+?)\s*\b(vic_\w+)\((.*)\)$", decl)
        if not m:
            assert not decl, decl
            continue
        ret, name, params = m.groups()
        args = ([] if params in ("", "void")
                else [ctype(split_param(p)[0]) for p in params.split(",")])
        out[name] = (ctype(ret), args)
    return out


def test_header_has_the_functions_we_know() -> None:
    fns = functions()
    assert len(fns) >= 10
    assert sorted(fns) == sorted(_ffi.SIGNATURES)


@pytest.mark.parametrize("name", sorted(functions()))
def test_function_declared_like_the_header(name: str) -> None:
    ret, args = functions()[name]
    fn = getattr(_ffi.lib(), name)
    assert fn.restype is ret
    assert len(fn.argtypes) == len(args), f"{name}: arity"
    for i, (got, want) in enumerate(zip(fn.argtypes, args)):
        assert got is want, f"{name} argument {i}: {got} vs header {want}"


def structs() -> Dict[str, List[Tuple[str, Any]]]:
    out = {}
    for m in re.finditer(r"typedef struct (\w+) \{(.*?)\} \1;", CODE, re.S):
        fields = []
        for member in m.group(2).split(";"):
            member = " ".join(member.split())
            if member:
                t, n = split_param(member)
                fields.append((n, ctype(t)))
        out[m.group(1)] = fields
    return out


@pytest.mark.parametrize("name", sorted(structs()))
def test_struct_matches_header(name: str) -> None:
    want = structs()[name]
    got = getattr(_ffi, name)._fields_
    assert [n for n, _ in got] == [n for n, _ in want]
    for (n, g), (_, w) in zip(got, want):
        assert g is w, f"{name}.{n}: {g} vs {w}"


def callback_param(decl: str) -> Any:
    """A callback's non-const `char *` is a buffer the host writes into;
    the binding declares it POINTER(c_char), since a c_char_p argument
    reaches Python as a bytes copy."""
    if "const" not in decl and decl.replace("*", " ").split() == ["char"]:
        return ctypes.POINTER(ctypes.c_char)
    return ctype(decl)


def callback_typedefs() -> Dict[str, Tuple[Any, List[Any]]]:
    out = {}
    for m in re.finditer(r"typedef (\w+) \(\*(\w+)\)\((.*?)\);", CODE, re.S):
        ret, name, params = m.groups()
        out[name] = (ctype(ret), [callback_param(split_param(p)[0]) for p in params.split(",")])
    return out


def test_callback_types_match_header() -> None:
    cbs = callback_typedefs()
    assert sorted(cbs) == [
        "vic_commit_callback", "vic_done_callback", "vic_finalizer", "vic_log_callback",
        "vic_progress_callback",
    ]
    for name, (ret, args) in cbs.items():
        t = getattr(_ffi, name)
        assert t._restype_ is ret, name
        assert list(t._argtypes_) == args, name


def enum_values(name: str) -> Dict[str, int]:
    body = re.search(r"enum %s\b[^{]*\{(.*?)\};" % name, CODE, re.S)
    assert body, name
    pairs = re.findall(r"(\w+) = (\d+)", body.group(1))
    return {k: int(v) for k, v in pairs}


@pytest.mark.parametrize(
    "enum,prefix,py",
    [
        ("vic_result", "VIC_RESULT_", Code),
        ("vic_progress_kind", "VIC_PROGRESS_KIND_", ProgressKind),
        ("vic_pull_state", "VIC_PULL_STATE_", State),
    ],
)
def test_enum_values_match_header(enum: str, prefix: str, py: Any) -> None:
    want = {k[len(prefix):]: v for k, v in enum_values(enum).items()}
    assert {m.name: m.value for m in py} == want


def test_code_names_match_library() -> None:
    lib = _ffi.lib()
    for c in Code:
        assert lib.vic_result_name(c.value).decode() == c.name
    assert lib.vic_result_name(999).decode() == "UNKNOWN"


def test_version_matches_header() -> None:
    import vicpull

    m = re.search(r'#define VICPULL_VERSION "([^"]+)"', HEADER)
    assert m and vicpull.library_version() == m.group(1) == vicpull.__version__
