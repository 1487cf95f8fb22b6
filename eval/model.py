"""Models for scoring: one interface over an HF export (torch) and a Levanter checkpoint (JAX).

    model = load_scoring_model(path)             # an HF dir, a train-step output, or a checkpoint dir
    lps = model.logprobs([ids0, ids1, ...])      # per-token log-probs, aligned with ids (lps[i][0] = NaN)
    outs = model.generate([prompt0, ...], temperature=0.5, top_p=0.8, max_new_tokens=200,
                          stop_id=text_end_id, seed=0)   # -> [Generation(ids, terminated)]

`path` may be
- an HF model directory (config.json + weights): `TorchLM`, transformers' AutoModelForCausalLM in
  float32 on cuda if torch sees one, else CPU;
- a train step's output (steps.training.train: `checkpoints/step-N/`, `summary.json`, maybe
  `hf/step-N/`) or one `checkpoints/step-N` directory: `LevanterLM`, Levanter's own loading
  (`levanter.checkpoint.load_checkpoint` of the model subtree into the Qwen3 config rebuilt from
  the train summary's shape) and a JAX forward pass on JAX's first device (the node's GPU or TPU
  when the install has its JAX: `infra/install.sh --accelerator`). Generation from a Levanter
  checkpoint converts it once to HF with Levanter's HF converter and samples with torch.

Both are deterministic for likelihoods: float32, sequences right-padded in batches (causal
attention never looks at the padding), TF32 off. Sampling is seeded per example
(`example_seed(seed, index)`), so an example's sample does not depend on the batch it sits in.

Generation runs on the model's device: left-padded prefill (logits of the last position only), a
KV cache (`CACHES`), and per step `sample_tokens` on the (B, V) logits where they are, exact top-p
through a top-k prefilter (`nucleus_mask`); only the B sampled ids come to the host, to check for
the stop id. benchmarks/generate_bench.py times it against transformers' `generate`.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from steps.training.train_output import TrainOutput, is_hf_dir, latest_checkpoint_of
from pipeline.fileio import exists, join, local_copy
from steps.training.accounting import ModelShape
from steps.training.presets import levanter_config
from steps.training.warm_start import levanter_config_from_hf

logger = logging.getLogger(__name__)


@dataclass
class Generation:
    ids: list[int]  # generated ids, the stop id included when it was produced
    terminated: bool  # produced stop_id within max_new_tokens


def example_seed(seed: int, index: int) -> int:
    """A 63-bit seed for example `index` of a run seeded `seed` (independent of batching)."""
    return int(np.random.SeedSequence([seed, index]).generate_state(2, dtype=np.uint32).view(np.uint64)[0] >> 1)


def _batches(n: int, batch_size: int):
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    for start in range(0, n, batch_size):
        yield start, min(n, start + batch_size)


def _as_id_lists(seqs: Sequence[Sequence[int]]) -> list[np.ndarray]:
    out = [np.asarray(s, dtype=np.int64).reshape(-1) for s in seqs]
    for i, s in enumerate(out):
        if s.size < 2:
            raise ValueError(f"sequence {i} has {s.size} tokens; scoring needs at least 2 (prepend BOS)")
    return out


# ---- sampling (torch) ---------------------------------------------------------------------


def left_padded(prompts: Sequence[np.ndarray]):
    """(ids, attention mask), (B, longest) int64 torch tensors with each prompt at the right end, so
    every row's next token comes at the same position."""
    import torch

    width = max(p.size for p in prompts)
    ids = torch.zeros((len(prompts), width), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, width - p.size:] = torch.from_numpy(np.asarray(p, dtype=np.int64))
        mask[i, width - p.size:] = 1
    return ids, mask


def top_p_filter(logits, top_p: float):
    """Logits with everything outside the nucleus set to -inf: keep the most probable tokens
    until their mass reaches top_p (the token that crosses top_p is kept; at least one token)."""
    import torch

    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    if top_p >= 1:
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs = torch.softmax(sorted_logits, dim=-1)
    mass_before = torch.cumsum(probs, dim=-1) - probs
    sorted_logits = sorted_logits.masked_fill(mass_before >= top_p, float("-inf"))
    return torch.empty_like(logits).scatter_(-1, order, sorted_logits)


