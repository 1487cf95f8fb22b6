"""Model presets: named Qwen3-shaped decoders, as data (shared/reference.md sections 5 and 6).

A preset is a frozen `ModelPreset`: a `ModelShape` (steps.training.accounting, the one source of
parameter and FLOP counts) plus what the paper trained it with (accelerator, the width its LR
formula used). Presets live in a registry, `PRESETS`, looked up by name with `get_preset`:

- the released SODA models `soda-135m`, `soda-600m`, `soda-1.7b`, `soda-4b` (seq 4096, untied
  embeddings, QK-norm, vocab 144,644; the 135M's LR formula uses width 1024);
- the IsoFLOP family `isoflop-d<width>` (e.g. `isoflop-d768`): the shape comes from
  `steps.scaling.grid.shape_for_width`, the same function the sweep's grid uses;
- `tiny`: hidden 64, 2 layers, seq 256, for CPU tests and benchmarks.

`levanter_config(shape)` maps a shape to Levanter's `Qwen3Config` (Marin's Qwen3 presets: Llama 3
RoPE, QK-norm from Qwen3, untied unless the shape says tied). Levanter builds the vocabulary axis
from the tokenizer at train time, so the config itself carries no vocab size.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Optional

from steps.training.accounting import SODA_PRESETS, ModelShape
from steps.scaling.grid import shape_for_width

ISOFLOP_PREFIX = "isoflop-d"


@dataclass(frozen=True)
class ModelPreset:
    name: str
    shape: ModelShape
    description: str
    tpu: Optional[str] = None  # the slice the paper trained it on
    lr_width: Optional[int] = None  # width in LR = 3e-3 sqrt(B/256) sqrt(1024/width); None: hidden

    @property
    def width_for_lr(self) -> int:
        return self.lr_width or self.shape.hidden


def _soda(nominal: str, tpu: str, lr_width: Optional[int] = None) -> ModelPreset:
    return ModelPreset(
        name=f"soda-{nominal.lower()}",
        shape=SODA_PRESETS[nominal],
        description=f"SODA-base-{nominal} as released (Qwen3 shape, untied, QK-norm, seq 4096)",
        tpu=tpu,
        lr_width=lr_width,
    )


TINY_SHAPE = ModelShape(hidden=64, intermediate=192, layers=2, heads=4, kv_heads=2, head_dim=16, seq_len=256)

# Fixed presets; the IsoFLOP family is resolved by pattern in `get_preset`.
PRESETS: dict[str, ModelPreset] = {
    p.name: p
    for p in (
        _soda("135M", "v5p-32", lr_width=1024),  # the paper used width 1024 in the LR formula
        _soda("600M", "v5p-64"),
        _soda("1.7B", "v5p-128"),
        _soda("4B", "v5p-256"),
        ModelPreset("tiny", TINY_SHAPE, "CPU test model: hidden 64, 2 layers, seq 256"),
    )
}


def isoflop_preset(width: int) -> ModelPreset:
    """The IsoFLOP sweep's model of width `width` (shape from steps.scaling.grid)."""
    shape = shape_for_width(width)
    return ModelPreset(
        name=f"{ISOFLOP_PREFIX}{width}",
        shape=shape,
        description=f"IsoFLOP sweep model: width {width}, {shape.layers} layers, {shape.heads} heads",
    )


# name pattern -> factory, for families that are computed rather than listed
_FAMILIES: dict[str, Callable[[re.Match], ModelPreset]] = {
    rf"^{ISOFLOP_PREFIX}(\d+)$": lambda m: isoflop_preset(int(m.group(1))),
}


def get_preset(name: str) -> ModelPreset:
    """Look up a preset by name; raises KeyError listing what exists."""
    if name in PRESETS:
        return PRESETS[name]
    for pattern, factory in _FAMILIES.items():
        match = re.match(pattern, name)
        if match:
            return factory(match)
    raise KeyError(
        f"unknown model preset {name!r}; known: {', '.join(PRESETS)}, or "
        f"{ISOFLOP_PREFIX}<width> for the IsoFLOP family (width a multiple of 128)"
    )


def preset_names() -> list[str]:
    return list(PRESETS)


def levanter_config(shape: ModelShape, *, tokenizer: Optional[str] = None,
                    reference_checkpoint: Optional[str] = None, **overrides):
    """Levanter's `Qwen3Config` for `shape`.

    tokenizer / reference_checkpoint: local or HF paths; set them so that Levanter's HF
    converter never has to reach the Hugging Face hub (offline runs). Extra keyword arguments
    override Qwen3Config fields (e.g. gradient_checkpointing, attn_backend).
    """
    from levanter.layers.rotary import Llama3RotaryEmbeddingsConfig
    from levanter.models.qwen import Qwen3Config

    if not shape.qk_norm:
        raise ValueError("Levanter's Qwen3 always applies QK-norm; ModelShape.qk_norm=False has no Qwen3 config")
    fields = dict(
        max_seq_len=shape.seq_len,
        hidden_dim=shape.hidden,
        intermediate_dim=shape.intermediate,
        num_layers=shape.layers,
        num_heads=shape.heads,
        num_kv_heads=shape.kv_heads,
        head_dim=shape.head_dim,
        tie_word_embeddings=shape.tied_embeddings,
        rope=Llama3RotaryEmbeddingsConfig(),
        tokenizer=tokenizer,
        reference_checkpoint=reference_checkpoint,
    )
    fields.update(overrides)
    return Qwen3Config(**fields)


def shape_from_levanter(config, vocab_size: int) -> ModelShape:
    """The `ModelShape` of a Levanter Qwen3/Llama config (e.g. one read from an HF checkpoint)."""
    return ModelShape(
        hidden=config.hidden_dim,
        intermediate=config.intermediate_dim,
        layers=config.num_layers,
        heads=config.num_heads,
        kv_heads=config.num_kv_heads,
        head_dim=config.head_dim or config.hidden_dim // config.num_heads,
        seq_len=config.max_seq_len,
        vocab_size=vocab_size,
        tied_embeddings=config.tie_word_embeddings,
    )
