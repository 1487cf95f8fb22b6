"""Model presets: the released shapes, the IsoFLOP family from the grid's shape function, the tiny
preset, and agreement of Levanter's own parameter and FLOP counts with steps.training.accounting."""

from __future__ import annotations

import math

import pytest

from steps.training.accounting import SODA_VOCAB_SIZE, forward_flops_per_token, params_total
from steps.training.presets import PRESETS, get_preset, isoflop_preset, levanter_config

RELEASED = {  # hidden, ffn, layers, heads, kv, head_dim (reference.md section 5)
    "soda-135m": (512, 1792, 15, 8, 8, 64),
    "soda-600m": (1024, 3072, 28, 16, 8, 128),
    "soda-1.7b": (2048, 6144, 28, 16, 8, 128),
    "soda-4b": (2560, 9728, 36, 32, 8, 128),
}


@pytest.mark.parametrize("name", RELEASED)
def test_released_shapes_exactly(name):
    s = get_preset(name).shape
    assert (s.hidden, s.intermediate, s.layers, s.heads, s.kv_heads, s.head_dim) == RELEASED[name]
    assert s.seq_len == 4096 and s.vocab_size == SODA_VOCAB_SIZE == 144_644
    assert s.tied_embeddings is False and s.qk_norm is True


def test_lr_width_and_accelerators():
    assert get_preset("soda-135m").width_for_lr == 1024  # the paper's formula used 1024 for the 135M
    assert get_preset("soda-600m").width_for_lr == 1024 and get_preset("soda-4b").width_for_lr == 2560
    assert [PRESETS[n].tpu for n in RELEASED] == ["v5p-32", "v5p-64", "v5p-128", "v5p-256"]


def test_isoflop_family_uses_the_grid_shape_function():
    from steps.scaling.grid import shape_for_width

    for width in (128, 768, 1024, 2048):
        assert get_preset(f"isoflop-d{width}").shape == shape_for_width(width) == isoflop_preset(width).shape
    anchor = get_preset("isoflop-d768").shape
    assert (anchor.layers, anchor.heads, anchor.intermediate) == (8, 6, 3072)
    assert round(params_total(anchor) / 1e6) == 298


def test_unknown_preset_is_a_clear_error():
    with pytest.raises(KeyError, match="unknown model preset 'soda-7b'.*isoflop-d<width>"):
        get_preset("soda-7b")
    with pytest.raises(ValueError, match="width must be positive"):
        get_preset("isoflop-d0")


def test_tiny_preset_is_small():
    s = get_preset("tiny").shape
    assert (s.hidden, s.layers, s.seq_len) == (64, 2, 256)


@pytest.mark.parametrize("name", [*RELEASED, "isoflop-d768", "isoflop-d1920", "tiny"])
def test_levanter_config_flops_and_param_formula_agree_with_accounting(name):
    shape = get_preset(name).shape
    config = levanter_config(shape)
    assert (config.hidden_dim, config.intermediate_dim, config.num_layers) == (shape.hidden, shape.intermediate, shape.layers)
    assert (config.num_heads, config.num_kv_heads, config.head_dim) == (shape.heads, shape.kv_heads, shape.head_dim)
    assert config.max_seq_len == shape.seq_len and config.tie_word_embeddings is False
    assert config.flops_per_token(shape.vocab_size, shape.seq_len) == forward_flops_per_token(shape)
    # Levanter's closed-form count leaves out Qwen3's QK-norm weights (2 x head_dim per layer).
    levanter_formula = config.total_trainable_params(shape.vocab_size)
    assert levanter_formula + shape.layers * 2 * shape.head_dim == params_total(shape)


def test_tiny_instance_parameter_count_is_exact():
    """A real (small-vocab) Levanter model built from the tiny preset's config: every array counted."""
    import haliax as hax
    import jax

    shape = get_preset("tiny").shape.replace(vocab_size=300)
    model = levanter_config(shape).build(hax.Axis("vocab", 300), key=jax.random.PRNGKey(0))
    leaves = [x for x in jax.tree_util.tree_leaves(model) if hasattr(x, "shape")]
    assert sum(math.prod(x.shape) for x in leaves) == params_total(shape)
    assert model.lm_head is not None  # untied


def test_importing_presets_stays_light():
    import subprocess
    import sys

    code = "import sys, steps.training.presets, steps.training.train, steps.training.mixtures, " \
           "steps.training.launch; print(sorted(m for m in ('jax','levanter','ray','torch') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
