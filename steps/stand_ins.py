"""Stand-ins for the models the Hugging Face Hub serves, for runs that cannot reach it (rehearsals).

`stand_in_checkpoint_step(config)` writes, under its output (local or an object store), a tiny
randomly initialised Qwen3 checkpoint in the Hub's layout (`config.json`, `model.safetensors`)
with a small Qwen-style BPE tokenizer beside it: something a warm start can resize and train from,
and a tokenizer build can extend, exactly as it would `Qwen/Qwen3-0.6B-Base`. Its weights and
vocabulary mean nothing; whatever is trained from it is a plumbing run.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass

from pipeline import strict_json
from pipeline.step import this_output_path
from pipeline.fileio import url_to_fs
from tokenizer.testing import make_tiny_qwen_style_tokenizer_dir

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StandInCheckpointConfig:
    stands_for: str  # the Hub id it replaces, e.g. "Qwen/Qwen3-0.6B-Base" (recorded, never fetched)
    hidden: int = 32
    layers: int = 2
    seed: int = 0
    output_path: str = this_output_path()


def stand_in_checkpoint_step(config: StandInCheckpointConfig) -> dict:
    """Step fn: a tiny random Qwen3 checkpoint plus tokenizer in the step's output."""
    import torch
    from transformers import AutoTokenizer, Qwen3Config, Qwen3ForCausalLM

    with tempfile.TemporaryDirectory(prefix="soda-stand-in-") as tmp:
        make_tiny_qwen_style_tokenizer_dir(tmp)
        vocab = len(AutoTokenizer.from_pretrained(tmp))
        torch.manual_seed(config.seed)
        heads = 2
        model = Qwen3ForCausalLM(Qwen3Config(
            vocab_size=vocab, hidden_size=config.hidden, intermediate_size=3 * config.hidden,
            num_hidden_layers=config.layers, num_attention_heads=heads, num_key_value_heads=1,
            head_dim=config.hidden // heads, max_position_embeddings=4096, tie_word_embeddings=True))
        model.save_pretrained(tmp, safe_serialization=True)
        summary = {"stands_for": config.stands_for, "vocab_size": vocab, "hidden": config.hidden,
                   "layers": config.layers, "seed": config.seed, "note": "random-init stand-in (plumbing)"}
        with open(os.path.join(tmp, "stand_in.json"), "w") as f:
            f.write(strict_json.dumps(summary, indent=1))
        fs, path = url_to_fs(config.output_path)
        fs.makedirs(path, exist_ok=True)
        fs.put(tmp.rstrip("/") + "/", path.rstrip("/") + "/", recursive=True)
    logger.info("stand-in for %s: Qwen3 hidden %d, %d layers, vocab %d -> %s", config.stands_for, config.hidden,
                config.layers, vocab, config.output_path)
    return summary
