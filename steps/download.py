"""Copy a Hugging Face dataset repo, pinned to a revision, through fsspec: the `raw/...` steps.

Files come from `hf://datasets/{id}@{revision}/...` (huggingface_hub's HfFileSystem) unless
`source_url` names another fsspec root (a test's `memory://` or `file://` directory, or a
non-hub source such as Common Crawl's bucket). A revision is required: the step refuses to copy
an unpinned `main` silently.

Resumable: a file already at the destination with the source's size is skipped; a file being
copied goes to `{name}.partial` first and is renamed when complete, so a crash never leaves a
truncated file under its real name. `summary.json` records files, bytes, and how many were
skipped.

Include patterns are globs on repo-relative paths: `*` and `?` stay within one path component,
`**` spans directories, and `{a,b}` / `{000..007}` expand as in a shell.
"""

from __future__ import annotations

import json
import logging
import posixpath
import re
from dataclasses import dataclass
from typing import Callable, Iterable, Optional

logger = logging.getLogger(__name__)

PLACEHOLDER_PREFIX = "UNPINNED"  # presets without a known commit use "UNPINNED-..." constants
_SHA = re.compile(r"^[0-9a-f]{40}$")


@dataclass(frozen=True)
class DownloadConfig:
    hf_dataset_id: Optional[str]  # e.g. "espnet/yodas2"; None when source_url names a non-hub source
    revision: str  # a commit sha (or immutable tag); wrap in versioned(...) in experiments
    output_path: str
    include: tuple[str, ...] = ("**",)
    exclude: tuple[str, ...] = ()
    source_url: Optional[str] = None  # fsspec root overriding hf://datasets/{id}@{revision}
    source_storage_options: Optional[dict] = None  # passed to fsspec for source_url (e.g. {"anon": True})


def check_revision(config: DownloadConfig) -> None:
    """Raise ValueError unless the config pins a revision."""
    rev = config.revision
    where = config.hf_dataset_id or config.source_url
    if not isinstance(rev, str) or not rev.strip():
        raise ValueError(
            f"download {where}: no revision given. Pin a commit sha (see the repo's 'History' on "
            "huggingface.co) in DownloadConfig.revision; unpinned downloads are refused."
        )
    if rev.startswith(PLACEHOLDER_PREFIX):
        raise ValueError(
            f"download {where}: revision is the placeholder {rev!r}. Look up the dataset's current "
            "commit sha on huggingface.co and set it in steps/download_presets.py (or pass revision=...)."
        )
    if rev in ("main", "master", "HEAD"):
        raise ValueError(
            f"download {where}: revision {rev!r} is a moving branch. Pin the commit sha it points to, "
            "so reruns copy the same files."
        )
    if config.hf_dataset_id and config.source_url is None and not _SHA.match(rev):
        logger.warning("download %s: revision %r is not a 40-hex commit sha; tags can move", where, rev)


def source_root(config: DownloadConfig) -> str:
    if config.source_url:
        return config.source_url.rstrip("/")
    if not config.hf_dataset_id:
        raise ValueError("DownloadConfig needs hf_dataset_id or source_url")
    revision = config.revision.replace("/", "%2F")  # refs/convert/parquet -> refs%2Fconvert%2Fparquet
    return f"hf://datasets/{config.hf_dataset_id}@{revision}"


def expand_braces(pattern: str) -> list[str]:
    """Shell-style brace expansion: 'en{000..002}' -> en000, en001, en002; 'a{b,c}' -> ab, ac.

    Braces nest: 'en{{000..001},100}' -> en000, en001, en100.
    """
    start = pattern.find("{")
    if start < 0:
        return [pattern]
    depth, parts, last = 0, [], start + 1
    for i in range(start, len(pattern)):
        ch = pattern[i]
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                parts.append(pattern[last:i])
                end = i
                break
        elif ch == "," and depth == 1:
            parts.append(pattern[last:i])
            last = i + 1
    else:
        raise ValueError(f"unbalanced braces in include pattern {pattern!r}")
    head, tail = pattern[:start], pattern[end + 1 :]
    rng = re.fullmatch(r"(\d+)\.\.(\d+)", parts[0]) if len(parts) == 1 else None
    if rng:
        lo, hi, width = int(rng.group(1)), int(rng.group(2)), len(rng.group(1))
        options = [str(i).zfill(width) for i in range(lo, hi + 1)]
    else:
        options = [o for part in parts for o in expand_braces(part)]
    return [p for opt in options for p in expand_braces(head + opt + tail)]


