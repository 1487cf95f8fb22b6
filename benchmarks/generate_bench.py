"""Generated tokens/s of SODA's sampler (eval.model.TorchLM.generate) against transformers' `generate`
and against the previous SODA sampler, on one random Qwen3 with the SODA vocabulary (144,644).

The model is small (`--hidden` 512, `--layers` 4) so that, as in real evaluations of the small
models, the LM head and top-p over 144k tokens weigh as much as the transformer. Its LM head is
scaled (`--head-scale`) so the next-token distribution is peaked like a trained model's (the
top-p 0.8 nucleus holds a few hundred tokens, printed); an untrained head is nearly flat (the
nucleus is most of the vocabulary), the `flat` rows, where every row takes the full-sort fallback.

Rows, all on the same left-padded prompts (`--batch` prompts of 16-64 random ids), `--new-tokens`
tokens each (no stop token):

- transformers: `model.generate(do_sample=True, temperature, top_p, top_k=0)` (or greedy);
- previous sampler: `TorchLM.generate` as it was at `--old-ref` (`git show`): logits copied to the
  CPU, the whole vocabulary sorted, one `torch.multinomial` per row;
- this sampler, with a dynamic and with a static KV cache.

Each row runs once for two tokens before it is timed. Prints a Markdown table and whether the
tokens match (this sampler against the previous one: same seeds, same tokens; greedy against
transformers).

    python benchmarks/generate_bench.py [--new-tokens 200] [--batch 8] [--flat-tokens 40] [--old-ref HEAD] [--threads 1]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from benchmarks.previous_code import load_previous  # noqa: E402
from eval.model import TOP_K_PREFILTER, TorchLM, left_padded, nucleus_mask  # noqa: E402

VOCAB = 144_644
TEMPERATURE, TOP_P, SEED = 0.9, 0.8, 0


def make_model(out: str, hidden: int, layers: int, head_scale: float) -> str:
    """A random Qwen3 of the SODA vocabulary, its LM head multiplied by `head_scale`, saved as an HF dir."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(0)
    heads = hidden // 64
    cfg = Qwen3Config(vocab_size=VOCAB, hidden_size=hidden, intermediate_size=3 * hidden, num_hidden_layers=layers,
                      num_attention_heads=heads, num_key_value_heads=max(1, heads // 2), head_dim=64,
                      max_position_embeddings=4096, tie_word_embeddings=False, eos_token_id=None,
                      bos_token_id=None, pad_token_id=0)
    model = Qwen3ForCausalLM(cfg)
    with torch.no_grad():
        model.lm_head.weight.mul_(head_scale)
    model.save_pretrained(out)
    return out


def prompts_for(batch: int) -> list[np.ndarray]:
    rng = np.random.default_rng(SEED)
    return [rng.integers(1, VOCAB, size=int(rng.integers(16, 65))) for _ in range(batch)]


def nucleus_sizes(lm, prompts) -> list[int]:
    """Nucleus size (top-p at TEMPERATURE) of each prompt's next-token distribution."""
    import torch

    ids, mask = left_padded(prompts)
    with torch.inference_mode():
        logits = lm.model(input_ids=ids, attention_mask=mask, logits_to_keep=1).logits[:, -1].float()
    return nucleus_mask(logits / TEMPERATURE, TOP_P).sum(-1).tolist()


def run_hf(model, prompts, new_tokens: int, temperature: float) -> tuple[float, list[list[int]]]:
    import torch

    ids, mask = left_padded(prompts)
    sampling = dict(do_sample=True, temperature=temperature, top_p=TOP_P, top_k=0) if temperature else \
        dict(do_sample=False)
    torch.manual_seed(SEED)
    start = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new_tokens,
                             min_new_tokens=new_tokens, pad_token_id=0, **sampling)
    wall = time.perf_counter() - start
    return wall, out[:, ids.shape[1]:].tolist()


def run_soda(lm, prompts, new_tokens: int, temperature: float) -> tuple[float, list[list[int]]]:
    start = time.perf_counter()
    gens = lm.generate(prompts, temperature=temperature, top_p=TOP_P, max_new_tokens=new_tokens, stop_id=-1,
                       seed=SEED, batch_size=len(prompts))
    wall = time.perf_counter() - start
    return wall, [g.ids for g in gens]


