"""Generation samples on the logits' device and gives the tokens the previous sampler gave.

The previous sampler (logits copied to the CPU, the whole vocabulary sorted, one
`torch.multinomial` per row, a DynamicCache fed full logits) is kept here as the reference,
`previous_generate`. The models are tiny random Qwen3s (hidden 32, vocabulary 4,096): `peaked`, its
LM head scaled so that nuclei are small (the top-k prefilter's branch), and `flat`, untrained,
whose nuclei hold most of the vocabulary (the full-sort fallback).
"""

from __future__ import annotations

import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from eval import model as eval_model  # noqa: E402
from eval.model import TorchLM, example_seed, nucleus_mask, sample_tokens, top_p_filter  # noqa: E402

VOCAB = 4096


# ---- the previous implementation, as it was (the reference) --------------------------------


def previous_sample_next(logits, temperature, top_p, generators) -> list[int]:
    logits = logits.float().cpu()
    if temperature == 0:
        return logits.argmax(dim=-1).tolist()
    filtered = top_p_filter(logits / temperature, top_p)
    probs = torch.softmax(filtered, dim=-1)
    return [int(torch.multinomial(probs[i], 1, generator=g)) for i, g in enumerate(generators)]


def previous_generate_batch(model, prompts, generators, temperature, top_p, max_new_tokens, stop_id):
    n, width = len(prompts), max(p.size for p in prompts)
    ids = torch.zeros((n, width), dtype=torch.long)
    mask = torch.zeros((n, width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - p.size:] = torch.from_numpy(p)
        mask[i, width - p.size:] = 1
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    out = [[] for _ in range(n)]
    done = [False] * n
    with torch.no_grad():
        res = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True)
        past, logits, last = res.past_key_values, res.logits[:, -1], pos[:, -1]
        for _ in range(max_new_tokens):
            tokens = previous_sample_next(logits, temperature, top_p, generators)
            for i, t in enumerate(tokens):
                if not done[i]:
                    out[i].append(t)
                    done[i] = t == stop_id
            if all(done):
                break
            step = torch.tensor(tokens, dtype=torch.long)[:, None]
            mask = torch.cat([mask, torch.ones((n, 1), dtype=torch.long)], dim=1)
            last = last + 1
            res = model(input_ids=step, attention_mask=mask, position_ids=last[:, None], past_key_values=past,
                        use_cache=True)
            past, logits = res.past_key_values, res.logits[:, -1]
    return [(o, d) for o, d in zip(out, done)]


def previous_generate(model, prompts, *, temperature, top_p, max_new_tokens, stop_id, seed, batch_size):
    results = []
    for a in range(0, len(prompts), batch_size):
        chunk = prompts[a:a + batch_size]
        gens = [torch.Generator().manual_seed(example_seed(seed, a + i)) for i in range(len(chunk))]
        results.extend(previous_generate_batch(model, chunk, gens, temperature, top_p, max_new_tokens, stop_id))
    return results


# ---- fixtures ---------------------------------------------------------------------------------


def _tiny_model(root: str, name: str, head_scale: float) -> str:
    from transformers import Qwen3Config, Qwen3ForCausalLM

    out = os.path.join(root, name)
    torch.manual_seed(0)
    cfg = Qwen3Config(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, head_dim=16, max_position_embeddings=512,
                      tie_word_embeddings=False)
    model = Qwen3ForCausalLM(cfg)
    with torch.no_grad():
        model.lm_head.weight.mul_(head_scale)
    model.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("fastgen"))
    return {"peaked": _tiny_model(root, "peaked", 30.0), "flat": _tiny_model(root, "flat", 1.0)}


@pytest.fixture(scope="module")
def prompts():
    rng = np.random.default_rng(0)
    return [rng.integers(0, VOCAB, size=int(rng.integers(2, 24))) for _ in range(5)]


def _ids(gens) -> list:
    return [(g.ids, g.terminated) for g in gens]


# ---- top-p -------------------------------------------------------------------------------------


def _rows_of_every_shape() -> "torch.Tensor":
    """Rows from nearly flat to sharply peaked, one with a long exact tie."""
    g = torch.Generator().manual_seed(0)
    rows = [torch.randn(VOCAB, generator=g) * s for s in (0.1, 1.0, 3.0, 6.0, 12.0)]
    tied = torch.full((VOCAB,), -20.0)
    tied[:3] = torch.tensor([5.0, 4.0, 3.0])
    return torch.stack(rows + [tied])


@pytest.mark.parametrize("top_p", [1e-6, 0.3, 0.8, 0.95, 0.999, 1.0])
@pytest.mark.parametrize("k", [1, 16, 1024, VOCAB])
def test_nucleus_mask_is_the_full_sorts_nucleus(top_p, k):
    logits = _rows_of_every_shape()
    expected = torch.isfinite(top_p_filter(logits, top_p))
    assert torch.equal(nucleus_mask(logits, top_p, k=k), expected)
    assert bool(expected.any(-1).all())  # at least one token


def test_both_branches_of_the_prefilter_are_taken(monkeypatch):
    """With k=16 the sharp rows' nuclei fit in the top 16 (topk branch), the flat rows' do not
    (full sort); counting the full sorts shows which rows took it."""
    logits = _rows_of_every_shape()
    sorted_rows = []
    real = eval_model.top_p_filter

    def counting(x, top_p):
        sorted_rows.append(x.shape[0])
        return real(x, top_p)

    monkeypatch.setattr(eval_model, "top_p_filter", counting)
    mask = nucleus_mask(logits, 0.8, k=16)
    sizes = mask.sum(-1).tolist()
    assert sorted_rows == [sum(s > 16 for s in sizes)] and 0 < sorted_rows[0] < len(sizes)
    monkeypatch.setattr(eval_model, "top_p_filter", real)
    assert torch.equal(mask, torch.isfinite(top_p_filter(logits, 0.8)))


