"""The S2ST evaluation (eval/tasks/s2st.py) and its BLEU (eval/bleu.py).

The task test uses a tiny Qwen3 that has memorised the S2ST answers of the CVSS fixture's four test
pairs (target text, then the target clip's Mimi codes), so greedy decoding has known answers: its
text BLEU is 100, every sample terminates, and SIM and ASR-BLEU must equal what the judges give on
the target clip's own Mimi reconstruction. Mimi and the judges are the small random ones: the
numbers are plumbing, the bookkeeping around them is what is checked.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tests.test_mimi import SMALL


# ---- BLEU (pure) -----------------------------------------------------------------------------


def test_bleu_is_100_for_an_exact_match_after_normalisation():
    from eval.bleu import corpus_bleu
    from eval.wer import normalize_asr

    refs = ["Where is the station, please?", "How old are you?"]
    assert corpus_bleu(refs, ["where is the station please", "how old are you"], normalize_asr)["bleu"] == pytest.approx(100.0)
    assert corpus_bleu(refs, ["where is the station please", "how old are you"])["bleu"] < 100.0  # case, punct.


def test_bleu_of_a_partial_translation_is_sacrebleus_corpus_score():
    import sacrebleu

    from eval.bleu import corpus_bleu

    refs = ["the cat sleeps on the chair", "we live in a small town"]
    hyps = ["the cat sleeps on a chair", "we live in a town"]
    got = corpus_bleu(refs, hyps)
    assert 0.0 < got["bleu"] < 100.0
    assert got["bleu"] == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score)
    assert got["n"] == 2 and got["ref_len"] == 12 and got["hyp_len"] == 11 and got["brevity_penalty"] < 1.0
    # corpus BLEU pools n-gram counts: it is not the mean of sentence BLEUs
    per_sentence = [sacrebleu.sentence_bleu(h, [r]).score for h, r in zip(hyps, refs)]
    assert got["bleu"] != pytest.approx(float(np.mean(per_sentence)))


def test_bleu_refuses_mismatched_or_empty_inputs():
    from eval.bleu import corpus_bleu

    with pytest.raises(ValueError, match="2 references but 1 hypotheses"):
        corpus_bleu(["a b", "c d"], ["a b"])
    with pytest.raises(ValueError, match="no segments"):
        corpus_bleu([], [])


# ---- the task on a memorising model ------------------------------------------------------------


def _build(root: Path) -> dict:
    from transformers import AutoTokenizer, Qwen3Config, Qwen3ForCausalLM

    from eval.judges import make_random_judges
    from steps.s2st.cvss import iter_pairs
    from steps.s2st.fixture import write_cvss_fixture
    from tests.test_generate_cli import _memorize
    from tokenizer import prompts as P
    from tokenizer.audio import codes_to_chars
    from tokenizer.fast_tokenize import FastTokenizer
    from tokenizer.mimi import encode, load_mimi
    from tokenizer.testing import make_tiny_qwen_style_tokenizer_dir, qwen_style_extended_dir
    from tokenizer.vocab import BOS

    tokenizer = qwen_style_extended_dir(str(root))
    data = str(root / "cvss")
    write_cvss_fixture(data)
    pairs = list(iter_pairs(data, "test"))
    mimi = load_mimi("random", seed=0, device="cpu", config_overrides=SMALL)  # what the eval step loads
    tok = FastTokenizer.from_pretrained(tokenizer)
    seqs, starts, targets = [], [], {}
    for p in pairs:
        src, tgt = (codes_to_chars(c) for c in encode(mimi, [p.source_audio, p.target_audio]))
        prompt = BOS + P.s2st_prompt(src, p.source_text).text
        seqs.append(tok.encode(prompt + P.s2st_answer(p.target_text, tgt)).astype(np.int64))
        starts.append(len(tok.encode(prompt)))
        targets[p.id] = tgt
    torch.manual_seed(0)
    cfg = Qwen3Config(vocab_size=len(AutoTokenizer.from_pretrained(tokenizer)), hidden_size=64,
                      intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      head_dim=16, max_position_embeddings=1024, tie_word_embeddings=False)
    model = Qwen3ForCausalLM(cfg)
    _memorize(model, seqs, starts, max_steps=800)
    hf = root / "hf"
    model.eval().save_pretrained(hf)
    AutoTokenizer.from_pretrained(tokenizer).save_pretrained(hf)
    asr_judge, sim_judge = make_random_judges(str(root), make_tiny_qwen_style_tokenizer_dir(str(root / "plain")))
    return {"hf": str(hf), "data": data, "targets": targets, "pairs": pairs, "asr_judge": asr_judge,
            "sim_judge": sim_judge}


@pytest.fixture(scope="module")
def memorised(tmp_path_factory):
    return _build(tmp_path_factory.mktemp("s2st-eval"))


def _config(m, out, **kw):
    from steps.evaluate import EvalConfig

    fields = dict(mimi_model="random", mimi_config_overrides=SMALL, tts_asr_judge=m["asr_judge"],
                  tts_sim_judge=m["sim_judge"], s2st_temperature=0.0, s2st_max_new_tokens=400,
                  whisper_normalizer=None, batch_size=2, chunk_size=2, device="cpu")
    return EvalConfig(task="s2st", model_path=m["hf"], dataset_path=m["data"], output_path=str(out),
                      **{**fields, **kw})


def test_s2st_eval_scores_the_memorised_translations(memorised, tmp_path):
    from eval.bleu import corpus_bleu
    from eval.judges import SpeakerJudge, WhisperJudge, to_16k
    from eval.wer import normalize_asr
    from steps.evaluate import evaluate
    from tokenizer.audio import chars_to_codes
    from tokenizer.mimi import decode, load_mimi

    summary = evaluate(_config(memorised, tmp_path))
    assert summary["task"] == "s2st" and summary["n"] == 4 and summary["plumbing_run"]
    assert summary["judges"] == "random-init (plumbing)" and summary["languages"] == ["de", "es", "fr"]
    m = summary["metrics"]
    assert m["text_bleu"] == pytest.approx(100.0) and m["terminated"] == 1.0
    assert summary["no_audio"] == 0 and summary["missing_audio_start"] == 0
    rows = [json.loads(x) for f in sorted((tmp_path / "examples").glob("part-*.jsonl"))
            for x in f.read_text().splitlines()]
    assert len(rows) == 4 and len(list((tmp_path / "examples").glob("part-*.jsonl"))) == 2  # chunk_size 2

    # what the judges say about each target clip's own Mimi reconstruction is what the task reports
    mimi = load_mimi("random", seed=0, device="cpu", config_overrides=SMALL)
    asr, sim = WhisperJudge(memorised["asr_judge"], device="cpu"), SpeakerJudge(memorised["sim_judge"], device="cpu")
    pairs = {p.id: p for p in memorised["pairs"]}
    sims, refs = [], []
    for r in rows:
        p = pairs[r["id"]]
        assert r["text"] == p.target_text and r["terminated"]
        target = memorised["targets"][r["id"]]
        assert r["audio_tokens"] == len(target) and r["frames"] == len(target) // 8
        gen16 = to_16k(decode(mimi, chars_to_codes(target)))
        assert r["asr"] == asr.transcribe([gen16])[0]
        expected = sim.similarity(gen16, to_16k(p.source_audio))
        assert r["sim"] == pytest.approx(expected, abs=1e-5)
        assert r["sim_reference"] == pytest.approx(sim.similarity(to_16k(p.target_audio), to_16k(p.source_audio)),
                                                   abs=1e-5)
        sims.append(expected)
        refs.append(p.target_text)
    assert m["sim"] == pytest.approx(float(np.mean(sims)), abs=1e-5)
    assert m["asr_bleu"] == pytest.approx(corpus_bleu(refs, [r["asr"] for r in rows], normalize_asr)["bleu"])
    es = [r for r in rows if r["source_lang"] == "es"]
    assert len(es) == 2 and m["asr_bleu/es"] == pytest.approx(
        corpus_bleu([r["target_text"] for r in es], [r["asr"] for r in es], normalize_asr)["bleu"])
    assert "tok:13a" in summary["convention"]["asr_bleu"]


def test_s2st_eval_counts_what_it_cut_short_and_resumes(memorised, tmp_path):
    from steps.evaluate import evaluate

    # a budget that ends inside the audio: nothing terminates, the text is still whole
    summary = evaluate(_config(memorised, tmp_path, s2st_max_new_tokens=40, max_examples=2))
    assert summary["n"] == 2 and summary["metrics"]["terminated"] == 0.0
    assert summary["metrics"]["text_bleu"] == pytest.approx(100.0)
    # a rerun after losing the summary rescoring nothing: the per-example chunk is read back
    part = tmp_path / "examples" / "part-00000.jsonl"
    before = part.read_bytes()
    os.remove(tmp_path / "summary.json")
    again = evaluate(_config(memorised, tmp_path, s2st_max_new_tokens=40, max_examples=2))
    assert part.read_bytes() == before and again["metrics"] == summary["metrics"]


def test_s2st_eval_with_no_usable_pair_is_a_clear_error(memorised, tmp_path):
    import shutil

    from steps.evaluate import evaluate

    data = tmp_path / "cvss"
    shutil.copytree(memorised["data"], data)
    for tsv in data.glob("cvss/*/test.tsv"):  # clips that Common Voice has no sentence for
        tsv.write_text("".join(f"unknown_{i}.mp3\t{line.split(chr(9))[1]}\n"
                               for i, line in enumerate(tsv.read_text().splitlines())))
    with pytest.raises(ValueError, match=r"no usable CVSS pairs in split 'test'.*missing_source_text"):
        evaluate(_config({**memorised, "data": str(data)}, tmp_path / "out"))
