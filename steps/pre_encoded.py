"""Turn the released pre-encoded SODA parquet into documents for the tokenize step.

`soda-research/yodas2-mm-pretrain` and `soda-research/emilia-mm-pretrain` (first published as
potsawee/*-mm-pretrain) hold one document per row, already interleaved, already in both formats:

    id: string    "{recording}_type1" (text-first) or "{recording}_type2" (audio-first)
    split: string "{shard}/{subshard}" of the source, e.g. "en000/00000012"
    text: string  "<|begin_of_text|>" + per utterance the text/audio blocks + "<|end_of_text|>"

Files: yodas2 `{lang}{nnn}/{nnnnnnnn}.parquet`; emilia `Emilia/EN/*.parquet`,
`Emilia-YODAS/EN/*.parquet`. So they already are documents with a `text` column; this step only
renames them into the columns the interleave step writes (`id, recording_id, format, text`), so
the tokenize step reads the raw path and the released path alike:

    id            the released id (unchanged)
    recording_id  the id without its _type1/_type2 suffix
    format        "text_first" (type1) or "audio_first" (type2)
    text          the document; with `fix_whitespace` the stray spaces the first Emilia release
                  had inside `<|text_start|> ... <|text_end|>` are removed (the maintainers'
                  -fix re-release made the same change). The released documents end with
                  `<|end_of_text|>`, which the paper's runs trained on, and so does every
                  document the interleave step writes (one format on both paths: the same
                  ids at the boundaries). `drop_end_of_text` removes it, matching only an
                  interleave step run with `end_with_eos=False`.

One output parquet per input file, written atomically with a done marker (reruns redo only
unfinished files); summary.json counts documents by format. Each file is one Ray task when Ray is
initialised (in this process otherwise), tried again on a transient store error; a failing file
does not stop the others.
"""

from __future__ import annotations

import json
import logging
import posixpath
import re
import uuid
from collections import Counter
from dataclasses import dataclass

from pipeline import strict_json
from pipeline.fileio import atomic_write_json
from steps.table_readers import read_parquet
from steps.sharding import run_shards
from steps.encode import expand_inputs
from tokenizer.documents import document_audio_error

logger = logging.getLogger(__name__)

TEXT_FIRST = "text_first"
AUDIO_FIRST = "audio_first"
_SUFFIX_FORMAT = {"_type1": TEXT_FIRST, "_type2": AUDIO_FIRST}
_ID_PATTERN = re.compile(r"^(?P<rec>.+)(?P<suffix>_type[12])$")


@dataclass(frozen=True)
class PreEncodedConfig:
    input_paths: tuple[str, ...]  # parquet files or globs (the download step's output / pattern)
    output_path: str
    fix_whitespace: bool = True
    drop_end_of_text: bool = False
    row_group_size: int = 1024
    # Ray CPUs per file's task. Not versioned (no plain field is): it does not change the documents.
    cpus_per_file: float = 1.0


FILE_ATTEMPTS = 3  # a file's conversion is tried this often on a transient (store/network) error ...
RETRY_DELAY_S = 2.0  # ... waiting 2, then 4 s between tries


def parse_id(doc_id: str) -> tuple[str, str]:
    """'abc_type1' -> ('abc', 'text_first'); raises ValueError for an id without the suffix."""
    match = _ID_PATTERN.match(doc_id)
    if not match:
        raise ValueError(f"document id {doc_id!r} does not end in _type1 (text-first) or _type2 (audio-first)")
    return match["rec"], _SUFFIX_FORMAT[match["suffix"]]


def fix_whitespace(text: str) -> str:
    """Drop the space after <|text_start|> and before <|text_end|> (first Emilia release)."""
    return text.replace("<|text_start|> ", "<|text_start|>").replace(" <|text_end|>", "<|text_end|>")


def output_schema():
    import pyarrow as pa

    return pa.schema(
        [
            pa.field("id", pa.string(), nullable=False),
            pa.field("recording_id", pa.string(), nullable=False),
            pa.field("format", pa.string(), nullable=False),
            pa.field("text", pa.string(), nullable=False),
        ]
    )


END_OF_TEXT = "<|end_of_text|>"


def convert_table(table, fix: bool = True, source: str = "?", drop_end_of_text: bool = False):
    """A released table (id, [split,] text) -> (id, recording_id, format, text)."""
    import pyarrow as pa

    missing = {"id", "text"} - set(table.column_names)
    if missing:
        raise ValueError(f"{source}: expected columns id and text (released mm-pretrain schema), missing {sorted(missing)}")
    ids = table.column("id").to_pylist()
    texts = table.column("text").to_pylist()
    recs, fmts = [], []
    for row, (doc_id, text) in enumerate(zip(ids, texts)):
        for field_name, value in (("id", doc_id), ("text", text)):
            if not isinstance(value, str):
                raise ValueError(f"{source} row {row}: field {field_name!r} is "
                                 f"{'null' if value is None else type(value).__name__}, expected a string")
        try:
            rec, fmt = parse_id(doc_id)
        except ValueError as exc:
            raise ValueError(f"{source} row {row}: {exc}") from exc
        recs.append(rec)
        fmts.append(fmt)
    if fix:
        texts = [fix_whitespace(t) for t in texts]
    if drop_end_of_text:
        texts = [t[: -len(END_OF_TEXT)] if t.endswith(END_OF_TEXT) else t for t in texts]
    return pa.table({"id": ids, "recording_id": recs, "format": fmts, "text": texts}, schema=output_schema())


