"""Reading tables: parquet (one file, or in batches of rows) and jsonl / jsonl.gz / jsonl.zstd files
as batches of row dicts. A damaged file is a ValueError naming it (and the line), never a silent
short read; the store's own errors (ConnectionError, TimeoutError) pass through for a retry."""

from __future__ import annotations

import json
import zlib
from typing import Sequence

from pipeline.fileio import url_to_fs
from steps.zstd_io import is_zstd, iter_lines, zstd_errors


# Raised by the store or the network, never by a damaged file: passed on as they are (a transient
# error for `with_retries`), not turned into the ValueError of a corrupt file.
_NETWORK_ERRORS = (ConnectionError, TimeoutError)


def open_parquet(f, path: str, hint: str = ""):
    """`pyarrow.parquet.ParquetFile(f)`, with an error naming `path` for a truncated or non-parquet
    file (pyarrow's own message names no file); `hint` says what to do about it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(f)
    except _NETWORK_ERRORS:  # the store, not the file: worth another try
        raise
    except (pa.ArrowException, OSError) as e:
        raise ValueError(f"{path}: not a readable parquet file (truncated or corrupt?): {e}{hint}") from e


def read_parquet(f, path: str, hint: str = ""):
    """The whole table of `open_parquet(f, path)`; a file damaged past its footer is the same error."""
    import pyarrow as pa

    pf = open_parquet(f, path, hint)
    try:
        return pf.read()
    except _NETWORK_ERRORS:
        raise
    except (pa.ArrowException, OSError) as e:
        raise ValueError(f"{path}: not a readable parquet file (truncated or corrupt?): {e}{hint}") from e


def iter_record_batches(
    path: str, columns: Sequence[str], batch_size: int, optional: Sequence[str] = ()
):
    """Yield lists of row dicts (only `columns`; `optional` ones may be absent -> None) from a
    parquet, jsonl, jsonl.gz or jsonl.zstd file. Raises ValueError naming the file (and line) on bad input."""
    fs, p = url_to_fs(path)
    wanted = list(columns) + [c for c in optional if c not in columns]
    if path.endswith(".parquet"):
        import pyarrow as pa

        with fs.open(p, "rb") as f:
            pf = open_parquet(f, path)
            names = pf.schema_arrow.names
            missing = [c for c in columns if c not in names]
            if missing:
                raise ValueError(f"{path}: missing column(s) {missing} (found {names})")
            present = [c for c in wanted if c in names]
            batches = pf.iter_batches(batch_size=batch_size, columns=present)
            while True:
                try:
                    batch = next(batches)
                except StopIteration:
                    break
                except _NETWORK_ERRORS:
                    raise
                except (pa.ArrowException, OSError) as e:  # a damaged page or row group
                    raise ValueError(f"{path}: parquet data cannot be read (corrupt?): {e}") from e
                cols = {c: batch.column(c).to_pylist() for c in present}
                n = batch.num_rows
                yield [{c: (cols[c][i] if c in cols else None) for c in wanted} for i in range(n)]
        return
    try:
        if is_zstd(path):  # fsspec's own zstd codec would return a truncated file's text silently
            with fs.open(p, "rb") as raw:
                yield from _jsonl_rows(iter_lines(raw, path), path, columns, wanted, batch_size)
        else:
            with fs.open(p, "rb", compression="infer") as f:
                yield from _jsonl_rows(f, path, columns, wanted, batch_size)
    except _NETWORK_ERRORS:
        raise
    except (EOFError, OSError, zlib.error, *zstd_errors()) as e:  # a truncated .gz or .zstd, a damaged file
        raise ValueError(f"{path}: cannot read the file (truncated or corrupt?): {type(e).__name__}: {e}") from e


def _jsonl_rows(lines, path: str, columns: Sequence[str], wanted: list[str], batch_size: int):
    """Batches of row dicts from JSON `lines` (bytes or str), checked as iter_record_batches says."""
    rows: list[dict] = []
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{path}: line {lineno} is not valid JSON: {e}") from e
        if not isinstance(obj, dict):
            raise ValueError(f"{path}: line {lineno} holds a JSON {type(obj).__name__}, expected an object "
                             f"with field(s) {list(columns)}")
        missing = [c for c in columns if c not in obj]
        if missing:
            raise ValueError(f"{path}: line {lineno} has no field(s) {missing}")
        rows.append({c: obj.get(c) for c in wanted})
        if len(rows) >= batch_size:
            yield rows
            rows = []
    if rows:
        yield rows
