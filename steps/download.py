"""Copy a Hugging Face dataset repo, pinned to a revision, through fsspec: the `raw/...` steps.

Files come from `hf://datasets/{id}@{revision}/...` (huggingface_hub's HfFileSystem) unless
`source_url` names another fsspec root (a test's `memory://` or `file://` directory, or a
non-hub source such as Common Crawl's HTTPS endpoint or a public bucket). A revision is
required: the step refuses to copy an unpinned `main` or an `UNPINNED-...` placeholder (resolve
those with `soda lock-datasets`, steps.dataset_lock).

Sources that cannot be listed (an HTTPS server) publish a paths listing instead: with
`paths_listing` set (a file relative to the source root, one path per line, gzip'd or plain, as
Common Crawl publishes them) the step reads it and copies the listed paths that match the
include globs, instead of listing the source.

With `$SODA_DATA_MIRROR` set the step reads through the mirror root (steps.mirror); the mirror is
not part of the step's hash. `summary.json` records the original `source`, the `mirror` used (or
null) and `read_from`, the root actually read.

Resumable: a file already at the destination with the source's size is skipped; a file being
copied goes to `{name}.partial` first and is renamed when complete, so a crash never leaves a
truncated file under its real name. Files are copied in parallel: batches of files are Ray tasks
(`steps.sharding.run_shards`; a thread pool when Ray is not initialised), and a transient network
or IO error is retried with backoff inside the task (a size mismatch or a missing file is not).
`summary.json` records files, bytes, and how many were skipped.

Include patterns are globs on repo-relative paths: `*` and `?` stay within one path component,
`**` spans directories, and `{a,b}` / `{000..007}` expand as in a shell.
"""

from __future__ import annotations

import gzip
import logging
import posixpath
import re
import zlib
from dataclasses import dataclass
from typing import Callable, Iterable, Optional

from pipeline import strict_json
from steps.dataset_lock import LOCK_ENV, PLACEHOLDER_PREFIX, lock_path
from steps.mirror import MIRROR_ENV, data_mirror, is_local, mirrored_url
from steps.sharding import PERMANENT_ERRORS, run_shards, with_retries
from pipeline.progress import report_progress

logger = logging.getLogger(__name__)

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
    paths_listing: Optional[str] = None  # a file under the source root listing the paths to copy


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
            f"download {where}: revision is the placeholder {rev!r} (no commit of this dataset is known). "
            f"On a machine with Hub access run `soda lock-datasets` to resolve it into the dataset lock "
            f"{lock_path()} (${LOCK_ENV} names another lock), then declare the experiment again; "
            "or pass revision=<commit sha> to the preset."
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
    try:
        found = fs.find(root_path, detail=True)
    except FileNotFoundError:
        return []
    files = []
    for path, info in found.items():
        if info.get("type") == "directory":
            continue
        rel = path[len(root_path) :].lstrip("/")
        if rel and matches(rel):
            files.append((rel, int(info.get("size") or 0)))
    return sorted(files)


