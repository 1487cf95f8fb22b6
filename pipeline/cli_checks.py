"""Checks the `soda` command-line tools make on their arguments before any model loads.

Each function returns a one-line message naming the file or flag and what is wrong, or None; the
CLI prints it as `soda COMMAND: message` and exits with its own code. Nothing here prints or exits.
Paths may be local or fsspec URLs (gs://...); overwrite checks resolve symlinks and hard links of
local paths and compare URLs as written.
"""

from __future__ import annotations

import math
import os
from typing import Iterable, Optional


def _label(path: str, flag: str) -> str:
    return f"{flag} {path}" if flag else str(path)


def input_file_problem(path: str, flag: str = "") -> Optional[str]:
    """Why `path` cannot be read as an input file (missing, a directory, empty, unreadable), or None."""
    import fsspec

    label = _label(path, flag)
    try:
        fs, p = fsspec.core.url_to_fs(path)
        if not fs.exists(p):
            return f"{label}: no such file"
        if fs.isdir(p):
            return f"{label}: is a directory, expected a file"
        if fs.size(p) == 0:
            return f"{label}: file is empty (0 bytes)"
        with fs.open(p, "rb") as f:
            f.read(1)
    except (OSError, ValueError) as exc:
        return f"{label}: cannot be read ({type(exc).__name__}: {exc})"
    return None


def input_dir_problem(path: str, flag: str = "") -> Optional[str]:
    """Why `path` is not an existing directory (or file, for inputs that may be either), or None."""
    import fsspec

    try:
        fs, p = fsspec.core.url_to_fs(path)
        if not fs.exists(p):
            return f"{_label(path, flag)}: no such file or directory"
    except (OSError, ValueError) as exc:
        return f"{_label(path, flag)}: cannot be read ({type(exc).__name__}: {exc})"
    return None


def read_text_file(path: str, flag: str = "") -> tuple[Optional[str], Optional[str]]:
    """(text, None) for a readable UTF-8 text file, else (None, why not)."""
    import fsspec

    problem = input_file_problem(path, flag)
    if problem:
        return None, problem
    with fsspec.open(path, "rb") as f:
        data = f.read()
    try:
        return data.decode("utf-8"), None
    except UnicodeDecodeError as exc:
        return None, f"{_label(path, flag)}: not UTF-8 text (byte {exc.start} is 0x{data[exc.start]:02x}; a binary file?)"


def output_file_problem(path: str, flag: str = "--out") -> Optional[str]:
    """Why a local output file cannot be written at `path` (a directory there, no parent directory)."""
    if "://" in str(path):
        return None
    if os.path.isdir(path):
        return f"{_label(path, flag)}: is a directory, expected a file name"
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        return f"{_label(path, flag)}: the directory {parent} does not exist"
    return None


def same_file(a: str, b: str) -> bool:
    """True when two paths name the same file: equal after resolving symlinks, or hard links to one
    file. URLs are compared as written (less a trailing slash)."""
    a, b = os.fspath(a), os.fspath(b)
    if "://" in a or "://" in b:
        return a.rstrip("/") == b.rstrip("/")
    try:
        if os.path.exists(a) and os.path.exists(b) and os.path.samefile(a, b):
            return True
    except OSError:
        pass
    return os.path.realpath(a) == os.path.realpath(b)


def overwrite_problem(outputs: Iterable[tuple[str, str]], inputs: Iterable[tuple[str, str]]) -> Optional[str]:
    """An error when an output would overwrite an input. Both are (flag or description, path)."""
    inputs = [(flag, path) for flag, path in inputs if path]
    for out_flag, out in outputs:
        for in_flag, path in inputs:
            if same_file(out, path):
                return (f"{out_flag} {out} would overwrite the input {_label(path, in_flag)}; "
                        "write the output somewhere else")
    return None


def number_problem(flag: str, value, *, minimum=None, above=None, maximum=None) -> Optional[str]:
    """Why a numeric flag's value is out of range (NaN and infinities never are in range), or None.
    `minimum`/`maximum` are inclusive bounds, `above` an exclusive lower bound; None passes."""
    if value is None:
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return f"{flag} must be a finite number, got {value}"
    if minimum is not None and value < minimum:
        return f"{flag} must be >= {minimum}, got {value}"
    if above is not None and value <= above:
        return f"{flag} must be > {above}, got {value}"
    if maximum is not None and value > maximum:
        return f"{flag} must be <= {maximum}, got {value}"
    return None


def first_problem(*problems: Optional[str]) -> Optional[str]:
    return next((p for p in problems if p), None)
