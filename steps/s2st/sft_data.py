"""S2ST supervised fine-tuning data: CVSS-style pairs -> Mimi codes -> masked token cache.

Each pair becomes one document in the pre-training documents' convention (BOS first, EOS last,
tokenizer.documents) around the S2ST prompt and answer of tokenizer.prompts:

    <|begin_of_text|> <|audio_start|>As<|audio_end|><|text_start|>Ts<|text_end|><|text_start|>   prompt
    Tt<|text_end|><|audio_start|>At<|audio_end|> <|end_of_text|>                                  answer

The loss is on the answer only (the released fine-tune masked the prompt). Per token, the
answer mask is 0 on every prompt token (BOS included) and 1 from the first target-text token
through the final <|audio_end|> and EOS. Levanter's supervised format stores the weight of the
*prediction made at* each position, i.e. the mask shifted left by one (`loss_weights[i] =
mask[i + 1]`, the last position 0), exactly as its own `SupervisedTextProcessor` writes it; the
trainer reads the cache with `SupervisedLmDatasetFormat` (steps.training.finetune).

Output (`output_path`):
    documents/{split}/{lang}.parquet   id, source_lang, prompt, answer (the strings tokenized)
    {cache_split}/part-{split}-{lang}/ Levanter TreeStore {"input_ids": int32, "loss_weights": float32}
    {cache_split}/shard_ledger.json    the sharded-layout ledger (cache_split: train, validation)
    stats/{split}-{lang}.json          per-part counts; written last: a part is done iff it exists
    summary.json                       pairs, skipped by reason, tokens, loss/masked tokens, plumbing_run

A rerun redoes only parts without stats. CVSS `dev` becomes the cache's `validation` split. With
Ray initialised each part is one Ray task (one GPU each with `use_gpu`), else parts run in turn.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from pipeline import ExecutorStep, ResourceConfig, output_path_of, this_output_path, versioned
from pipeline.fileio import atomic_write_bytes, atomic_write_json, exists, join, read_json, url_to_fs
from steps.s2st.cvss import canonical_split, iter_pairs, language_pairs
from steps.sharding import run_shards
from tokenizer.audio import codes_to_chars
from tokenizer.fast_tokenize import FastTokenizer
from tokenizer.mimi import cached_mimi, encode, is_random_mimi
from tokenizer.prompts import s2st_answer, s2st_prompt
from tokenizer.vocab import BOS, EOS

logger = logging.getLogger(__name__)

LOSS_WEIGHTS = "loss_weights"  # Levanter's SupervisedTextProcessor.loss_weights_key
CACHE_SPLITS = {"train": "train", "dev": "validation", "test": "test"}
LEDGER = "shard_ledger.json"
COUNTS = ("pairs", "tokens", "loss_tokens", "masked_tokens", "audio_tokens")  # per part, split and in all


@dataclass(frozen=True)
class S2stSftDataConfig:
    """pairs_path: a `steps.s2st.cvss` root (the prepare step's or the fixture step's output).
    max_document_tokens: longer documents are skipped and counted (`too_long`); keep it at most
    the fine-tune's sequence length so no answer is cut."""

    pairs_path: str
    tokenizer: str
    output_path: str = this_output_path()
    splits: tuple[str, ...] = ("train", "dev")
    languages: Optional[tuple[str, ...]] = None  # None: every language pair under pairs_path
    max_pairs_per_part: Optional[int] = None
    max_document_tokens: Optional[int] = 4096
    mimi_model: str = "kyutai/mimi"
    num_codebooks: int = 8
    batch_size: int = 8  # pairs per Mimi call
    seed: int = 0
    device: Optional[str] = None  # default: cuda if available, else cpu
    use_gpu: bool = False  # ask Ray for one GPU per part task
    mimi_config_overrides: Optional[dict[str, Any]] = field(default=None, hash=False)  # tests only


# ---- documents and masks (pure) ----------------------------------------------------------


def s2st_document_parts(source_audio: str, source_text: str, target_text: str, target_audio: str) -> tuple[str, str]:
    """(prompt, answer) strings of one S2ST document: BOS + `s2st_prompt`, `s2st_answer` + EOS."""
    return BOS + s2st_prompt(source_audio, source_text).text, s2st_answer(target_text, target_audio) + EOS


def answer_mask(prompt_len: int, answer_len: int) -> np.ndarray:
    """Per token: 0 on the prompt, 1 on the answer."""
    return np.concatenate([np.zeros(prompt_len, np.float32), np.ones(answer_len, np.float32)])


