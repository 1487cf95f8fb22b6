"""The tiny preset trains on CPU inside the executor (local corpus -> random Mimi -> documents ->
token cache -> Levanter), the loss falls, and after kill -9 a rerun resumes from the checkpoint.

The same file is the subprocess's script: `python -m tests.test_train_step PREFIX BASE_TOKENIZER`.
The cache uses a tiny Qwen-style base tokenizer extended with BOS/EOS and SODA's 16,388 tokens (vocab 16,842)
rather than Llama 3's (144,644), which keeps the LM head, and so each CPU step, 9x cheaper.
"""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO / "steps" / "local_corpus" / "emilia_like"
NUM_STEPS = 40
CHECKPOINT_EVERY = 10


def pipeline_steps(base_tokenizer: str, num_steps: int = NUM_STEPS):
    from pipeline import ExecutorStep, ResourceConfig, output_path_of, this_output_path, versioned
    from steps.encode import EncodeConfig, encode_speech
    from steps.interleave import InterleaveConfig, interleave
    from steps.tokenize import TokenizeConfig, tokenize
    from steps.training.mixtures import mixture
    from steps.training.optimizer import SodaRecipe
    from steps.training.train import train
    from steps.training.train_config import TrainConfig
    from tests.test_mimi import SMALL
    from tokenizer.build import BuildTokenizerConfig, build_tokenizer_step

    tok = ExecutorStep("tokenizer/tiny-qwen-soda", build_tokenizer_step, BuildTokenizerConfig(base=base_tokenizer))
    encoded = ExecutorStep("encoded/local-corpus", encode_speech, EncodeConfig(
        input_paths=(str(CORPUS / "*.tar"),), output_path=this_output_path(), mimi_model="random",
        device="cpu", mimi_config_overrides=SMALL))
    docs = ExecutorStep("documents/local-corpus", interleave, InterleaveConfig(input_path=output_path_of(encoded)))
    cache = ExecutorStep("tokenized/local-corpus", tokenize, TokenizeConfig(
        input_path=output_path_of(docs, "documents"), tokenizer=output_path_of(tok)))
    trained = ExecutorStep("checkpoints/tiny-local", train, TrainConfig(
        caches={"emilia-en": output_path_of(cache)},
        tokenizer=output_path_of(tok),
        preset=versioned("tiny"),
        mixture=mixture("local", {"emilia-en": 1.0}),
        batch_size=versioned(4),
        num_steps=versioned(num_steps),
        optimizer=SodaRecipe(learning_rate=versioned(3e-3)),
        mp="f32",
        checkpoint_every_steps=CHECKPOINT_EVERY,
        checkpoint_every_minutes=None,
        plumbing_run=True,
    ), resources=ResourceConfig(cpus=1))
    return [tok, encoded, docs, cache, trained]


