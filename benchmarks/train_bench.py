"""Training throughput of the tiny preset on this CPU: Levanter (JAX, what the train step runs)
vs Hugging Face transformers (PyTorch), the same Qwen3 shape, batch and optimizer family.

    python benchmarks/train_bench.py [--batch 4] [--steps 10] [--vocab 144644]

Prints a Markdown table: compile / first-step time (reported separately) and steady-state
tokens/s. The 135M GPU MFU benchmark runs only where a GPU is present; otherwise it is skipped.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def bench_levanter(shape, batch: int, steps: int) -> tuple[float, float]:
    import equinox as eqx
    import haliax as hax
    import jax
    from levanter.models.lm_model import LmExample

    from steps.training.optimizer import SodaRecipe, levanter_optimizer
    from steps.training.presets import levanter_config

    config = levanter_config(shape)
    Vocab, Pos, Batch = hax.Axis("vocab", shape.vocab_size), config.max_Pos.resize(shape.seq_len), hax.Axis("batch", batch)
    model = config.build(Vocab, key=jax.random.PRNGKey(0))
    opt = levanter_optimizer(SodaRecipe(), batch, shape.hidden)
    opt = type(opt)(**{**opt.__dict__, "default_weight_decay_mask": False})
    tx = opt.build(1000)
    state = tx.init(eqx.filter(model, eqx.is_array))
    tokens = hax.named(jax.random.randint(jax.random.PRNGKey(1), (batch, shape.seq_len), 0, shape.vocab_size), (Batch, Pos))
    example = hax.vmap(LmExample.causal, Batch)(tokens)

    @eqx.filter_jit
    def step(model, state, example):
        loss, grads = eqx.filter_value_and_grad(lambda m: m.compute_next_token_loss(example, logsumexp_weight=1e-4).scalar())(model)
        updates, state = tx.update(grads, state, eqx.filter(model, eqx.is_array))
        return eqx.apply_updates(model, updates), state, loss

    t0 = time.perf_counter()
    model, state, loss = step(model, state, example)
    jax.block_until_ready(loss)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(steps):
        model, state, loss = step(model, state, example)
    jax.block_until_ready(loss)
    return first, batch * shape.seq_len * steps / (time.perf_counter() - t0)


def bench_torch(shape, batch: int, steps: int) -> tuple[float, float]:
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(0)
    model = Qwen3ForCausalLM(Qwen3Config(
        vocab_size=shape.vocab_size, hidden_size=shape.hidden, intermediate_size=shape.intermediate,
        num_hidden_layers=shape.layers, num_attention_heads=shape.heads, num_key_value_heads=shape.kv_heads,
        head_dim=shape.head_dim, max_position_embeddings=shape.seq_len, tie_word_embeddings=False))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.98, 0.98), weight_decay=0.033)
    ids = torch.randint(0, shape.vocab_size, (batch, shape.seq_len))

    def step():
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
        return loss

    t0 = time.perf_counter()
    step()
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return first, batch * shape.seq_len * steps / (time.perf_counter() - t0)


def main(argv=None) -> int:
    from steps.training.presets import get_preset

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--vocab", type=int, nargs="+", default=[144_644, 16_840],
                        help="vocab sizes (144,644: SODA; 16,840: the tests' tiny Qwen-style SODA tokenizer)")
    args = parser.parse_args(argv)
    threads = os.cpu_count()
    print(f"tiny preset (hidden 64, 2 layers, seq 256), batch {args.batch}, {args.steps} timed steps, "
          f"{threads} CPU threads\n")
    print("| trainer | vocab | first step incl. compile (s) | steady tokens/s |")
    print("|---|---|---|---|")
    for vocab in args.vocab:
        shape = get_preset("tiny").shape.replace(vocab_size=vocab)
        for name, fn in (("Levanter (JAX, Cautious)", bench_levanter), ("transformers (PyTorch, AdamW)", bench_torch)):
            first, tps = fn(shape, args.batch, args.steps)
            print(f"| {name} | {vocab:,} | {first:.1f} | {tps:,.0f} |", flush=True)
    try:
        import jax

        gpus = [d for d in jax.devices() if d.platform == "gpu"]
    except Exception:
        gpus = []
    if not gpus:
        print("\n135M GPU tokens/s and MFU: skipped (no GPU on this machine)")
    else:
        print("\n135M GPU MFU: run the train step with preset soda-135m on the GPU host; Levanter logs "
              "throughput/mfu to metrics.jsonl")
    return 0


if __name__ == "__main__":
    sys.exit(main())
