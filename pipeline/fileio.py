"""Files on local disk or any fsspec URL (gs://, memory://, file://): the project's one I/O module.

One contract for a missing file: `read_bytes`, `read_text` and `read_json` raise FileNotFoundError
naming the URL, unless the caller passes `default=` (returned when the file does not exist). A file
that exists but is not valid JSON is a ValueError naming it, never a default.

Writes are atomic: a reader sees the old file or the whole new one, never a part. On local disk the
bytes go to a hidden sibling (`.{name}.tmp-{random}`, see `temp_path_for`), are synced and renamed
into place; on an object store one PUT is atomic already.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import uuid
from typing import Any, Sequence

from pipeline import strict_json

logger = logging.getLogger(__name__)

MISSING: Any = object()  # read_* without a default: a missing file raises
_GLOB_CHARS = set("*?[")


# ---- URLs ------------------------------------------------------------------------------------------


def url_to_fs(url: str):
    """(filesystem, path inside it) for a local path or fsspec URL."""
    import fsspec.core

    return fsspec.core.url_to_fs(url)


def is_local(url: str) -> bool:
    return "://" not in url or url.startswith("file://")


def local_path(url: str) -> str:
    """The filesystem path of a local `url` (`file://` dropped)."""
    return url[len("file://"):] if url.startswith("file://") else url


def absolute(url: str) -> str:
    """`url` with a local path made absolute (against the current directory, `~` expanded); URLs unchanged.

    Step functions run in Ray workers whose working directory is not the driver's, so every local
    path the executor hands out must be absolute."""
    if not is_local(url):
        return url
    path = os.path.abspath(os.path.expanduser(local_path(url)))
    return f"file://{path}" if url.startswith("file://") else path


def is_relative(url: str) -> bool:
    """A local path that depends on the current directory (`out`, `./out`, `file://out`)."""
    return is_local(url) and not os.path.isabs(os.path.expanduser(local_path(url)))


def join(base: str, *parts: str) -> str:
    """`base` and `parts` joined by single slashes; empty parts are skipped."""
    out = base.rstrip("/")
    for part in parts:
        if part:
            out = f"{out}/{part.strip('/')}"
    return out


def same_kind(url: str, path: str) -> str:
    """A URL of the same kind as `url` (its protocol, if any) for `path` as its filesystem lists it."""
    if "://" not in url:
        return path
    protocol = url.split("://", 1)[0]
    return path if "://" in path else f"{protocol}://{path}"


# ---- reading ---------------------------------------------------------------------------------------


def exists(url: str) -> bool:
    if is_local(url):
        return os.path.lexists(local_path(url))
    fs, path = url_to_fs(url)
    return fs.exists(path)


def read_bytes(url: str, default: Any = MISSING) -> Any:
    """The file's bytes; a missing file raises FileNotFoundError naming it, or gives `default`."""
    try:
        if is_local(url):
            with open(local_path(url), "rb") as f:
                return f.read()
        fs, path = url_to_fs(url)
        # one GET of the whole object: never a size from an earlier listing or one generation's head with
        # another's tail, as a ranged read of a file rewritten meanwhile can give
        return fs.cat_file(path)
    except FileNotFoundError:
        if default is not MISSING:
            return default
        raise FileNotFoundError(f"{url} does not exist") from None


def read_text(url: str, default: Any = MISSING) -> Any:
    """The file as UTF-8 text (see `read_bytes` for a missing file)."""
    data = read_bytes(url, default=MISSING if default is MISSING else None)
    return default if data is None else data.decode("utf-8")


def read_json(url: str, default: Any = MISSING) -> Any:
    """The file's JSON (see `read_bytes` for a missing file); ValueError naming it when it is not JSON."""
    data = read_bytes(url, default=MISSING if default is MISSING else None)
    if data is None:
        return default
    try:
        return json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{url} is not valid JSON ({e}); delete it or rerun the step that writes it") from e