def _run_pipeline(prefix: str, base: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu", "RAY_DEDUP_LOGS": "0"}
    return subprocess.Popen([sys.executable, "-m", "tests.test_train_step", prefix, base], cwd=str(REPO),
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def _kill_tree(proc: subprocess.Popen) -> None:
    """kill -9 the pipeline process and everything it started (its Ray processes too)."""
    import psutil

    try:
        parent = psutil.Process(proc.pid)
        family = parent.children(recursive=True) + [parent]
    except psutil.NoSuchProcess:
        family = []
    for p in family:
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(family, timeout=30)
    proc.wait(timeout=30)


def _wait_for(pattern: str, proc: subprocess.Popen, timeout: float) -> str:
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = glob.glob(pattern)
        if found:
            return found[0]
        if proc.poll() is not None:
            raise AssertionError(f"pipeline exited ({proc.returncode}) before {pattern} appeared:\n"
                                 + proc.stdout.read()[-6000:])
        time.sleep(0.2)
    _kill_tree(proc)
    raise AssertionError(f"{pattern} did not appear within {timeout}s:\n" + proc.stdout.read()[-6000:])


@pytest.fixture
def base_tokenizer(tmp_path):
    from tokenizer.testing import make_tiny_qwen_style_tokenizer_dir

    return make_tiny_qwen_style_tokenizer_dir(str(tmp_path / "tiny-qwen-base"))


@pytest.mark.slow  # about 3 minutes here: two executor runs, each with Ray and a JAX compile
def test_tiny_preset_trains_in_executor_and_resumes_after_kill9(prefix, base_tokenizer):
    first = _run_pipeline(prefix, base_tokenizer)
    ckpt = _wait_for(f"{prefix}/checkpoints/tiny-local-*/checkpoints/step-{CHECKPOINT_EVERY}/metadata.json",
                     first, timeout=600)
    _kill_tree(first)  # kill -9 during training, right after its first checkpoint
    out_dir = Path(ckpt).parents[2]
    assert not (out_dir / "summary.json").exists(), "the first run finished before it was killed"

    second = _run_pipeline(prefix, base_tokenizer)
    log, _ = second.communicate(timeout=600)
    assert second.returncode == 0, log[-6000:]

    sessions = [json.loads(x) for x in (out_dir / "train_sessions.jsonl").read_text().splitlines()]
    assert len(sessions) == 2 and sessions[0]["first_step"] == 0
    assert sessions[1]["first_step"] >= CHECKPOINT_EVERY  # resumed from the checkpoint, not step 0
    assert any("Resuming training from step" in p.read_text() for p in (out_dir / "logs").glob("*.log"))

    rows = [json.loads(x) for x in (out_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in rows]
    assert steps == sorted(set(steps)) and steps[-1] == NUM_STEPS - 1  # no duplicates after the resume
    losses = [r["train/loss"] for r in rows if "train/loss" in r]
    assert losses[-1] < losses[0] - 1.0, losses

    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["steps"] == NUM_STEPS and summary["sessions"] == 2 and summary["plumbing_run"] is True
    assert summary["tokens"] == NUM_STEPS * 4 * 256
    assert summary["preset"] == "tiny" and summary["model"]["hidden"] == 64
    assert summary["model"]["vocab_size"] == 16_842
    assert summary["final_loss"] == losses[-1]
    assert summary["params_total"] > summary["params_nonembedding"] > 0
    assert summary["training_flops"] > 0
    assert summary["jax_process_count"] == 1 and summary["hosts"] == 1 and summary["jax_backend"] == "cpu"
    assert summary["jax_device_count"] >= 1 and summary["tpu"] is None
    assert summary["hf_export"] and os.path.isfile(os.path.join(summary["hf_export"], "config.json"))
    hf_config = json.loads(Path(summary["hf_export"], "config.json").read_text())
    assert hf_config["model_type"] == "qwen3" and hf_config["vocab_size"] == 16_842


if __name__ == "__main__":
    import logging

    logging.basicConfig(level=logging.INFO)
    from pipeline import Executor

    prefix_arg, base_arg = sys.argv[1], sys.argv[2]
    Executor(prefix_arg, experiment_name="test-train-step").run(pipeline_steps(base_arg))


def test_warm_start_from_a_tiny_local_qwen3_checkpoint(tmp_path):
    """A random 2-layer Qwen3 saved with transformers (no hub) + its SODA-extended tokenizer:
    the checkpoint is resized to the extended vocab, old rows kept, and Levanter trains from it."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch
    from safetensors.numpy import load_file
    from transformers import AutoTokenizer, Qwen3Config, Qwen3ForCausalLM

    from steps.tokenize import TokenizeConfig, tokenize
    from steps.training.mixtures import mixture
    from steps.training.optimizer import SodaRecipe
    from steps.training.train import train
    from steps.training.train_config import TrainConfig
    from tokenizer.audio import codes_to_chars
    from tokenizer.testing import qwen_style_extended_dir

    tok_dir = qwen_style_extended_dir(str(tmp_path))
    base_vocab = len(AutoTokenizer.from_pretrained(str(tmp_path / "tiny-qwen-base")))
    torch.manual_seed(0)
    hf = Qwen3ForCausalLM(Qwen3Config(vocab_size=base_vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=2, num_key_value_heads=1, head_dim=16,
                                      max_position_embeddings=512, tie_word_embeddings=True))
    hf.save_pretrained(tmp_path / "qwen3-tiny")
    old_embed = hf.get_input_embeddings().weight.detach().numpy().copy()

    rng = np.random.default_rng(0)
    docs = [f"<|text_start|>hello {i}<|text_end|><|audio_start|>" + codes_to_chars(rng.integers(0, 8, (8, 30)))
            + "<|audio_end|>" for i in range(40)]
    (tmp_path / "docs").mkdir()
    pq.write_table(pa.table({"text": docs}), tmp_path / "docs" / "part-0.parquet")
    tokenize(TokenizeConfig(str(tmp_path / "docs"), tok_dir, str(tmp_path / "cache")))

    out = tmp_path / "warm"
    summary = train(TrainConfig(
        caches={"yodas2-en": str(tmp_path / "cache")}, tokenizer=tok_dir, warm_start_hf=str(tmp_path / "qwen3-tiny"),
        mixture=mixture("y", {"yodas2-en": 1.0}), seq_len=128, batch_size=2, num_steps=3,
        optimizer=SodaRecipe(learning_rate=1e-3), mp="f32", checkpoint_every_minutes=None, output_path=str(out)))

    vocab = len(AutoTokenizer.from_pretrained(tok_dir))
    resized = load_file(str(out / "warm_start" / "model.safetensors"))
    embed = resized["model.embed_tokens.weight"]
    # the Qwen base gains <|begin_of_text|> and <|end_of_text|> as single tokens, then SODA's 16,388
    assert embed.shape == (vocab, 32) and vocab == base_vocab + 2 + 16_388
    assert np.array_equal(embed[:base_vocab], old_embed)  # the pretrained rows are kept
    assert summary["steps"] == 3 and summary["warm_start"] == str(tmp_path / "qwen3-tiny")
    assert summary["model"]["vocab_size"] == vocab and summary["model"]["tied_embeddings"] is True
    assert summary["model"]["hidden"] == 32 and summary["model"]["seq_len"] == 128
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert any("train/loss" in r for r in rows)
    # Levanter started from the checkpoint, not a random init: the trained rows still match it.
    trained = load_file(os.path.join(summary["hf_export"], "model.safetensors"))["model.embed_tokens.weight"]
    assert trained.shape == (vocab, 32)
    assert np.corrcoef(trained[:base_vocab].ravel(), old_embed.ravel())[0, 1] > 0.9
