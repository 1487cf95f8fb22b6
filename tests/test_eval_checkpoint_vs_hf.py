"""Likelihood scores are the same from the train step's Levanter checkpoint (JAX, Levanter's own
loading) and from its HF export (torch): per-token log-probs agree to 1e-4 nats (float32; we see
~2e-6), and an sBLIMP eval step gives the same per-pair scores and accuracy on both backends.

The model is the tiny preset trained for 4 steps by the real pipeline (local corpus -> random Mimi
-> documents -> cache -> Levanter), as tests/test_train_step.py builds it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

REPO = Path(__file__).resolve().parent.parent
TOLERANCE = 1e-4  # nats per token


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    import ray

    from pipeline import Executor
    from tests.test_train_step import pipeline_steps
    from tokenizer.testing import make_tiny_qwen_style_tokenizer_dir

    root = tmp_path_factory.mktemp("ckpt_vs_hf")
    base = make_tiny_qwen_style_tokenizer_dir(str(root / "tiny-qwen-base"))
    ray.init(address="local", num_cpus=2, include_dashboard=False, configure_logging=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"}})
    try:
        Executor(str(root / "prefix"), experiment_name="test-eval-ckpt").run(pipeline_steps(base, num_steps=4))
    finally:
        ray.shutdown()
    (out,) = list((root / "prefix" / "checkpoints").glob("tiny-local-*"))
    return root, out


def test_checkpoint_and_hf_export_give_the_same_logprobs(trained):
    from eval.model import LevanterLM, TorchLM, resolve_hf_dir
    from steps.training.train_output import latest_checkpoint_of

    _, out = trained
    ckpt, hf = latest_checkpoint_of(str(out)), resolve_hf_dir(str(out))
    assert ckpt.rsplit("/", 1)[-1] == hf.rsplit("/", 1)[-1] == "step-3"  # the same weights
    lev, torch_lm = LevanterLM(str(out)), TorchLM(hf, device="cpu")
    assert lev.backend == "levanter-jax" and lev.vocab_size == torch_lm.vocab_size == 16_842
    rng = np.random.default_rng(0)
    seqs = [rng.integers(0, 16_842, size=n) for n in (2, 9, 64, 65, 130, 300)]  # spans bucket edges
    a, b = lev.logprobs(seqs, batch_size=4), torch_lm.logprobs(seqs, batch_size=3)
    for s, x, y in zip(seqs, a, b):
        assert x.shape == y.shape == (s.size,) and np.isnan(x[0]) and np.isnan(y[0])
        assert np.max(np.abs(x[1:] - y[1:])) < TOLERANCE
    assert np.mean(a[-1][1:]) < -5  # a 4-step model is still near uniform over 16,842 ids: real numbers
    # generation from the checkpoint runs on Levanter's own HF conversion: same samples as the export
    kw = dict(temperature=0.5, top_p=0.8, max_new_tokens=6, stop_id=-1, seed=1, batch_size=2)
    assert [g.ids for g in lev.generate(seqs[1:3], **kw)] == [g.ids for g in torch_lm.generate(seqs[1:3], **kw)]


def test_sblimp_step_scores_match_across_backends(trained):
    from eval.fixtures import write_fixture
    from steps.evaluate import EvalConfig, evaluate
    from tests.test_mimi import SMALL

    root, out = trained
    data = str(root / "sblimp")
    write_fixture("sblimp", data)
    runs = {}
    for backend in ("levanter", "hf"):
        summary = evaluate(EvalConfig(task="sblimp", model_path=str(out), dataset_path=data, backend=backend,
                                      output_path=str(root / f"eval-{backend}"), mimi_model="random",
                                      mimi_config_overrides=SMALL))
        rows = [json.loads(x) for x in (root / f"eval-{backend}" / "examples" / "part-00000.jsonl").read_text().splitlines()]
        runs[backend] = (summary, rows)
    (s_lev, r_lev), (s_hf, r_hf) = runs["levanter"], runs["hf"]
    assert s_lev["model_backend"] == "levanter-jax" and s_hf["model_backend"] == "hf-torch"
    assert s_lev["plumbing_run"] and "model trained on plumbing data" in s_lev["plumbing_reasons"]
    assert s_lev["train"]["preset"] == "tiny" and s_hf["train"]["preset"] == "tiny"
    for x, y in zip(r_lev, r_hf):
        assert x["pos_tokens"] == y["pos_tokens"] > 0
        assert abs(x["pos_logp"] - y["pos_logp"]) < TOLERANCE and abs(x["neg_logp"] - y["neg_logp"]) < TOLERANCE
    assert s_lev["metrics"] == s_hf["metrics"]
    assert os.path.isfile(os.path.join(str(out), "summary.json"))