def list_input_files(inputs: str | Sequence[str], suffixes: Sequence[str], what: str = "input") -> list[str]:
    """Expand files, directories (searched recursively) and globs into a sorted, de-duplicated
    list of files ending in one of `suffixes` (hidden and `_` files skipped). Raises
    FileNotFoundError when nothing matches."""
    specs = [inputs] if isinstance(inputs, str) else list(inputs)
    found: set[str] = set()
    for spec in specs:
        fs, path = url_to_fs(spec)
        if any(c in spec for c in _GLOB_CHARS):
            candidates = fs.glob(path)
        elif fs.isdir(path):
            candidates = fs.find(path)
        elif fs.exists(path):
            candidates = [path]
        else:
            raise FileNotFoundError(f"{what} path {spec!r} does not exist")
        for cand in candidates:
            name = os.path.basename(cand)
            if name.startswith(".") or name.startswith("_"):
                continue
            if any(name.endswith(s) for s in suffixes) and not fs.isdir(cand):
                found.add(same_kind(spec, cand))
    if not found:
        raise FileNotFoundError(f"no {what} files ending in {', '.join(suffixes)} under {specs!r}; "
                                "pass a file, a directory or a glob")
    return sorted(found)


def local_copy(url: str) -> str:
    """A local directory holding the files of directory `url` (returned as is when already local),
    for libraries that only read real files (transformers' `from_pretrained`, tokenizers).

    The copy goes to a per-process cache keyed by the URL, so a process copies each directory
    once; it is made under a temporary name and renamed, so a half-copied directory is never used.
    """
    if is_local(url):
        return local_path(url)
    root = os.path.join(tempfile.gettempdir(), f"local-copies-{os.getpid()}")
    target = os.path.join(root, hashlib.sha256(url.rstrip("/").encode()).hexdigest()[:16])
    if os.path.isdir(target):
        return target
    fs, path = url_to_fs(url)
    if not fs.isdir(path):
        raise FileNotFoundError(f"{url} is not a directory (or does not exist); expected a directory to copy")
    os.makedirs(root, exist_ok=True)
    partial = tempfile.mkdtemp(prefix=".partial-", dir=root)
    fs.get(path.rstrip("/") + "/", partial + "/", recursive=True)
    os.replace(partial, target)
    logger.info("copied %s -> %s", url, target)
    return target


# ---- writing ---------------------------------------------------------------------------------------


def temp_path_for(path: str) -> str:
    """A hidden sibling of `path` to write before renaming: `.{name}.tmp-{random}`.

    Hidden, so input listings skip it; `remove_stale_temps` finds those a crash left behind."""
    parent, name = os.path.split(path)
    hidden = f".{name}.tmp-{uuid.uuid4().hex}"
    return os.path.join(parent, hidden) if parent else hidden


def remove_stale_temps(url_dir: str, name_prefix: str) -> None:
    """Delete the temp files (see `temp_path_for`) of outputs whose names start with `name_prefix`."""
    fs, path = url_to_fs(url_dir)
    for stale in fs.glob(f"{path.rstrip('/')}/.{name_prefix}*.tmp-*"):
        fs.rm(stale)


def atomic_write_bytes(url: str, data: bytes) -> None:
    """Write `data` to `url` so that readers see either the old file or the whole new one."""
    if is_local(url):
        path = local_path(url)
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        tmp = temp_path_for(path)
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        return
    fs, path = url_to_fs(url)
    fs.pipe_file(path, data)  # one object PUT: atomic on object stores


def atomic_write_text(url: str, text: str) -> None:
    atomic_write_bytes(url, text.encode("utf-8"))


def atomic_write_json(url: str, obj: Any) -> None:
    """Write `obj` as strict JSON: a NaN or infinity as null, counted in `non_finite` (`pipeline.strict_json`)."""
    atomic_write_bytes(url, (strict_json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def move(src: str, dst: str) -> None:
    """Give a file a new name, keeping its bytes: a rename on local disk, copy then delete on object stores."""
    if is_local(src):
        os.replace(local_path(src), local_path(dst))
        return
    fs, path = url_to_fs(src)
    fs.mv(path, url_to_fs(dst)[1])