def levanter_loss_weights(mask: np.ndarray) -> np.ndarray:
    """Per-token mask -> Levanter's per-prediction weights: position i predicts token i + 1."""
    out = np.zeros_like(mask, dtype=np.float32)
    out[:-1] = mask[1:]
    return out


def masked_example(tok, prompt: str, answer: str) -> dict[str, np.ndarray]:
    """{"input_ids", "loss_weights"} for one document. The prompt ends with an added token
    (<|text_start|>), where the tokenizer cuts, so the document's ids are the prompt's followed by
    the answer's (tests compare with encoding the whole document)."""
    prompt_ids, answer_ids = tok.encode_batch([prompt, answer])
    if len(answer_ids) == 0:
        raise ValueError("the S2ST answer tokenized to nothing")
    ids = np.concatenate([prompt_ids, answer_ids]).astype(np.int32)
    return {"input_ids": ids, LOSS_WEIGHTS: levanter_loss_weights(answer_mask(len(prompt_ids), len(answer_ids)))}


# ---- the step ----------------------------------------------------------------------------------


def _mimi(config: S2stSftDataConfig):
    return cached_mimi(config.mimi_model, config.seed, config.device, config.mimi_config_overrides)


def _encode_batch(model, pairs, num_codebooks: int) -> list[tuple[str, str]]:
    waves = [p.source_audio for p in pairs] + [p.target_audio for p in pairs]
    codes = [codes_to_chars(c) for c in encode(model, waves, num_codebooks=num_codebooks)]
    return list(zip(codes[: len(pairs)], codes[len(pairs):]))


def _part_metadata(config: S2stSftDataConfig, vocab_size: int) -> dict:
    # Same keys as Levanter's SupervisedTextProcessor metadata.
    return {"tokenizer": config.tokenizer, "vocab_size": vocab_size, "input_field": "prompt",
            "target_field": "answer", "append_bos": False, "append_eos": False}


