"""The dataset lock: the Hub commit each dataset repo is downloaded at, and `soda lock-datasets`.

A preset's revision is, in this order: the lock's entry for its repo, else the commit pinned in
the code (`steps/download_presets.py`, `eval/datasets.py`, `steps/s2st/prepare.py`), else a
placeholder `UNPINNED-...` that the download step refuses. Revisions are `versioned` values, so a
lock entry that differs from the code's pin moves that download and everything after it.

The lock file is `$SODA_DATASETS_LOCK` when set (a local path or fsspec URL), else
`experiments/datasets.lock` in this repository. A missing file is an empty lock. Format (JSON,
sorted keys):

    {
     "datasets": {
      "speed/sBLIMP": {
       "repo": "speed/sBLIMP",              the Hub dataset repo (the key repeats it)
       "revision": "<40 hex>",              the commit every download of the repo uses
       "resolved_from": "main",             the ref that was resolved: a branch ("main",
                                            "refs/convert/parquet"), a pinned commit that was
                                            verified, or "fixture" (soda make-mirror's fakes)
       "resolved_at": "2026-...+00:00"      when the Hub answered; null if no Hub lookup was made
      }
     },
     "format": 1
    }

`soda lock-datasets [--lock PATH] [--update] [--only REPO ...]` (needs Hub access) resolves every
repo the presets download with `huggingface_hub.HfApi().dataset_info(repo, revision=ref).sha`:
the ref is the repo's current lock entry (verified), else its pinned commit (verified), else its
branch (placeholders: `main`, or the parquet-conversion branch for parquet presets). `--update`
resolves every repo's branch again (moving pinned ones to the current head). One failing repo
fails the command, listing every failure, and nothing is written. To adopt a new pin from the
code, delete the repo's entry from the lock and rerun.

Reading the lock is cached on the file's (path, mtime, size), so declaring experiments stays fast.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Iterable, Optional, Sequence

logger = logging.getLogger(__name__)

LOCK_ENV = "SODA_DATASETS_LOCK"
LOCK_FORMAT = 1
PLACEHOLDER_PREFIX = "UNPINNED"  # presets without a known commit use "UNPINNED-..." constants
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_LOCK = os.path.join(REPO_ROOT, "experiments", "datasets.lock")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


class LockError(RuntimeError):
    """`soda lock-datasets` could not resolve one or more repos (the message lists each)."""


@dataclass(frozen=True)
class HubDataset:
    """A Hub dataset repo a preset downloads, with the code's revision for it.

    pin: a 40-hex commit, or an `UNPINNED-...` placeholder when none is known.
    branch: the ref a placeholder (or `--update`) resolves: "main", or "refs/convert/parquet"
      for presets that read the Hub's parquet conversion.
    """

    repo: str
    pin: str
    branch: str = "main"

    @property
    def pinned(self) -> bool:
        return is_commit(self.pin)


def is_commit(revision: object) -> bool:
    return isinstance(revision, str) and bool(_COMMIT.match(revision))


def lock_path() -> str:
    """`$SODA_DATASETS_LOCK`, else experiments/datasets.lock in this repository."""
    return os.environ.get(LOCK_ENV, "").strip() or DEFAULT_LOCK


# ---- reading ---------------------------------------------------------------------------------


def read_lock(path: Optional[str] = None) -> dict[str, dict]:
    """repo -> entry of the lock at `path` (default `lock_path()`); {} if the file does not exist.
    Raises ValueError naming the file when it is malformed."""
    path = path or lock_path()
    if "://" in path and not path.startswith("file://"):
        return _read_cached(path, None)  # an object store: cached per path for the process
    local = path[len("file://"):] if path.startswith("file://") else path
    try:
        st = os.stat(local)
    except FileNotFoundError:
        return {}
    return _read_cached(local, (st.st_mtime_ns, st.st_size))


@functools.lru_cache(maxsize=16)
def _read_cached(path: str, stamp) -> dict[str, dict]:
    import fsspec

    try:
        with fsspec.open(path, "r", encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        return {}
    return parse_lock(text, path)


def parse_lock(text: str, where: str) -> dict[str, dict]:
    """The entries of a lock file's text; ValueError naming `where` for anything malformed."""
    hint = f"fix or delete {where}, or rewrite it with `soda lock-datasets --lock {where}`"
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"dataset lock {where} is not valid JSON ({exc}); {hint}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("datasets"), dict):
        raise ValueError(f"dataset lock {where}: expected an object with a 'datasets' object; {hint}")
    if data.get("format", LOCK_FORMAT) != LOCK_FORMAT:
        raise ValueError(f"dataset lock {where}: format {data.get('format')!r}, this code reads format "
                         f"{LOCK_FORMAT}; {hint}")
    entries = {}
    for repo, entry in data["datasets"].items():
        if not isinstance(entry, dict):
            raise ValueError(f"dataset lock {where}: entry {repo!r} is not an object; {hint}")
        if entry.get("repo", repo) != repo:
            raise ValueError(f"dataset lock {where}: entry {repo!r} names repo {entry.get('repo')!r}; {hint}")
        if not is_commit(entry.get("revision")):
            raise ValueError(f"dataset lock {where}: entry {repo!r} has revision {entry.get('revision')!r}, "
                             f"expected a 40-hex commit sha; {hint}")
        entries[repo] = {**entry, "repo": repo}
    return entries


