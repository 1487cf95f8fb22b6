"""Parameter and FLOP accounting for SODA's Qwen3-shaped decoders (pure functions, no JAX).

Definitions (used everywhere in the project: train summaries, the IsoFLOP grid, the fits):

- `params_total`: every trainable array of Levanter's `Qwen3LMHeadModel`: input embedding
  (V x h), per layer q/k/v/o projections (no biases), the QK-norm weights (2 x head_dim), the
  GLU MLP (3 x h x f) and two RMSNorm weights (2 x h), the final RMSNorm (h), and the output
  head (V x h) unless the embeddings are tied.
- `params_nonembedding`: `params_total` minus the input embedding AND minus the output head
  (V x h each; only one V x h is subtracted when tied, since then they are one array). What is
  left is the transformer stack including all norms. This is the N of the scaling-law fits
  (shared/reference.md section 7: "N = non-embedding parameters").
- `forward_flops_per_token`: Levanter's `levanter.utils.flop_utils.lm_flops_per_token` with
  `glu=True`, reproduced exactly, including Levanter's choice of `hidden / heads` as the head
  size (it ignores a configured `head_dim`). For the IsoFLOP grid head_dim == hidden / heads,
  so this is exact there; for the 600M/1.7B/4B presets (head_dim 128 != hidden / heads) it
  undercounts attention. `use_true_head_dim=True` counts those shapes' real attention work
  (Q/K/V/O projections and attention with `head_dim`); the default stays Levanter's so that
  budgets and MFU agree with what Levanter logs. Embedding lookups are not counted; the LM
  head is (2 h V per token). The paper counted this way: its 4B on 500B tokens "reached about
  1.3e22 FLOPs"; 3 x Levanter's forward gives 1.32e22, the true head_dim would give 1.57e22.
- `training_flops`: 3 x forward (forward + backward = 2 x forward), per token times tokens.
  Never 6 N D: with a 144,644 vocabulary the head dominates small models.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

SODA_VOCAB_SIZE = 144_644
SODA_SEQ_LEN = 4096


@dataclass(frozen=True)
class ModelShape:
    """The numbers that fix a Qwen3 decoder's size and cost."""

    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    seq_len: int = SODA_SEQ_LEN
    vocab_size: int = SODA_VOCAB_SIZE
    tied_embeddings: bool = False
    qk_norm: bool = True

    def __post_init__(self) -> None:
        for name in ("hidden", "intermediate", "layers", "heads", "kv_heads", "head_dim",
                     "seq_len", "vocab_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"ModelShape.{name} must be a positive int, got {value!r}")
        if self.heads % self.kv_heads:
            raise ValueError(
                f"ModelShape: heads={self.heads} must be a multiple of kv_heads={self.kv_heads}"
            )

    def replace(self, **changes) -> "ModelShape":
        return dataclasses.replace(self, **changes)


# The released SODA models (shared/reference.md section 5); names are nominal sizes.
SODA_PRESETS: dict[str, ModelShape] = {
    "135M": ModelShape(hidden=512, intermediate=1792, layers=15, heads=8, kv_heads=8, head_dim=64),
    "600M": ModelShape(hidden=1024, intermediate=3072, layers=28, heads=16, kv_heads=8, head_dim=128),
    "1.7B": ModelShape(hidden=2048, intermediate=6144, layers=28, heads=16, kv_heads=8, head_dim=128),
    "4B": ModelShape(hidden=2560, intermediate=9728, layers=36, heads=32, kv_heads=8, head_dim=128),
}


def embedding_params(shape: ModelShape) -> int:
    """Parameters of the input embedding plus the output head (one matrix when tied)."""
    matrices = 1 if shape.tied_embeddings else 2
    return matrices * shape.vocab_size * shape.hidden


def layer_params(shape: ModelShape) -> int:
    """Parameters of one decoder layer (attention, QK-norm, GLU MLP, two RMSNorms)."""
    h, hd = shape.hidden, shape.head_dim
    attention = h * hd * (2 * shape.heads + 2 * shape.kv_heads)  # q, o + k, v
    qk_norm = 2 * hd if shape.qk_norm else 0
    mlp = 3 * h * shape.intermediate
    return attention + qk_norm + mlp + 2 * h


def params_nonembedding(shape: ModelShape) -> int:
    """Transformer stack and all norms; excludes the input embedding and the output head."""
    return shape.layers * layer_params(shape) + shape.hidden  # + final RMSNorm


def params_total(shape: ModelShape) -> int:
    """Every trainable parameter of Levanter's Qwen3LMHeadModel with this shape."""
    return params_nonembedding(shape) + embedding_params(shape)


def forward_flops_per_token(shape: ModelShape, *, use_true_head_dim: bool = False) -> float:
    """Forward FLOPs per token, equal to Levanter's `lm_flops_per_token(..., glu=True)`.

    With `use_true_head_dim` the attention terms use `shape.head_dim` instead of Levanter's
    `hidden / heads` (they agree whenever head_dim * heads == hidden).
    """
    h, s = shape.hidden, shape.seq_len
    head_size = shape.head_dim if use_true_head_dim else h / shape.heads
    q_width = shape.heads * head_size
    mlp = 2 * 3 * h * shape.intermediate
    qkv = 2 * h * (q_width + 2 * shape.kv_heads * head_size)
    out_proj = 2 * q_width * h if use_true_head_dim else 2 * h * h
    # Full (unmasked) attention map as Megatron counts it, over the sequence, per token.
    logits = 2 * s**2 * shape.heads * head_size
    mask = 3 * s * s * shape.heads
    weighted_values = 2 * s * s * head_size * shape.heads
    attention = (logits + mask + weighted_values) / s
    lm_head = 2 * h * shape.vocab_size
    return shape.layers * (mlp + qkv + out_proj + attention) + lm_head


def forward_flops(shape: ModelShape, tokens: float, **kwargs) -> float:
    """Forward FLOPs for `tokens` tokens."""
    return forward_flops_per_token(shape, **kwargs) * tokens


def training_flops(shape: ModelShape, tokens: float, **kwargs) -> float:
    """Training FLOPs (forward + backward = 3 x forward) for `tokens` tokens."""
    return 3.0 * forward_flops(shape, tokens, **kwargs)


def describe(shape: ModelShape) -> dict:
    """The shape plus its counts, as written into a train step's summary.json."""
    return {
        "model": dataclasses.asdict(shape),
        "params_total": params_total(shape),
        "params_nonembedding": params_nonembedding(shape),
        "forward_flops_per_token": forward_flops_per_token(shape),
    }