def build_part(config: S2stSftDataConfig, split: str, lang: str, part_dir: str, docs_url: str, stats_url: str) -> dict:
    """Encode, render, tokenize and cache one (split, language) part; returns its stats."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch
    from levanter.store.cache import CacheMetadata, SerialCacheWriter

    fs, p = url_to_fs(part_dir)
    if fs.exists(p):  # a crashed attempt: start the part again
        fs.rm(p, recursive=True)
    torch.manual_seed(config.seed)
    tok = FastTokenizer.from_pretrained(config.tokenizer)
    model = _mimi(config)
    skipped: Counter = Counter()
    counts = Counter()
    rows = []
    name = part_dir.rstrip("/").rsplit("/", 1)[-1]
    exemplar = {"input_ids": np.zeros((0,), np.int32), LOSS_WEIGHTS: np.zeros((0,), np.float32)}
    meta = CacheMetadata(_part_metadata(config, tok.vocab_size))
    lo, hi = tok.audio_base_id, tok.audio_base_id + tok.num_audio_tokens
    pairs = iter_pairs(config.pairs_path, split, limit=config.max_pairs_per_part, skipped=skipped, languages=[lang])
    with SerialCacheWriter(part_dir, exemplar, metadata=meta, shard_name=name) as writer:
        batch = []
        for pair in [*pairs, None]:
            if pair is not None:
                batch.append(pair)
            if batch and (pair is None or len(batch) == config.batch_size):
                examples = []
                for pr, (src_a, tgt_a) in zip(batch, _encode_batch(model, batch, config.num_codebooks)):
                    prompt, answer = s2st_document_parts(src_a, pr.source_text, pr.target_text, tgt_a)
                    ex = masked_example(tok, prompt, answer)
                    n = len(ex["input_ids"])
                    if config.max_document_tokens and n > config.max_document_tokens:
                        skipped["too_long"] += 1
                        logger.warning("%s: %d tokens > max_document_tokens %d; skipped", pr.id, n,
                                       config.max_document_tokens)
                        continue
                    examples.append(ex)
                    rows.append({"id": pr.id, "source_lang": pr.source_lang, "prompt": prompt, "answer": answer})
                    loss = int(ex[LOSS_WEIGHTS].sum())
                    counts.update(pairs=1, tokens=n, loss_tokens=loss, masked_tokens=n - loss,
                                  audio_tokens=int(np.count_nonzero((ex["input_ids"] >= lo) & (ex["input_ids"] < hi))))
                if examples:
                    writer.write_batch(examples)
                batch = []
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=pa.schema(
        [("id", pa.string()), ("source_lang", pa.string()), ("prompt", pa.string()), ("answer", pa.string())])), buf)
    atomic_write_bytes(docs_url, buf.getvalue())
    stats = {"split": split, "language": lang, "part": name, **{k: int(counts[k]) for k in COUNTS},
             "skipped": dict(skipped), "vocab_size": tok.vocab_size, "plumbing_run": is_random_mimi(model)}
    atomic_write_json(stats_url, stats)
    return stats


def _write_ledger(cache_dir: str, parts: list[dict], metadata: dict) -> None:
    from levanter.store.cache import CACHE_LAYOUT_SHARDED, CacheLedger, CacheMetadata

    fields = ("input_ids", LOSS_WEIGHTS)
    ledger = CacheLedger(
        total_num_rows=sum(s["pairs"] for s in parts),
        shard_rows={s["part"]: s["pairs"] for s in parts},
        is_finished=True,
        finished_shards=[s["part"] for s in parts],
        field_counts={f: sum(s["tokens"] for s in parts) for f in fields},
        field_counts_by_shard={s["part"]: {f: s["tokens"] for f in fields} for s in parts},
        layout=CACHE_LAYOUT_SHARDED,
        metadata=CacheMetadata(metadata),
    )
    atomic_write_bytes(join(cache_dir, LEDGER), ledger.to_json().encode())


def build_s2st_sft_data(config: S2stSftDataConfig) -> dict:
    """The step fn: one part per (split, language), then ledgers and summary.json."""
    out = config.output_path
    langs = [s for s, _ in language_pairs(config.pairs_path) if config.languages is None or s in config.languages]
    if not langs:
        raise ValueError(f"no language pairs under {config.pairs_path!r} match languages={config.languages}")
    jobs, stats = [], {}
    for split in map(canonical_split, config.splits):
        for lang in langs:
            stats_url = join(out, "stats", f"{split}-{lang}.json")
            if exists(stats_url):
                stats[(split, lang)] = read_json(stats_url)
                continue
            jobs.append((config, split, lang, join(out, CACHE_SPLITS[split], f"part-{split}-{lang}"),
                         join(out, "documents", split, f"{lang}.parquet"), stats_url))
    for job, result in zip(jobs, run_shards(build_part, jobs, desc="s2st sft data", num_cpus=1,
                                                 num_gpus=1 if config.use_gpu else 0)):
        stats[(job[1], job[2])] = result
    summary: dict[str, Any] = {"pairs_path": config.pairs_path, "tokenizer": config.tokenizer, "splits": {},
                               "mimi_model": config.mimi_model}
    for split in map(canonical_split, config.splits):
        parts = [stats[(split, lang)] for lang in langs]
        vocab = parts[0]["vocab_size"]
        _write_ledger(join(out, CACHE_SPLITS[split]), parts, _part_metadata(config, vocab))
        skipped = Counter()
        for s in parts:
            skipped.update(s["skipped"])
        summary["splits"][split] = {"cache_split": CACHE_SPLITS[split], "skipped": dict(skipped),
                                    **{k: sum(s[k] for s in parts) for k in COUNTS}}
    for key in COUNTS:
        summary[key] = sum(v[key] for v in summary["splits"].values())
    total_skipped = Counter()
    for v in summary["splits"].values():
        total_skipped.update(v["skipped"])
    summary["skipped"] = dict(total_skipped)
    summary["plumbing_run"] = any(s["plumbing_run"] for s in stats.values())
    atomic_write_json(join(out, "summary.json"), summary)
    logger.info("s2st sft data: %d pairs, %d tokens (%d with loss), %d skipped -> %s", summary["pairs"],
                summary["tokens"], summary["loss_tokens"], sum(total_skipped.values()), out)
    return summary


def s2st_sft_data_step(name: str, pairs, tokenizer, *, mimi_model: str = "kyutai/mimi",
                       splits: tuple[str, ...] = ("train", "dev"), languages: Optional[tuple[str, ...]] = None,
                       max_document_tokens: int = 4096, use_gpu: bool = False, **kw):
    """`name` (e.g. "tokenized/cvss-t-s2st"): the SFT cache from a pairs step (prepare or fixture)
    and a build-tokenizer step."""
    config = S2stSftDataConfig(pairs_path=output_path_of(pairs), tokenizer=output_path_of(tokenizer),
                               splits=versioned(tuple(splits)), languages=versioned(languages),
                               max_document_tokens=versioned(max_document_tokens),
                               mimi_model=versioned(mimi_model), use_gpu=use_gpu, **kw)
    return ExecutorStep(name=name, fn=build_s2st_sft_data, config=config,
                        description="S2ST SFT documents (answer-only loss) as a Levanter cache",
                        resources=ResourceConfig(cpus=1))