def read_paths_listing(fs, path: str, where: str) -> list[str]:
    """The non-empty lines of a paths listing (gzip'd or plain), stripped; ValueError naming
    `where` for an unreadable listing or a path that leaves the source root."""
    try:
        with fs.open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"paths listing {where} does not exist; check DownloadConfig.paths_listing "
                                "against the source's published listing") from exc
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (EOFError, OSError, zlib.error) as exc:
            raise ValueError(f"paths listing {where}: truncated or corrupt gzip ({exc}); delete it and rerun") from exc
    try:
        lines = data.decode("utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise ValueError(f"paths listing {where}: not UTF-8 text ({exc})") from exc
    entries = [line.strip().lstrip("/") for line in lines if line.strip() and not line.startswith("#")]
    bad = [e for e in entries if "://" in e or ".." in e.split("/")]
    if bad:
        raise ValueError(f"paths listing {where}: entries must be paths under the source root, got {bad[:3]}")
    return entries


def list_listed_files(fs, root_path: str, listing: str, include, exclude=(), where: Optional[str] = None
                      ) -> tuple[list[tuple[str, Optional[int]]], int]:
    """((path, size or None), ...) of the listing's entries that match, sorted, and the number of
    entries listed. Sizes come from the source (an HTTP HEAD); a listed file missing at the source
    is a FileNotFoundError naming it."""
    listing_path = posixpath.join(root_path, listing)
    entries = read_paths_listing(fs, listing_path, where or listing_path)
    matches = make_matcher(include, exclude)
    files = []
    for rel in sorted(set(e for e in entries if matches(e))):
        try:
            size = fs.size(posixpath.join(root_path, rel))
        except FileNotFoundError as exc:
            raise FileNotFoundError(f"{where or listing_path} lists {rel}, which is not at "
                                    f"{posixpath.join(root_path, rel)}") from exc
        files.append((rel, None if size is None else int(size)))
    return files, len(entries)


def read_root(config: DownloadConfig, mirror: Optional[str]) -> str:
    """The root the step reads: the source root, or its copy in `mirror` (local sources are read
    in place)."""
    root = source_root(config)
    return root if mirror is None or is_local(root) else mirrored_url(root, mirror)


def _missing_in_mirror(root: str, read_from: str, mirror: str, what: str) -> str:
    return (f"download {root}: the data mirror ${MIRROR_ENV}={mirror} has {what} under {read_from} (the "
            f"mirror's copy of {root}). Fill the mirror: copy the source's files there in the layout of "
            f"steps/mirror.py; or, for an offline test mirror, run `soda make-mirror {mirror}` and set "
            f"{LOCK_ENV}={mirror.rstrip('/')}/datasets.lock so the presets ask for its revisions.")


def download_dataset(config: DownloadConfig, source_fs=None) -> dict:
    """Step fn: copy the matching files to `config.output_path`; return the summary.

    `source_fs` injects an fsspec filesystem for the source (tests pass a memory filesystem);
    by default it comes from `source_root(config)` (HfFileSystem for hf://) or, with
    `$SODA_DATA_MIRROR` set, from the mirror's copy of it.
    """
    import fsspec

    check_revision(config)
    root = source_root(config)
    mirror = data_mirror()
    read_from = read_root(config, mirror)
    used_mirror = mirror if read_from != root else None
    if source_fs is None:
        options = {} if used_mirror else (config.source_storage_options or {})
        source_fs, root_path = fsspec.core.url_to_fs(read_from, **options)
    else:
        root_path = source_fs._strip_protocol(read_from)
    listed = None
    if config.paths_listing:
        listing_url = f"{read_from}/{config.paths_listing}"
        try:
            files, listed = list_listed_files(source_fs, root_path, config.paths_listing, config.include,
                                              config.exclude, where=listing_url)
        except FileNotFoundError as exc:
            if used_mirror:
                raise FileNotFoundError(_missing_in_mirror(root, read_from, used_mirror,
                                                           f"no paths listing or listed file ({exc})")) from exc
            raise
    else:
        files = list_source_files(source_fs, root_path, config.include, config.exclude)
    if not files and used_mirror:
        raise FileNotFoundError(_missing_in_mirror(
            root, read_from, used_mirror,
            f"no file matching include={list(config.include)} exclude={list(config.exclude)}"))
    if not files:
        raise FileNotFoundError(
            f"download {root}: no file matches include={list(config.include)} exclude={list(config.exclude)}"
            + (f" among the {listed} paths of {config.paths_listing}" if listed is not None else "")
            + "; check the globs against the repo's file list"
        )
    out_fs, out_root = fsspec.core.url_to_fs(config.output_path)
    out_fs.makedirs(out_root, exist_ok=True)

    total_bytes = sum(size or 0 for _, size in files)
    # one listing of what is there already, not a request per file; a file under its real name is
    # complete (copies go through .partial), so an unknown source size (an HTTP server without
    # Content-Length) still allows the skip. The tasks check again before each copy.
    try:
        present = {path.rstrip("/"): info for path, info in out_fs.find(out_root, detail=True).items()}
    except FileNotFoundError:
        present = {}
    todo = []
    for rel, size in files:
        info = present.get(posixpath.join(out_root, rel).rstrip("/"))
        if info is None or info.get("type") == "directory" or (size is not None and info.get("size") != size):
            todo.append((rel, size))
    skipped = len(files) - len(todo)
    batches = file_batches(todo)
    done = {"files": 0, "bytes": 0}
    where = config.hf_dataset_id or root

    def progress(_i: int, result: tuple[int, int]) -> None:
        done["files"] += result[0]
        done["bytes"] += result[1]
        logger.info("download %s: %d/%d files, %.1f/%.1f MB copied (%d already complete)", where,
                    done["files"], len(todo), done["bytes"] / 1e6,
                    sum(size or 0 for _, size in todo) / 1e6, skipped)
        report_progress(done["files"], len(todo), "files copied", MB=round(done["bytes"] / 1e6, 1))

    run_shards(_copy_batch, [(source_fs, root_path, out_fs, out_root, batch) for batch in batches],
               desc=f"download {where}", max_retries=RAY_TASK_RETRIES, local_threads=LOCAL_THREADS,
               on_result=progress, job_names=[_batch_name(batch) for batch in batches])
    copied, copied_bytes = done["files"], done["bytes"]
    skipped = len(files) - copied  # including any a task found complete (a listing that missed it)

    summary = {
        "source": root,
        "mirror": used_mirror,
        "read_from": read_from,
        "paths_listing": config.paths_listing,
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
        f.write(strict_json.dumps(summary, indent=1, sort_keys=True))
    logger.info(
        "download: %d files (%.1f MB) from %s -> %s (%d already complete)",
        len(files), total_bytes / 1e6, read_from, config.output_path, skipped,
    )
    return summary


class SizeMismatchError(IOError):
    """The bytes read differ from the source listing's size: not retried (the source changed, or
    the listing is wrong)."""


# Fan-out: files go to Ray tasks (a thread pool when Ray is not initialised) in batches of at
# most BATCH_FILES files or BATCH_BYTES bytes, so small files do not cost one task each.
BATCH_FILES = 16
BATCH_BYTES = 2 << 30
LOCAL_THREADS = 8
RAY_TASK_RETRIES = 3  # a task whose worker dies is rerun (files it finished are then skipped)
COPY_ATTEMPTS = 5  # a file's copy is tried this often on a transient (network/IO) error ...
RETRY_DELAY_S = 1.0  # ... waiting 1, 2, 4, 8 s between tries
_PERMANENT = (SizeMismatchError, *PERMANENT_ERRORS)


def file_batches(files: list[tuple[str, Optional[int]]], max_files: int = BATCH_FILES,
                 max_bytes: int = BATCH_BYTES) -> list[list[tuple[str, Optional[int]]]]:
    """Consecutive runs of `files` with at most `max_files` files and (unless one file is larger)
    `max_bytes` bytes each."""
    batches: list[list[tuple[str, Optional[int]]]] = []
    current, current_bytes = [], 0
    for rel, size in files:
        if current and (len(current) >= max_files or current_bytes + (size or 0) > max_bytes):
            batches.append(current)
            current, current_bytes = [], 0
        current.append((rel, size))
        current_bytes += size or 0
    if current:
        batches.append(current)
    return batches


def _batch_name(batch) -> str:
    return batch[0][0] if len(batch) == 1 else f"{batch[0][0]} .. {batch[-1][0]} ({len(batch)} files)"


def _copy_batch(src_fs, root_path: str, dst_fs, out_root: str, batch) -> tuple[int, int]:
    """One task: copy each (rel, size) of `batch` (skipping those a retried task already
    finished); returns (files copied, bytes written)."""
    files = written = 0
    for rel, size in batch:
        dest = posixpath.join(out_root, rel)
        if dst_fs.exists(dest) and (size is None or dst_fs.size(dest) == size):
            continue
        written += copy_with_retries(src_fs, posixpath.join(root_path, rel), dst_fs, dest, size)
        files += 1
    return files, written


def copy_with_retries(src_fs, src: str, dst_fs, dest: str, size: Optional[int],
                      attempts: Optional[int] = None, delay: Optional[float] = None) -> int:
    """`_copy_file`, tried again with exponential backoff on a transient OSError
    (`steps.sharding.with_retries`); a size mismatch, a missing file or a permission error fails at
    once. The last error names the file."""
    return with_retries(lambda: _copy_file(src_fs, src, dst_fs, dest, size), f"download {src} -> {dest}",
                        attempts=COPY_ATTEMPTS if attempts is None else attempts,
                        delay_s=RETRY_DELAY_S if delay is None else delay, permanent=_PERMANENT,
                        resume="rerun the step to resume (finished files are kept)")


def _copy_file(src_fs, src: str, dst_fs, dest: str, size: Optional[int], chunk: int = 8 << 20) -> int:
    """Copy through `{dest}.partial`, renamed when complete; returns the bytes written. A known
    `size` must match what was read."""
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
    if size is not None and written != size:
        dst_fs.rm(partial)
        raise SizeMismatchError(f"download {src}: got {written} bytes, the source listing says {size}; "
                                "rerun to retry")
    dst_fs.mv(partial, dest)
    return written