def drop_invalid_audio(table, source: str = "?"):
    """(table without the documents whose audio is unusable, how many were dropped): a partial
    frame, a character outside its codebook, an unclosed span or an audio character in the text
    would otherwise become wrong audio tokens silently (tokenizer.documents.document_audio_error)."""
    import pyarrow as pa

    keep = []
    for row, (doc_id, text) in enumerate(zip(table.column("id").to_pylist(), table.column("text").to_pylist())):
        err = document_audio_error(text)
        if err is not None:
            logger.warning("pre-encoded: skipping %s row %d (%s): %s", source, row, doc_id, err)
        keep.append(err is None)
    dropped = keep.count(False)
    return (table.filter(pa.array(keep)) if dropped else table), dropped


def convert_pre_encoded(config: PreEncodedConfig) -> dict:
    """Step fn: convert every input parquet file not yet done, one Ray task per file (in this
    process without Ray); write summary.json."""
    import fsspec

    inputs = expand_inputs(config.input_paths)
    fs, _ = fsspec.core.url_to_fs(config.output_path)
    doc_dir = posixpath.join(config.output_path, "documents")
    fs.makedirs(doc_dir, exist_ok=True)
    names = _output_names(inputs)
    todo = [p for p in inputs if not fs.exists(posixpath.join(doc_dir, f"{names[p]}.done.json"))]
    if len(todo) < len(inputs):
        logger.info("pre-encoded: %d of %d files already done", len(inputs) - len(todo), len(inputs))
    run_shards(convert_file, [(config, path, names[path]) for path in todo], desc="pre-encoded",
               num_cpus=config.cpus_per_file, local_threads=1, attempts=FILE_ATTEMPTS,
               retry_delay_s=RETRY_DELAY_S, job_names=todo)

    per_file = [json.loads(fs.cat_file(posixpath.join(doc_dir, f"{names[p]}.done.json"))) for p in inputs]
    formats: Counter = Counter()
    for entry in per_file:
        formats.update(entry["formats"])
    summary = {
        "files": len(per_file),
        "documents": sum(e["documents"] for e in per_file),
        "invalid_audio_documents_skipped": sum(e.get("invalid_audio_documents", 0) for e in per_file),
        "formats": dict(sorted(formats.items())),
        "fix_whitespace": config.fix_whitespace,
        "drop_end_of_text": config.drop_end_of_text,
    }
    with fs.open(posixpath.join(config.output_path, "summary.json"), "w") as f:
        f.write(strict_json.dumps(summary, indent=1, sort_keys=True))
    logger.info("pre-encoded: %d documents from %d files -> %s", summary["documents"], len(inputs), doc_dir)
    return summary


def convert_file(config: PreEncodedConfig, path: str, name: str) -> dict:
    """One task: convert input file `path` to documents/{name}.parquet and write its done marker
    (the record returned). A task Ray reruns after its worker died converts the file again: the
    same bytes, written atomically, so no request is spent checking first."""
    import fsspec
    import pyarrow as pa
    import pyarrow.parquet as pq

    fs, _ = fsspec.core.url_to_fs(config.output_path)
    doc_dir = posixpath.join(config.output_path, "documents")
    marker = posixpath.join(doc_dir, f"{name}.done.json")
    # read whole (one request on an object store), so a failed read is the store's OSError, retried,
    # not the "not a readable parquet file" of a damaged one
    in_fs, in_path = fsspec.core.url_to_fs(path)
    data = in_fs.cat_file(in_path)
    released = read_parquet(pa.BufferReader(data), path,
                            hint="; delete it from the download step's output and rerun that step")
    table = convert_table(released, config.fix_whitespace, source=path, drop_end_of_text=config.drop_end_of_text)
    table, invalid = drop_invalid_audio(table, source=path)
    tmp = posixpath.join(doc_dir, f".{name}.parquet.tmp-{uuid.uuid4().hex}")
    try:
        with fs.open(tmp, "wb") as f:
            pq.write_table(table, f, row_group_size=config.row_group_size, compression="zstd")
        fs.mv(tmp, posixpath.join(doc_dir, f"{name}.parquet"))
    except BaseException:
        try:
            if fs.exists(tmp):
                fs.rm(tmp)
        except OSError:  # the store is failing; the hidden temp file is only clutter
            pass
        raise
    counts = Counter(table.column("format").to_pylist())
    record = {"input": path, "documents": table.num_rows, "invalid_audio_documents": invalid,
              "formats": dict(sorted(counts.items()))}
    atomic_write_json(marker, record)
    return record


def _output_names(inputs: list[str]) -> dict[str, str]:
    """Output names that keep the source's last two path parts: 'en000/00000012' -> 'en000-00000012'."""
    names = {}
    for path in inputs:
        parts = path.rstrip("/").split("/")
        stem = "-".join(parts[-3:] if parts[-2] in ("EN",) else parts[-2:])
        stem = re.sub(r"\.parquet$", "", stem)
        names[path] = re.sub(r"[^A-Za-z0-9._-]+", "_", stem)
    if len(set(names.values())) != len(names):
        raise ValueError("input files map to the same output name; pass files from one release at a time")
    return names