TOP_K_PREFILTER = 1024  # candidates a row's nucleus is first looked for in (nucleus_mask)


def nucleus_mask(logits, top_p: float, k: Optional[int] = None):
    """(B, V) bool: each row's nucleus, exactly `top_p_filter`'s, computed on the logits' device.

    The nucleus is a prefix of the row sorted by probability, so when the `k` (TOP_K_PREFILTER)
    most probable tokens already hold top_p of the mass (softmax over the whole row), the nucleus
    lies inside them and `topk` replaces the full sort. Rows whose top-k mass falls short of top_p
    (a flat distribution: an untrained model, a high temperature) take `top_p_filter`'s full sort.
    Ties at the boundary may be broken differently, and a mass within float rounding of top_p may
    fall on the other side, as it may between two sort kernels."""
    import torch

    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    if top_p >= 1:
        return torch.ones_like(logits, dtype=torch.bool)
    k = min(TOP_K_PREFILTER if k is None else k, logits.shape[-1])
    top, order = torch.topk(logits, k, dim=-1)  # sorted, most probable first
    probs = torch.exp(top - torch.logsumexp(logits, dim=-1, keepdim=True))
    mass = probs.cumsum(dim=-1)
    mask = torch.zeros_like(logits, dtype=torch.bool).scatter_(-1, order, (mass - probs) < top_p)
    short = mass[:, -1] < top_p
    if bool(short.any()):  # one bool to the host
        rows = short.nonzero()[:, 0]
        mask[rows] = torch.isfinite(top_p_filter(logits[rows], top_p))
    return mask


def sample_tokens(logits, temperature: float, top_p: float, generators):
    """One token per row of `logits` (B, V), as a (B,) tensor on the logits' device: greedy at
    temperature 0, else temperature + top-p sampling with row i drawn by `generators[i]` (a
    torch.Generator on the logits' device, seeded per example, so a row's draw does not depend
    on the batch it sits in).

    The draw is torch.multinomial's own for one sample, argmax(p / q) with q ~ Exp(1) drawn over
    the whole vocabulary from the row's generator: on CPU the tokens are bit for bit those of
    `torch.multinomial(probs[i], 1, generator=g)`, the sampler SODA used before (logits copied to
    the host, sorted and drawn row by row); on CUDA the same seeds draw from CUDA generators (a
    different stream, the same distribution). Nothing (B, V) leaves the device."""
    import torch

    x = logits.float()
    if temperature == 0:
        return x.argmax(dim=-1)
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    x = x / temperature
    probs = torch.softmax(x.masked_fill(~nucleus_mask(x, top_p), float("-inf")), dim=-1)
    noise = torch.empty_like(probs)
    for row, g in zip(noise, generators):
        row.exponential_(1, generator=g)
    return (probs / noise).argmax(dim=-1)


def sample_next(logits, temperature: float, top_p: float, generators) -> list[int]:
    """`sample_tokens` as a list of ints (the B chosen ids are all that comes to the host)."""
    return sample_tokens(logits, temperature, top_p, generators).tolist()


class ScoringModel:
    """What the eval tasks need from a model."""

    backend: str = "?"
    source: str = ""

    def logprobs(self, seqs: Sequence[Sequence[int]], batch_size: int = 8) -> list[np.ndarray]:
        raise NotImplementedError

    def generate(self, prompts: Sequence[Sequence[int]], *, temperature: float, top_p: float,
                 max_new_tokens: int, stop_id: int, seed: int, batch_size: int = 8) -> list[Generation]:
        raise NotImplementedError


# ---- HF / torch ---------------------------------------------------------------------------


# "static": transformers' StaticCache, allocated once for prompt + max_new_tokens (fixed shapes, what
# CUDA graphs and torch.compile want, no concatenation at each step); "dynamic": a DynamicCache that
# grows a step at a time; "auto": static on an accelerator, dynamic on CPU, where static attends
# over the whole preallocated cache at each step and measured 2-5% slower (generate_bench.py).
# Both give the same tokens.
CACHES = ("auto", "static", "dynamic")