def locked_revision(repo: str, fallback: str) -> str:
    """The revision a preset of `repo` uses: the lock's entry, else `fallback` (the code's pin or
    placeholder)."""
    entry = read_lock().get(repo)
    return entry["revision"] if entry else fallback


# ---- writing -----------------------------------------------------------------------------------


def render_lock(entries: dict[str, dict]) -> str:
    body = {"format": LOCK_FORMAT, "datasets": {repo: {**entries[repo], "repo": repo} for repo in sorted(entries)}}
    return json.dumps(body, indent=1, sort_keys=True) + "\n"


def write_lock(path: str, entries: dict[str, dict]) -> None:
    """Write the lock atomically (a temp file, then a rename), local or through fsspec."""
    import fsspec

    text = render_lock(entries)
    parse_lock(text, path)  # never write what could not be read back
    fs, p = fsspec.core.url_to_fs(path)
    parent = os.path.dirname(p)
    if parent:
        fs.makedirs(parent, exist_ok=True)
    tmp = f"{p}.tmp-{os.getpid()}"
    with fs.open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    fs.mv(tmp, p)
    _read_cached.cache_clear()


# ---- resolving against the Hub ---------------------------------------------------------------


def _ref_for(dataset: HubDataset, current: Optional[dict], update: bool) -> str:
    if update:
        return dataset.branch
    if current is not None:
        return current["revision"]
    return dataset.pin if dataset.pinned else dataset.branch


def resolve_datasets(datasets: Iterable[HubDataset], current: dict[str, dict], api,
                     update: bool = False) -> tuple[dict[str, dict], list[str]]:
    """(new entries, errors) for `datasets` asked of `api` (an HfApi). A commit asked for must come
    back as itself; anything else is an error naming the repo."""
    entries, errors = {}, []
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    for dataset in datasets:
        ref = _ref_for(dataset, current.get(dataset.repo), update)
        try:
            sha = api.dataset_info(dataset.repo, revision=ref).sha
        except Exception as exc:  # offline, gated, deleted repo or revision: reported per repo
            errors.append(f"{dataset.repo}: cannot resolve {ref!r} on the Hub: {type(exc).__name__}: {exc}")
            continue
        if not is_commit(sha):
            errors.append(f"{dataset.repo}: the Hub answered {sha!r} for {ref!r}, not a commit sha")
        elif is_commit(ref) and sha != ref:
            errors.append(f"{dataset.repo}: pinned commit {ref} resolves to {sha} on the Hub; check the pin")
        else:
            entries[dataset.repo] = {"repo": dataset.repo, "revision": sha, "resolved_from": ref, "resolved_at": now}
    return entries, errors


def lock_datasets(datasets: Sequence[HubDataset], path: Optional[str] = None, api=None, update: bool = False,
                  only: Optional[Sequence[str]] = None) -> dict[str, dict]:
    """Resolve `datasets` (or the repos in `only`) and write the lock at `path`; returns the lock's
    entries. Raises LockError listing every repo that failed, having written nothing."""
    path = path or lock_path()
    known = {d.repo: d for d in datasets}
    if only:
        unknown = sorted(set(only) - set(known))
        if unknown:
            raise LockError(f"unknown dataset repo(s) {unknown}; the presets download: {', '.join(sorted(known))}")
        chosen = [known[r] for r in only]
    else:
        chosen = list(known.values())
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi()
    current = read_lock(path)
    entries, errors = resolve_datasets(chosen, current, api, update=update)
    if errors:
        raise LockError(f"could not lock {len(errors)} of {len(chosen)} dataset repo(s); {path} was not written "
                        "(Hub access is needed: check the network, and HF_TOKEN for gated repos):\n  "
                        + "\n  ".join(errors))
    merged = {**current, **entries}
    write_lock(path, merged)
    return merged
