"""The data mirror: where the download step reads when `$SODA_DATA_MIRROR` is set.

Air-gapped clusters copy the Hub, Common Crawl and public buckets into one place of their own (a
local directory, `file://...`, `gs://bucket/mirror` or any fsspec URL). With the variable set,
`steps.download` reads each source through the mirror root instead, by this rule:

    hf://datasets/{repo}@{revision}/{path}      -> {mirror}/hf/datasets/{repo}/{revision}/{path}
    https://data.commoncrawl.org/{path}         -> {mirror}/commoncrawl/{path}
    s3://commoncrawl/{path} (the same objects)  -> {mirror}/commoncrawl/{path}
    gs://{bucket}/{path}  (gcs:// alike)        -> {mirror}/gs/{bucket}/{path}
    s3://{bucket}/{path}  (other buckets)       -> {mirror}/s3/{bucket}/{path}

A revision is one path component as it appears in the URL (a commit sha; a branch such as
`refs/convert/parquet` keeps its escaped form `refs%2Fconvert%2Fparquet`). Local sources
(a plain path, `file://`, `memory://`) are read where they are. Any other source (another HTTPS
host, a hub model or space, a dataset URL without a revision) cannot be mirrored: `mirrored_url`
raises ValueError naming it.

The mirror is an environment setting read when a step runs: it never enters a step's hash, so
the same experiment has the same output paths with and without it. Storage options of the
original source (e.g. `{"anon": True}`) are not passed to the mirror's filesystem.
`soda make-mirror DIR` (steps.mirror_fixtures) writes a tiny offline mirror in this layout.
"""

from __future__ import annotations

import os
import re
from typing import Optional

MIRROR_ENV = "SODA_DATA_MIRROR"
COMMON_CRAWL_HTTPS = "https://data.commoncrawl.org"
LOCAL_PROTOCOLS = ("file", "local", "memory")
_BUCKET_PREFIX = {"gs": "gs", "gcs": "gs", "s3": "s3", "s3a": "s3"}
_HF_DATASET = re.compile(r"^hf://datasets/(?P<repo>[^@]+)@(?P<revision>[^/]+)(?:/(?P<path>.*))?$")


def data_mirror() -> Optional[str]:
    """The mirror root from `$SODA_DATA_MIRROR`, or None when unset or empty."""
    value = os.environ.get(MIRROR_ENV, "").strip()
    return value or None


def is_local(url: str) -> bool:
    """True for sources read in place even with a mirror: plain paths, file://, memory://."""
    return "://" not in url or url.split("://", 1)[0] in LOCAL_PROTOCOLS


def _join(mirror: str, *parts: str) -> str:
    return "/".join([mirror.rstrip("/"), *(p.strip("/") for p in parts if p and p.strip("/"))])


def mirrored_url(url: str, mirror: str) -> str:
    """The mirror's copy of source `url` (see the module docstring); ValueError for a source the
    rule cannot map."""
    if not mirror or not mirror.strip():
        raise ValueError(f"mirrored_url({url!r}): the mirror root is empty")
    if url.startswith("hf://"):
        match = _HF_DATASET.match(url)
        if not match:
            raise ValueError(f"cannot mirror {url!r}: only pinned dataset repos "
                             "(hf://datasets/{repo}@{revision}/...) have a place in the mirror")
        return _join(mirror, "hf", "datasets", match["repo"], match["revision"], match["path"] or "")
    if url == COMMON_CRAWL_HTTPS or url.startswith(COMMON_CRAWL_HTTPS + "/"):
        return _join(mirror, "commoncrawl", url[len(COMMON_CRAWL_HTTPS):])
    scheme, _, rest = url.partition("://")
    if scheme in _BUCKET_PREFIX and rest:
        bucket, _, path = rest.partition("/")
        if scheme.startswith("s3") and bucket == "commoncrawl":
            return _join(mirror, "commoncrawl", path)
        return _join(mirror, _BUCKET_PREFIX[scheme], bucket, path)
    raise ValueError(f"cannot mirror {url!r}: the mirror holds hf://datasets/..., {COMMON_CRAWL_HTTPS}/... and "
                     "gs:// / s3:// buckets (steps/mirror.py); read this source directly (unset "
                     f"{MIRROR_ENV}) or add a rule for it")