class TorchLM(ScoringModel):
    backend = "hf-torch"

    def __init__(self, hf_dir: str, device: Optional[str] = None, cache: str = "auto"):
        import torch
        from transformers import AutoModelForCausalLM

        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.source = hf_dir
        self.cache = cache  # KV cache for generation, see CACHES
        try:
            model = AutoModelForCausalLM.from_pretrained(local_path(hf_dir), torch_dtype=torch.float32)
        except OSError as exc:
            raise OSError(f"could not load an HF causal LM from {hf_dir!r}: {exc}") from exc
        self.model = model.eval().to(self.device)
        self.vocab_size = int(self.model.config.vocab_size)

    def logprobs(self, seqs, batch_size: int = 8) -> list[np.ndarray]:
        import torch

        seqs = _as_id_lists(seqs)
        out: list[np.ndarray] = []
        for a, b in _batches(len(seqs), batch_size):
            chunk = seqs[a:b]
            width = max(s.size for s in chunk)
            ids = torch.zeros((len(chunk), width), dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for i, s in enumerate(chunk):
                ids[i, : s.size] = torch.from_numpy(s)
                mask[i, : s.size] = 1
            ids, mask = ids.to(self.device), mask.to(self.device)
            with torch.no_grad():
                logits = self.model(input_ids=ids, attention_mask=mask).logits.float()
                # log p(ids[t] | ids[:t]) = logit[t-1, ids[t]] - logsumexp(logit[t-1])
                target = logits[:, :-1].gather(-1, ids[:, 1:, None])[..., 0]
                lp = (target - torch.logsumexp(logits[:, :-1], dim=-1)).cpu().numpy().astype(np.float64)
            for i, s in enumerate(chunk):
                out.append(np.concatenate([[np.nan], lp[i, : s.size - 1]]))
        return out

    def generate(self, prompts, *, temperature, top_p, max_new_tokens, stop_id, seed, batch_size=8):
        import torch

        prompts = [np.asarray(p, dtype=np.int64).reshape(-1) for p in prompts]
        results: list[Generation] = []
        for a, b in _batches(len(prompts), batch_size):
            chunk = prompts[a:b]
            gens = [torch.Generator(device=self.device).manual_seed(example_seed(seed, a + i))
                    for i in range(len(chunk))]
            results.extend(self._generate_batch(chunk, gens, temperature, top_p, max_new_tokens, stop_id))
        return results

    def _uses_static_cache(self) -> bool:
        if self.cache not in CACHES:
            raise ValueError(f"cache {self.cache!r}: choose one of {CACHES}")
        return self.cache == "static" or (self.cache == "auto" and self.device != "cpu")

    def _generate_batch(self, prompts, generators, temperature, top_p, max_new_tokens, stop_id):
        """Left-padded prefill (logits of the last position only), then one token per step; the
        sampled ids stay on the device and feed the next step, only B ids a step reach the host."""
        import torch

        ids, prompt_mask = left_padded(prompts)
        n, width = ids.shape
        total = width + max_new_tokens
        # the generated columns are all real tokens
        mask = torch.cat([prompt_mask, torch.ones((n, max_new_tokens), dtype=torch.long)], dim=1)
        ids, mask = ids.to(self.device), mask.to(self.device)
        pos = (mask[:, :width].cumsum(-1) - 1).clamp(min=0)
        cache_pos = torch.arange(total, device=self.device)
        static = self._uses_static_cache()
        if static:
            from transformers import StaticCache

            past = StaticCache(config=self.model.config, max_cache_len=total)
        else:
            from transformers import DynamicCache

            past = DynamicCache()
        out = [[] for _ in range(n)]
        done = [False] * n
        with torch.inference_mode():
            res = self.model(input_ids=ids, attention_mask=mask if static else mask[:, :width], position_ids=pos,
                             past_key_values=past, use_cache=True, cache_position=cache_pos[:width],
                             logits_to_keep=1)
            logits, last = res.logits[:, -1], pos[:, -1:]
            for step in range(max_new_tokens):
                tokens = sample_tokens(logits, temperature, top_p, generators)
                for i, t in enumerate(tokens.tolist()):
                    if not done[i]:
                        out[i].append(t)
                        done[i] = t == stop_id
                if all(done) or step == max_new_tokens - 1:
                    break
                here = width + step
                last = last + 1
                res = self.model(input_ids=tokens[:, None], attention_mask=mask if static else mask[:, : here + 1],
                                 position_ids=last, past_key_values=past, use_cache=True,
                                 cache_position=cache_pos[here : here + 1])
                logits = res.logits[:, -1]
        return [Generation(o, d) for o, d in zip(out, done)]


# ---- Levanter / JAX -------------------------------------------------------------------------


class LevanterLM(ScoringModel):
    """A train step's Levanter checkpoint, scored with Levanter's Qwen3 model in JAX (float32)."""

    backend = "levanter-jax"

    def __init__(self, path: str, tokenizer: Optional[str] = None, bucket: int = 64):
        # JAX takes 75% of a GPU at start-up by default; generation (torch) and the TTS judges share it
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
        self.checkpoint = latest_checkpoint_of(path)
        run = TrainOutput.of(path) or TrainOutput.of(self.checkpoint)
        if run is None:
            raise FileNotFoundError(f"{path!r}: no train-step summary.json next to the checkpoint; the model "
                                    "shape comes from it (pass the train step's output directory)")
        self.train_output = run.path
        self.summary = run.summary()
        self.source = self.checkpoint
        self.tokenizer = tokenizer or self._tokenizer_from_run()
        self.bucket = bucket
        self.config = self._levanter_config()
        self.vocab_size = int(self.summary["model"]["vocab_size"])
        self.model = self._load()
        self._forward = None
        self._torch: Optional[TorchLM] = None

    def _tokenizer_from_run(self) -> Optional[str]:
        hf = self.summary.get("hf_export")
        if hf and exists(join(hf, "tokenizer.json")):
            return hf
        return None

    def _levanter_config(self):
        """The run's Qwen3 config, with plain (vanilla) attention: exact, any length, any device."""
        import dataclasses

        from levanter.layers.attention import AttentionBackend

        return dataclasses.replace(self._run_config(), attn_backend=AttentionBackend.VANILLA)

    def _run_config(self):
        warm = join(self.train_output, "warm_start")
        if exists(join(warm, "config.json")):
            return levanter_config_from_hf(warm, self.summary["seq_len"], self.tokenizer or warm)
        shape = ModelShape(**self.summary["model"])
        return levanter_config(shape, tokenizer=self.tokenizer)

    def _load(self):
        import equinox as eqx
        import jax
        from haliax import Axis
        from levanter.checkpoint import load_checkpoint
        from levanter.utils.jax_utils import is_inexact_arrayish

        vocab = Axis("vocab", self.vocab_size)
        shaped = eqx.filter_eval_shape(self.config.build, vocab, key=jax.random.PRNGKey(0))
        trainable, rest = eqx.partition(shaped, is_inexact_arrayish)
        try:
            with self._mesh():
                trainable = load_checkpoint(trainable, self.checkpoint, subpath="model")
        except Exception as exc:  # noqa: BLE001 - shape mismatches come from many places
            raise RuntimeError(f"could not load the model from Levanter checkpoint {self.checkpoint!r} with "
                               f"shape {self.summary['model']}: {exc}") from exc
        logger.info("loaded Levanter checkpoint %s on %s", self.checkpoint, jax.local_devices()[0])
        return eqx.combine(trainable, rest)

    @staticmethod
    def _mesh():
        """A one-device mesh (the first local JAX device) with Levanter's axis names."""
        import haliax
        import jax
        from haliax.partitioning import ResourceAxis
        from levanter.utils.mesh import create_mesh_from_axis_specs

        axes = {ResourceAxis.REPLICA: 1, ResourceAxis.DATA: 1, ResourceAxis.MODEL: 1, ResourceAxis.CONTEXT: 1}
        mesh = create_mesh_from_axis_specs(ici_axes=axes, dcn_axes={}, devices=[jax.local_devices()[0]])
        return haliax.partitioning.set_mesh(mesh)

    def _forward_fn(self):
        if self._forward is None:
            import equinox as eqx
            import haliax as hax
            import jax
            import jax.numpy as jnp
            from levanter.layers.attention import AttentionMask

            model = self.model

            @eqx.filter_jit
            def forward(model, ids):
                batch = hax.Axis("batch", ids.shape[0])
                pos = model.config.max_Pos.resize(ids.shape[1])
                tokens = hax.named(ids, (batch, pos))
                logits = model(tokens, AttentionMask.causal()).rearrange((batch, pos, model.Vocab)).array
                logits = logits.astype(jnp.float32)
                target = jnp.take_along_axis(logits[:, :-1], ids[:, 1:, None], axis=-1)[..., 0]
                return target - jax.nn.logsumexp(logits[:, :-1], axis=-1)

            def run(ids):
                with self._mesh():
                    return forward(model, ids)

            self._forward = run
        return self._forward

    def logprobs(self, seqs, batch_size: int = 8) -> list[np.ndarray]:
        import jax.numpy as jnp

        seqs = _as_id_lists(seqs)
        fwd = self._forward_fn()
        out: list[np.ndarray] = []
        for a, b in _batches(len(seqs), batch_size):
            chunk = seqs[a:b]
            longest = max(s.size for s in chunk)
            width = -(-longest // self.bucket) * self.bucket  # few distinct shapes: few compiles
            ids = np.zeros((batch_size, width), dtype=np.int32)  # fixed batch: one compile per width
            for i, s in enumerate(chunk):
                ids[i, : s.size] = s
            lp = np.asarray(fwd(jnp.asarray(ids)), dtype=np.float64)
            for i, s in enumerate(chunk):
                out.append(np.concatenate([[np.nan], lp[i, : s.size - 1]]))
        return out

    def export_hf(self, out_dir: str) -> str:
        """Write the checkpoint as an HF model directory with Levanter's converter."""
        converter = self.config.hf_checkpoint_converter()
        with self._mesh():
            converter.save_pretrained(self.model, out_dir, save_tokenizer=False)
        return out_dir

    def generate(self, prompts, **kwargs):
        if self._torch is None:
            tmp = tempfile.mkdtemp(prefix="soda-eval-hf-")
            self._torch = TorchLM(self.export_hf(tmp))
            logger.info("generation from %s runs on its HF conversion in %s", self.checkpoint, tmp)
        return self._torch.generate(prompts, **kwargs)


# ---- resolving a path ---------------------------------------------------------------------

BACKENDS = ("auto", "levanter", "hf")


def resolve_hf_dir(path: str) -> Optional[str]:
    """`path` itself if it is an HF model dir; else a train output's latest `hf/step-N` export."""
    if is_hf_dir(path):
        return path
    run = TrainOutput.of(path)
    return run.latest_hf_export() if run is not None else None


def load_scoring_model(path: str, backend: str = "auto", tokenizer: Optional[str] = None,
                       device: Optional[str] = None) -> ScoringModel:
    """A ScoringModel for `path` (see the module docstring). backend: "auto" (an HF dir -> torch;
    a train output or checkpoint -> Levanter), "levanter", or "hf" (a train output's HF export)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend {backend!r}: choose one of {BACKENDS}")
    if backend == "hf" or (backend == "auto" and is_hf_dir(path)):
        hf = resolve_hf_dir(path)
        if hf is None:
            raise FileNotFoundError(f"{path!r} is neither an HF model dir nor a train output with an hf/ export")
        return TorchLM(hf, device=device)
    return LevanterLM(path, tokenizer=tokenizer)


def local_path(path: str) -> str:
    """A local copy of a (possibly remote) directory, for libraries that need real files."""
    return local_copy(path)


__all__ = ["Generation", "ScoringModel", "TorchLM", "LevanterLM", "load_scoring_model", "top_p_filter",
           "nucleus_mask", "sample_tokens", "sample_next", "example_seed",
           "resolve_hf_dir", "local_path"]
