"""Every eval task runs as an executor step on a tiny model over the local fixtures and writes its
summary; likelihoods are batch-independent, sampling is seeded, chunks resume.

The model here is a tiny random HF Qwen3 (hidden 32) with the tiny Qwen-style SODA tokenizer
(tokenizer.testing), scored with torch; tests/test_eval_checkpoint_vs_hf.py covers the train
step's Levanter checkpoint. Mimi is the small random one, the TTS judges are random-init: every
number here is plumbing.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tests.test_mimi import SMALL

REPO = Path(__file__).resolve().parent.parent
TASK_NAMES = ["sblimp", "swuggy", "salmon", "tblimp", "twuggy", "storycloze_spoken", "storycloze_text",
              "hellaswag", "asr", "tts", "validation_nll", "s2st"]


def make_tiny_hf_model(root: str) -> str:
    """A random tiny Qwen3 with the SODA-extended tiny tokenizer, saved as an HF dir."""
    from transformers import AutoTokenizer, Qwen3Config, Qwen3ForCausalLM

    from tokenizer.testing import qwen_style_extended_dir

    out = os.path.join(root, "tiny-qwen3-hf")
    if os.path.isfile(os.path.join(out, "config.json")):
        return out
    tok = AutoTokenizer.from_pretrained(qwen_style_extended_dir(root))
    torch.manual_seed(0)
    cfg = Qwen3Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, head_dim=16, max_position_embeddings=4096,
                      tie_word_embeddings=False)
    Qwen3ForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    from eval.judges import make_random_judges
    from tokenizer.testing import make_tiny_qwen_style_tokenizer_dir

    root = str(tmp_path_factory.mktemp("evalenv"))
    model = make_tiny_hf_model(root)
    asr_judge, sim_judge = make_random_judges(root, make_tiny_qwen_style_tokenizer_dir(os.path.join(root, "plain")))
    return {"root": root, "model": model, "asr_judge": asr_judge, "sim_judge": sim_judge}


def _overrides(env, **kw):
    return dict(mimi_model="random", mimi_config_overrides=SMALL, tts_asr_judge=env["asr_judge"],
                tts_sim_judge=env["sim_judge"], tts_max_new_tokens=96, asr_max_new_tokens=12, s2st_max_new_tokens=96,
                whisper_normalizer=None, batch_size=4, **kw)


@pytest.fixture(scope="module")
def executed(env):
    import ray

    from eval.fixtures import local_fixture_step
    from eval.tasks import get_task
    from pipeline import Executor
    from steps.evaluate import eval_step

    prefix = os.path.join(env["root"], "prefix")
    # address="local": never attach to a stale cluster left in /tmp/ray by another process
    ray.init(address="local", num_cpus=2, include_dashboard=False, configure_logging=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"}})
    try:
        fixtures = {}
        steps = []
        for name in TASK_NAMES:
            kind = get_task(name).fixture
            if kind not in fixtures:
                fixtures[kind] = local_fixture_step(kind)
                steps.append(fixtures[kind])
            steps.append(eval_step(name, env["model"], fixtures[kind], name=f"evaluation/{name}-tiny",
                                   **_overrides(env)))
        Executor(prefix, experiment_name="test-eval-tasks").run(steps)
    finally:
        ray.shutdown()
    outs = {}
    for name in TASK_NAMES:
        (found,) = [p for p in Path(prefix, "evaluation").iterdir() if p.name.startswith(f"{name}-tiny-")]
        outs[name] = found
    return outs


@pytest.mark.parametrize("name", TASK_NAMES)
def test_task_step_writes_summary_and_examples(executed, name):
    out = executed[name]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["task"] == name and summary["n"] > 0
    assert summary["convention"] and summary["model_backend"] == "hf-torch"
    rows = [json.loads(x) for f in sorted((out / "examples").glob("part-*.jsonl")) for x in f.read_text().splitlines()]
    if name != "validation_nll":
        assert len(rows) == summary["n"]
    metrics = summary["metrics"]
    assert metrics and all(isinstance(v, (int, float)) for v in metrics.values())
    assert all(math.isfinite(v) for k, v in metrics.items() if k != "sim")
    expected = {"sblimp": {"acc", "acc_ties_half"}, "salmon": {"acc", "acc_macro", "acc/speaker_consistency",
                                                                 "acc/gender_consistency"},
                "hellaswag": {"acc", "acc_norm"}, "asr": {"wer", "wer_whisper_norm", "terminated"},
                "tts": {"wer", "wer_whisper_norm", "sim", "terminated"},
                # a random model's answers rarely hold 0.5 s of audio: "sim" only when some did (below)
                "s2st": {"asr_bleu", "text_bleu", "terminated", "sim_reference", "asr_bleu/de", "asr_bleu/es",
                         "asr_bleu/fr"},
                "validation_nll": {f"nll_{o}_{s}{u}" for o in ("asr", "tts") for s in ("all", "audio", "text")
                                   for u in ("", "_per_sec")}}
    assert expected.get(name, {"acc", "acc_ties_half"}) <= set(metrics)
    for k, v in metrics.items():
        if k.startswith("acc") or k in ("terminated",):
            assert 0.0 <= v <= 1.0
    if name in ("tts", "s2st"):
        assert summary["judges"] == "random-init (plumbing)"
        assert "random-init judges" in summary["plumbing_reasons"]
        assert -1.0 <= metrics.get("sim", 0.0) <= 1.0
    if name == "tts":
        assert summary["sim_scored"] == summary["n"]
    if name == "s2st":
        assert summary["n"] == 4 and summary["languages"] == ["de", "es", "fr"]
        assert ("sim" in metrics) == (summary["sim_unscored"] < summary["n"]) and -1.0 <= metrics["sim_reference"] <= 1.0
        assert all(0.0 <= metrics[k] <= 100.0 for k in metrics if "bleu" in k)
    if name in ("tblimp", "twuggy", "hellaswag", "storycloze_text"):
        # text only: Mimi never loads, and a bare HF dir carries no train summary to flag it
        assert summary["plumbing_run"] is False and summary["plumbing_reasons"] == []
    else:
        assert summary["plumbing_run"] is True and "random Mimi" in summary["plumbing_reasons"]


def test_pair_accuracy_matches_examples(executed):
    out = executed["salmon"]
    rows = [json.loads(x) for x in (out / "examples" / "part-00000.jsonl").read_text().splitlines()]
    summary = json.loads((out / "summary.json").read_text())
    wins = [r["pos_logp"] > r["neg_logp"] for r in rows]
    assert summary["metrics"]["acc"] == pytest.approx(sum(wins) / len(wins))
    assert {r["part"] for r in rows} == {"speaker_consistency", "gender_consistency"}


def test_nll_token_accounting(executed):
    rows = [json.loads(x) for x in (executed["validation_nll"] / "examples" / "part-00000.jsonl").read_text().splitlines()]
    summary = json.loads((executed["validation_nll"] / "summary.json").read_text())
    for r in rows:
        for order in ("asr", "tts"):
            # all = audio + text + the 4 delimiters + the BOS string's tokens after the first
            extra = r[f"{order}_all_tokens"] - r[f"{order}_audio_tokens"] - r[f"{order}_text_tokens"]
            assert extra >= 4 and r[f"{order}_audio_tokens"] % 8 == 0
    total = sum(r["asr_all_nll"] for r in rows) / sum(r["asr_all_tokens"] for r in rows)
    assert summary["metrics"]["nll_asr_all"] == pytest.approx(total)


def test_likelihoods_do_not_depend_on_batching_and_chunks_resume(env, tmp_path):
    from steps.evaluate import EvalConfig, evaluate
    from eval.fixtures import write_fixture

    data = str(tmp_path / "sblimp")
    write_fixture("sblimp", data)
    a = evaluate(EvalConfig(task="sblimp", model_path=env["model"], dataset_path=data, output_path=str(tmp_path / "a"),
                            chunk_size=1, **_overrides(env) | {"batch_size": 1}))
    b = evaluate(EvalConfig(task="sblimp", model_path=env["model"], dataset_path=data, output_path=str(tmp_path / "b"),
                            **_overrides(env) | {"batch_size": 2}))
    rows = lambda d: [json.loads(x) for f in sorted((tmp_path / d / "examples").glob("*.jsonl"))  # noqa: E731
                      for x in f.read_text().splitlines()]
    ra, rb = rows("a"), rows("b")
    assert len(ra) == len(rb) == 2
    for x, y in zip(ra, rb):
        assert x["pos_logp"] == pytest.approx(y["pos_logp"], abs=1e-5)
        assert x["neg_logp"] == pytest.approx(y["neg_logp"], abs=1e-5)
    assert a["metrics"] == b["metrics"]
    # crash after the first chunk: the rerun keeps it and recomputes only the rest
    (tmp_path / "a" / "summary.json").unlink()
    (tmp_path / "a" / "examples" / "part-00001.jsonl").unlink()
    kept = (tmp_path / "a" / "examples" / "part-00000.jsonl").read_text()
    (tmp_path / "a" / "examples" / "part-00000.jsonl").write_text(kept.replace('"id": "EVAL_pair000"', '"id": "KEPT"'))
    again = evaluate(EvalConfig(task="sblimp", model_path=env["model"], dataset_path=data,
                                output_path=str(tmp_path / "a"), chunk_size=1, **_overrides(env)))
    assert again["metrics"] == a["metrics"]
    assert rows("a")[0]["id"] == "KEPT" and rows("a")[1]["id"] == "EVAL_pair001"


def test_sampling_is_seeded_per_example_and_top_p_keeps_the_nucleus(env):
    from eval.model import TorchLM, top_p_filter

    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    kept = torch.isfinite(top_p_filter(logits, 0.8))[0].tolist()
    assert kept == [True, True, False, False]  # 0.5 + 0.3 reaches 0.8
    assert torch.isfinite(top_p_filter(logits, 0.81))[0].tolist() == [True, True, True, False]
    model = TorchLM(env["model"], device="cpu")
    prompts = [np.arange(5, 15), np.arange(20, 27), np.arange(3, 40)]
    kw = dict(temperature=0.9, top_p=0.8, max_new_tokens=8, stop_id=-1, seed=3)
    one = model.generate(prompts, batch_size=1, **kw)
    three = model.generate(prompts, batch_size=3, **kw)
    assert [g.ids for g in one] == [g.ids for g in three]  # left padding + per-example generators
    assert all(len(g.ids) == 8 and not g.terminated for g in one)
    other = model.generate(prompts, batch_size=3, **{**kw, "seed": 4})
    assert [g.ids for g in other] != [g.ids for g in one]
    greedy = model.generate(prompts[:1], batch_size=1, **{**kw, "temperature": 0.0})[0].ids
    lp_next = model.logprobs([np.concatenate([prompts[0], [t]]) for t in range(model.vocab_size)][:1])
    assert len(greedy) == 8 and len(lp_next[0]) == 11


def test_unknown_task_and_bad_override_are_clear_errors():
    from eval.tasks import get_task
    from steps.evaluate import eval_step

    with pytest.raises(KeyError, match="known: sblimp"):
        get_task("mmlu")
    with pytest.raises(TypeError, match="tempreature"):
        eval_step("asr", "/m", "/d", tempreature=0.1)