def glob_to_regex(pattern: str) -> re.Pattern:
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("^" + "".join(out) + "$")


def make_matcher(include: Iterable[str], exclude: Iterable[str] = ()) -> Callable[[str], bool]:
    inc = [glob_to_regex(p) for pat in include for p in expand_braces(pat)]
    exc = [glob_to_regex(p) for pat in exclude for p in expand_braces(pat)]
    return lambda rel: any(r.match(rel) for r in inc) and not any(r.match(rel) for r in exc)


def list_source_files(fs, root_path: str, include, exclude=()) -> list[tuple[str, int]]:
    """(repo-relative path, size) of every matching file under root_path, sorted by path."""
    matches = make_matcher(include, exclude)
    found = fs.find(root_path, detail=True)
    files = []
    for path, info in found.items():
        if info.get("type") == "directory":
            continue
        rel = path[len(root_path) :].lstrip("/")
        if rel and matches(rel):
            files.append((rel, int(info.get("size") or 0)))
    return sorted(files)


def download_dataset(config: DownloadConfig, source_fs=None) -> dict:
    """Step fn: copy the matching files to `config.output_path`; return the summary.

    `source_fs` injects an fsspec filesystem for the source (tests pass a memory filesystem);
    by default it comes from `source_root(config)` (HfFileSystem for hf://).
    """
    import fsspec
    from tqdm import tqdm

    check_revision(config)
    root = source_root(config)
    if source_fs is None:
        source_fs, root_path = fsspec.core.url_to_fs(root, **(config.source_storage_options or {}))
    else:
        root_path = source_fs._strip_protocol(root)
    files = list_source_files(source_fs, root_path, config.include, config.exclude)
    if not files:
        raise FileNotFoundError(
            f"download {root}: no file matches include={list(config.include)} exclude={list(config.exclude)}; "
            "check the globs against the repo's file list"
        )
    out_fs, out_root = fsspec.core.url_to_fs(config.output_path)
    out_fs.makedirs(out_root, exist_ok=True)

    copied = skipped = copied_bytes = 0
    total_bytes = sum(size for _, size in files)
    with tqdm(total=total_bytes, unit="B", unit_scale=True, desc=f"download {config.hf_dataset_id or root}") as bar:
        for rel, size in files:
            dest = posixpath.join(out_root, rel)
            if out_fs.exists(dest) and out_fs.size(dest) == size:
                skipped += 1
                bar.update(size)
                continue
            _copy_file(source_fs, posixpath.join(root_path, rel), out_fs, dest, size, bar)
            copied += 1
            copied_bytes += size

    summary = {
        "source": root,
        "hf_dataset_id": config.hf_dataset_id,
        "revision": config.revision,
        "include": list(config.include),
        "exclude": list(config.exclude),
        "files": len(files),
        "bytes": total_bytes,
        "downloaded_files": copied,
        "downloaded_bytes": copied_bytes,
        "skipped": skipped,
    }
    with out_fs.open(posixpath.join(out_root, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1, sort_keys=True)
    logger.info(
        "download: %d files (%.1f MB) from %s -> %s (%d already complete)",
        len(files), total_bytes / 1e6, root, config.output_path, skipped,
    )
    return summary


def _copy_file(src_fs, src: str, dst_fs, dest: str, size: int, bar, chunk: int = 8 << 20) -> None:
    partial = dest + ".partial"
    dst_fs.makedirs(posixpath.dirname(dest), exist_ok=True)
    written = 0
    with src_fs.open(src, "rb") as fin, dst_fs.open(partial, "wb") as fout:
        while True:
            block = fin.read(chunk)
            if not block:
                break
            fout.write(block)
            written += len(block)
            bar.update(len(block))
    if written != size:
        dst_fs.rm(partial)
        raise IOError(f"download {src}: got {written} bytes, the source listing says {size}; rerun to retry")
    dst_fs.mv(partial, dest)