def test_top_p_keeps_the_crossing_token():
    logits = torch.log(torch.tensor([[0.05, 0.5, 0.15, 0.3]]))
    for k in (2, 3, 4):
        assert nucleus_mask(logits, 0.8, k=k)[0].tolist() == [False, True, False, True]  # 0.5 + 0.3 reaches 0.8
        assert nucleus_mask(logits, 0.81, k=k)[0].tolist() == [False, True, True, True]
        assert nucleus_mask(logits, 0.01, k=k)[0].tolist() == [False, True, False, False]


# ---- the draw ------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [8, 1024])
@pytest.mark.parametrize("temperature,top_p", [(0.0, 0.8), (0.9, 0.8), (1.3, 0.95), (0.5, 0.3), (1.0, 1.0)])
def test_sample_tokens_draws_what_torch_multinomial_drew(monkeypatch, k, temperature, top_p):
    monkeypatch.setattr(eval_model, "TOP_K_PREFILTER", k)
    logits = _rows_of_every_shape()[:5]
    for seed in range(20):
        old = previous_sample_next(logits, temperature, top_p,
                                   [torch.Generator().manual_seed(example_seed(seed, i)) for i in range(5)])
        new = sample_tokens(logits, temperature, top_p,
                            [torch.Generator().manual_seed(example_seed(seed, i)) for i in range(5)])
        assert new.shape == (5,) and new.device == logits.device and new.tolist() == old


def test_sampling_arguments_are_checked():
    logits = torch.zeros((1, 8))
    with pytest.raises(ValueError, match="temperature"):
        sample_tokens(logits, -1.0, 0.8, [torch.Generator()])
    with pytest.raises(ValueError, match="top_p"):
        sample_tokens(logits, 1.0, 0.0, [torch.Generator()])


# ---- generation ----------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["peaked", "flat"])
@pytest.mark.parametrize("temperature", [0.0, 0.9])
def test_generate_gives_the_previous_tokens(models, prompts, which, temperature):
    kw = dict(temperature=temperature, top_p=0.8, max_new_tokens=12, stop_id=-1, seed=7)
    lm = TorchLM(models[which], device="cpu", cache="dynamic")
    reference = previous_generate(lm.model, prompts, batch_size=3, **kw)
    for cache in ("dynamic", "static"):
        lm.cache = cache
        for batch_size in (1, 3, 5):
            assert _ids(lm.generate(prompts, batch_size=batch_size, **kw)) == reference, (cache, batch_size)


def test_a_flat_model_takes_the_full_sort_and_a_peaked_one_does_not(models, prompts, monkeypatch):
    """The two models above do exercise both branches of the prefilter during generation."""
    calls = {"peaked": 0, "flat": 0}
    real = eval_model.top_p_filter
    for which in calls:
        def counting(x, top_p, which=which):
            calls[which] += 1
            return real(x, top_p)

        monkeypatch.setattr(eval_model, "top_p_filter", counting)
        monkeypatch.setattr(eval_model, "TOP_K_PREFILTER", 256)
        TorchLM(models[which], device="cpu").generate(prompts, temperature=0.9, top_p=0.8, max_new_tokens=6,
                                                      stop_id=-1, seed=0)
    assert calls["peaked"] == 0 and calls["flat"] > 0


def test_stop_id_ends_each_row_and_the_batch(models, prompts):
    lm = TorchLM(models["peaked"], device="cpu")
    kw = dict(temperature=0.9, top_p=0.8, max_new_tokens=16, seed=2, batch_size=5)
    free = [g.ids for g in lm.generate(prompts, stop_id=-1, **kw)]
    stop = free[1][3]  # row 1 stops at its 4th token; others wherever the same id comes, or never
    stopped = lm.generate(prompts, stop_id=stop, **kw)
    for ids, g in zip(free, stopped):
        cut = ids.index(stop) + 1 if stop in ids else len(ids)
        assert g.ids == ids[:cut] and g.terminated == (stop in ids)
    assert _ids(stopped) == previous_generate(lm.model, prompts, stop_id=stop, temperature=0.9, top_p=0.8,
                                              max_new_tokens=16, seed=2, batch_size=5)
    # one prompt a batch: a batch ends at its stop id, one forward pass per token (the prefill's
    # logits give the first), none after the last
    calls = []
    forward = lm.model.forward

    def counted(*args, **kwargs):
        calls.append(1)
        return forward(*args, **kwargs)

    lm.model.forward = counted
    single = lm.generate(prompts, stop_id=stop, **{**kw, "batch_size": 1})
    assert _ids(single) == _ids(stopped) and len(single[1].ids) == 4
    assert len(calls) == sum(len(g.ids) for g in single)


def test_prefill_keeps_the_last_positions_logits_only(models, prompts):
    lm = TorchLM(models["peaked"], device="cpu")
    shapes = []
    forward = lm.model.forward

    def recorded(*args, **kwargs):
        out = forward(*args, **kwargs)
        shapes.append(tuple(out.logits.shape))
        return out

    lm.model.forward = recorded
    lm.generate(prompts, temperature=0.0, top_p=0.8, max_new_tokens=3, stop_id=-1, seed=0, batch_size=5)
    assert shapes == [(5, 1, VOCAB)] * 3  # prefill, then two steps; none after the last token


def test_an_unknown_cache_is_a_clear_error(models, prompts):
    lm = TorchLM(models["peaked"], device="cpu", cache="paged")
    with pytest.raises(ValueError, match="cache 'paged'"):
        lm.generate(prompts, temperature=0.0, top_p=0.8, max_new_tokens=2, stop_id=-1, seed=0)
