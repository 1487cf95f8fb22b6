"""The fine-tune step (steps.training.finetune) on the tiny CPU model: it starts from a tiny
pre-trained SODA run (its first loss is the init model's answer-only loss, not a random init's),
trains on the loss-masked S2ST cache, and a rerun resumes from its own checkpoint."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest

from steps.training.finetune import FinetuneConfig, FinetuneRecipe, train_config


def test_recipe_maps_to_the_train_step_config():
    cfg = FinetuneConfig(init_from="/x/init", data="/x/sft", tokenizer="/x/tok", output_path="/x/out",
                         recipe=FinetuneRecipe(learning_rate=1e-4, batch_size=8, num_steps=100, seq_len=1024))
    tc = train_config(cfg, "/x/out/warm_start")
    assert tc.caches == {"sft": "/x/sft"} and tc.component_formats == {"sft": "supervised"}
    assert tc.eval_caches == {}  # no validation ledger under /x/sft
    assert (tc.batch_size, tc.num_steps, tc.seq_len, tc.warm_start_hf) == (8, 100, 1024, "/x/out/warm_start")
    opt = tc.optimizer
    assert (opt.learning_rate, opt.beta1, opt.beta2, opt.weight_decay, opt.warmup, opt.decay) == (
        1e-4, 0.9, 0.95, 0.0, 0.03, 0.97)
    assert opt.lr(8, 64) == 1e-4  # an explicit LR: no width/batch scaling


def test_supervised_components_use_levanters_supervised_format(tmp_path):
    from levanter.data.text import SupervisedLmDatasetFormat, TextLmDatasetFormat

    from steps.training.train import build_train_lm_config
    from steps.training.train_config import resolve
    from tokenizer.testing import qwen_style_extended_dir

    tok = qwen_style_extended_dir(str(tmp_path))
    cfg = FinetuneConfig(init_from="/x/init", data=str(tmp_path / "sft"), tokenizer=tok,
                         output_path=str(tmp_path / "out"), recipe=FinetuneRecipe(batch_size=2, num_steps=3))
    tc = train_config(cfg, None)
    tc = type(tc)(**{**tc.__dict__, "preset": "tiny", "caches": {"sft": str(tmp_path / "sft"),
                                                                    "plain": str(tmp_path / "plain")}})
    lm = build_train_lm_config(tc, resolve(tc, vocab_size=16_842))
    comps = lm.data.components
    assert isinstance(comps["sft"].format, SupervisedLmDatasetFormat) and comps["sft"].pack is True
    assert isinstance(comps["plain"].format, TextLmDatasetFormat) and comps["plain"].pack is None
    bad = type(tc)(**{**tc.__dict__, "component_formats": {"sft": "chat"}})
    with pytest.raises(ValueError, match="component_formats"):
        build_train_lm_config(bad, resolve(bad, vocab_size=16_842))


def test_init_resolution_hf_dir_export_or_an_already_converted_checkpoint(tmp_path, monkeypatch):
    import eval.model
    from steps.training.finetune import init_hf_dir

    hf = tmp_path / "hf" / "step-9"
    hf.mkdir(parents=True)
    (hf / "config.json").write_text("{}")
    cfg = FinetuneConfig(init_from=str(hf), data="/x", tokenizer="/x", output_path=str(tmp_path / "out"))
    assert init_hf_dir(cfg) == (str(hf), "hf")

    # a train output whose model a first attempt already converted: a rerun converts nothing
    import steps.training.finetune as finetune_module

    (tmp_path / "out" / "warm_start").mkdir(parents=True)
    (tmp_path / "out" / "warm_start" / "warm_start.done.json").write_text("{}")
    monkeypatch.setattr(finetune_module, "_export_on_cpu", lambda *a, **k: pytest.fail("converted again"))
    monkeypatch.setattr(eval.model, "LevanterLM", lambda *a, **k: pytest.fail("JAX in the launching process"))
    cfg = FinetuneConfig(init_from=str(tmp_path / "pretrain"), data="/x", tokenizer="/x",
                         output_path=str(tmp_path / "out"))
    assert init_hf_dir(cfg) == (str(tmp_path / "out" / "warm_start"), "levanter")

    # a train output with its final HF export: that export is the init, nothing is converted
    pretrain = tmp_path / "pretrain-exported"
    for step in ("step-3", "step-7"):
        (pretrain / "hf" / step).mkdir(parents=True)
        (pretrain / "hf" / step / "config.json").write_text("{}")
    (pretrain / "summary.json").write_text("{}")
    cfg = FinetuneConfig(init_from=str(pretrain), data="/x", tokenizer="/x", output_path=str(tmp_path / "out2"))
    assert init_hf_dir(cfg) == (str(pretrain / "hf" / "step-7"), "hf-export")


# ---- the real thing, on the tiny model ------------------------------------------------------


def _wait_for_file(path, timeout=120.0):
    import glob
    import time

    deadline = time.time() + timeout
    while not glob.glob(path) and time.time() < deadline:
        time.sleep(0.5)
    assert glob.glob(path), f"{path} never appeared"


def _read(path):
    return [json.loads(x) for x in open(path).read().splitlines() if x.strip()]


@pytest.mark.slow  # about 2 minutes here: three Levanter runs (pre-train, fine-tune, resume), each compiling
def test_finetune_starts_from_the_init_model_masks_the_prompt_and_resumes(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from eval.model import load_scoring_model
    from steps.s2st.fixture import write_cvss_fixture
    from steps.s2st.sft_data import S2stSftDataConfig, build_s2st_sft_data
    from steps.tokenize import TokenizeConfig, tokenize
    from steps.training.finetune import finetune
    from steps.training.mixtures import mixture
    from steps.training.optimizer import SodaRecipe
    from steps.training.train import train
    from steps.training.train_config import TrainConfig
    from tests.test_mimi import SMALL
    from tokenizer.fast_tokenize import FastTokenizer
    from tokenizer.testing import qwen_style_extended_dir

    tok = qwen_style_extended_dir(str(tmp_path))
    write_cvss_fixture(str(tmp_path / "cvss"))
    sft = str(tmp_path / "sft")
    build_s2st_sft_data(S2stSftDataConfig(pairs_path=str(tmp_path / "cvss"), tokenizer=tok, output_path=sft,
                                          splits=("train",), languages=("es",), mimi_model="random", device="cpu",
                                          mimi_config_overrides=SMALL))
    # one training document: whichever examples Levanter's loader puts in the first batch (it
    # samples with replacement), they are this document, so the first loss is known exactly
    docs = pq.read_table(os.path.join(sft, "documents", "train", "es.parquet")).to_pylist()
    assert len(docs) == 1

    # a tiny "pre-trained SODA": plain next-token training on the answers alone, so that it
    # predicts answer tokens far better than prompt tokens and a prompt in the loss would show
    (tmp_path / "docs").mkdir()
    pq.write_table(pa.table({"text": ["<|text_start|>" + d["answer"] for d in docs] * 32}),
                   tmp_path / "docs" / "p.parquet")
    tokenize(TokenizeConfig(str(tmp_path / "docs"), tok, str(tmp_path / "plain")))
    pre = str(tmp_path / "pretrain")
    train(TrainConfig(caches={"yodas2-en": str(tmp_path / "plain")}, tokenizer=tok, preset="tiny",
                      mixture=mixture("p", {"yodas2-en": 1.0}), seq_len=512, batch_size=4, num_steps=12,
                      optimizer=SodaRecipe(learning_rate=1e-2, z_loss_weight=0.0), mp="f32",
                      checkpoint_every_minutes=None, checkpoint_every_steps=12, export_hf=False, output_path=pre))

    _wait_for_file(os.path.join(pre, "checkpoints", "step-*", "metadata.json"))  # committed asynchronously
    # what the init model's loss on the fine-tune batch must be: answer tokens only
    fast = FastTokenizer.from_pretrained(tok)
    model = load_scoring_model(pre, backend="levanter", tokenizer=tok)
    answer_nll, all_nll = [], []
    for d in docs:
        n_prompt = len(fast.encode(d["prompt"]))
        ids = fast.encode(d["prompt"] + d["answer"])
        lp = model.logprobs([ids])[0]
        answer_nll += list(-lp[n_prompt:])
        all_nll += list(-lp[1:])
    expected, unmasked = float(np.mean(answer_nll)), float(np.mean(all_nll))
    random_init = math.log(16_842)
    assert unmasked - expected > 0.3 and expected < random_init - 1.0, (expected, unmasked)

    out = str(tmp_path / "ft")
    # One step first: Levanter's step hooks skip steps 0 and 1 except the forced run at the end of
    # training, so a one-step run is the way to see the loss of step 0, i.e. of the init weights.
    recipe = FinetuneRecipe(learning_rate=3e-3, batch_size=2, num_steps=1, z_loss_weight=0.0, seq_len=512)
    cfg = FinetuneConfig(init_from=pre, data=sft, tokenizer=tok, recipe=recipe, mp="f32", export_hf=False,
                         checkpoint_every_steps=1, checkpoint_every_minutes=None, output_path=out)
    first = finetune(cfg)
    assert first["first_loss"] == pytest.approx(expected, abs=1e-4), (first["first_loss"], expected, unmasked)
    assert unmasked - first["first_loss"] > 0.3  # the prompt tokens are not in the loss
    assert first["init_kind"] == "levanter" and first["steps"] == 1 and first["plumbing_run"] is True
    assert os.path.isfile(os.path.join(out, "warm_start", "config.json"))

    # "interrupted" after that step: the rerun with more steps resumes from its own checkpoint
    _wait_for_file(os.path.join(out, "checkpoints", "step-*", "metadata.json"))
    second = finetune(FinetuneConfig(**{**cfg.__dict__, "recipe": FinetuneRecipe(
        **{**recipe.__dict__, "num_steps": 4})}))
    sessions = _read(os.path.join(out, "train_sessions.jsonl"))
    assert [s["first_step"] for s in sessions] == [0, 1]
    rows = _read(os.path.join(out, "metrics.jsonl"))
    steps = [r["step"] for r in rows]
    assert steps == sorted(set(steps)) == [0, 1, 2, 3]
    assert second["steps"] == 4 and second["sessions"] == 2
    assert rows[-1]["train/loss"] < first["first_loss"]  # it kept training from the fine-tuned weights
