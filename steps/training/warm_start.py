"""Warm start: an HF Qwen3 checkpoint resized to an extended tokenizer's vocabulary.

SODA's warm-start runs began from Qwen3-0.6B/1.7B base with a Qwen3-based extended tokenizer
(reference.md section 5). Levanter's `initialize_from_hf` keeps the checkpoint's vocab size, so
the extended ids (audio, control tokens) would fall outside the embedding. `prepare_warm_start`
therefore writes, once, a copy of the checkpoint whose input embedding and LM head are resized
to `len(tokenizer)` (transformers' `resize_token_embeddings`: new rows drawn around the mean of
the old ones), plus the tokenizer, under the train step's output; the trainer then initialises
from that directory with a vocab that matches the data.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pipeline.fileio import atomic_write_bytes, atomic_write_json, exists, join, local_copy

logger = logging.getLogger(__name__)

DONE_MARKER = "warm_start.done.json"


def prepare_warm_start(source: str, tokenizer_dir: str, out_dir: str) -> str:
    """Write `source` (HF id, hf://id or local dir) resized to `tokenizer_dir`'s vocab into
    `out_dir` (local or fsspec URL). Skipped when `out_dir` already holds a finished copy."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if exists(join(out_dir, DONE_MARKER)):
        return out_dir
    ref = source[len("hf://"):] if source.startswith("hf://") else local_copy(source)  # gs:// -> a local copy
    tok = AutoTokenizer.from_pretrained(local_copy(tokenizer_dir))
    model = AutoModelForCausalLM.from_pretrained(ref, torch_dtype=torch.float32)
    if model.config.model_type != "qwen3":
        raise ValueError(f"warm start needs a Qwen3 checkpoint; {source!r} is a {model.config.model_type!r} model")
    old = model.get_input_embeddings().weight.shape[0]
    new = len(tok)
    if new < old:
        logger.warning("warm start: tokenizer has %d ids, fewer than the checkpoint's %d; shrinking", new, old)
    model.resize_token_embeddings(new)
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        for name in sorted(os.listdir(tmp)):
            with open(os.path.join(tmp, name), "rb") as f:
                atomic_write_bytes(join(out_dir, name), f.read())
    atomic_write_json(join(out_dir, DONE_MARKER), {"source": source, "tokenizer": tokenizer_dir,
                                                  "old_vocab": old, "new_vocab": new})
    logger.info("warm start: %s resized from %d to %d ids -> %s", source, old, new, out_dir)
    return out_dir


def levanter_config_from_hf(hf_dir: str, seq_len: int, tokenizer_dir: str):
    """Levanter's Qwen3Config for the checkpoint at `hf_dir` (its own shape), at `seq_len`."""
    import dataclasses

    from levanter.models.qwen import Qwen3Config
    from transformers import AutoConfig

    hf_dir = local_copy(hf_dir)  # transformers and Levanter's converter read real files
    hf_config = AutoConfig.from_pretrained(hf_dir)
    config = Qwen3Config.from_hf_config(hf_config)
    return dataclasses.replace(config, max_seq_len=seq_len, tokenizer=tokenizer_dir,
                               reference_checkpoint=hf_dir, use_sliding_window=False)