def bench(rows: list, name: str, fn, model, prompts, new_tokens: int, temperature: float):
    fn(model, prompts, 2, temperature)  # warm-up: first-call costs stay out of the timing
    wall, ids = fn(model, prompts, new_tokens, temperature)
    generated = sum(len(i) for i in ids)
    rows.append((name, wall, generated / wall))
    print(f"  {name}: {wall:.1f} s, {generated / wall:.1f} tokens/s", flush=True)
    return ids


def table(title: str, rows: list) -> None:
    base = rows[0][2]
    print(f"\n{title}\n\n| generation | wall | generated tokens/s | vs transformers |\n|---|---:|---:|---:|")
    for name, wall, tps in rows:
        print(f"| {name} | {wall:.1f} s | {tps:.1f} | {tps / base:.2f}x |")


def scenario(label: str, hf_dir: str, prompts, new_tokens: int, old, greedy: bool) -> None:
    import torch

    lm = TorchLM(hf_dir, device="cpu", cache="dynamic")
    sizes = nucleus_sizes(lm, prompts)
    print(f"\n{label}: top-p {TOP_P} nucleus at temperature {TEMPERATURE}, first step: {sorted(sizes)} tokens "
          f"(top-k prefilter {TOP_K_PREFILTER}; {sum(s > TOP_K_PREFILTER for s in sizes)} rows fall back)",
          flush=True)
    previous = old.TorchLM(hf_dir, device="cpu") if old is not None else None
    static = TorchLM(hf_dir, device="cpu", cache="static")
    static.model = lm.model  # one copy of the weights
    if previous is not None:
        previous.model = lm.model
    modes = [("sampling", TEMPERATURE)] + ([("greedy", 0.0)] if greedy else [])
    for mode, temperature in modes:
        rows: list = []
        hf_ids = bench(rows, "transformers generate", lambda m, p, n, t: run_hf(m.model, p, n, t), lm, prompts,
                       new_tokens, temperature)
        old_ids = bench(rows, "previous SODA sampler", run_soda, previous, prompts, new_tokens,
                        temperature) if previous is not None else None
        dyn_ids = bench(rows, "this sampler, dynamic cache", run_soda, lm, prompts, new_tokens, temperature)
        st_ids = bench(rows, "this sampler, static cache", run_soda, static, prompts, new_tokens, temperature)
        table(f"{label}, {mode}, batch {len(prompts)} x {new_tokens} new tokens, {torch.get_num_threads()} threads",
              rows)
        if old_ids is not None:
            print(f"\nsame tokens as the previous sampler: dynamic {dyn_ids == old_ids}, static {st_ids == old_ids}")
        if not temperature:
            print(f"same tokens as transformers (greedy): dynamic {dyn_ids == hf_ids}, static {st_ids == hf_ids}")
    del lm, static, previous


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new-tokens", type=int, default=200)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--head-scale", type=float, default=8.0)
    parser.add_argument("--flat-tokens", type=int, default=40, help="new tokens of the flat rows (0: skip them)")
    parser.add_argument("--old-ref", default="HEAD", help="git revision of the previous sampler ('' to skip it)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import torch
    import transformers

    if args.threads:
        torch.set_num_threads(args.threads)

    transformers.logging.set_verbosity_error()
    old = load_previous(args.old_ref, "eval/model.py", "old_eval_model") if args.old_ref else None
    prompts = prompts_for(args.batch)
    with tempfile.TemporaryDirectory(prefix="soda-generate-bench-") as tmp:
        peaked = make_model(os.path.join(tmp, "peaked"), args.hidden, args.layers, args.head_scale)
        scenario(f"peaked (LM head x{args.head_scale:g})", peaked, prompts, args.new_tokens, old, greedy=True)
        if args.flat_tokens:
            flat = make_model(os.path.join(tmp, "flat"), args.hidden, args.layers, 1.0)
            scenario("flat (untrained LM head)", flat, prompts, args.flat_tokens, old, greedy=False)


if __name__ == "__main__":
    main()
