"""CVSS-style pairs (steps.s2st.cvss), the offline fixture, preparing downloads, and the S2ST SFT
data step (documents, exact loss masks, the Levanter cache)."""

from __future__ import annotations

import os
import shutil
from collections import Counter

import numpy as np
import pytest

from steps.s2st.cvss import CvssPair, iter_pairs
from steps.s2st.fixture import write_cvss_fixture
from steps.s2st.fixture import fixture_pairs


@pytest.fixture(scope="module")
def cvss_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("cvss"))
    assert write_cvss_fixture(root, n_per_split=4) == 12
    return root


def _copy(root, tmp_path):
    dst = str(tmp_path / "copy")
    shutil.copytree(root, dst)
    return dst


# ---- reading pairs ---------------------------------------------------------------------------


def test_fixture_pairs_read_back_with_their_texts_and_24k_audio(cvss_root):
    expected = {p["clip"].rsplit(".", 1)[0]: p for p in fixture_pairs()}
    seen = 0
    for split in ("train", "dev", "test"):
        skipped = Counter()
        pairs = list(iter_pairs(cvss_root, split, skipped=skipped))
        assert len(pairs) == 4 and not skipped
        for p in pairs:
            assert isinstance(p, CvssPair)
            lang_pair, stem = p.id.split("/")
            meta = expected[stem]
            assert (lang_pair, p.source_lang, p.target_lang) == (f"{meta['lang']}-en", meta["lang"], "en")
            assert meta["split"] == split
            assert (p.source_text, p.target_text) == (meta["sentence"], meta["translation"])
            for audio in (p.source_audio, p.target_audio):
                assert audio.dtype == np.float32 and audio.ndim == 1
                assert 0.8 < len(audio) / 24_000 < 4.0  # short sentences at 24 kHz
                assert np.abs(audio).max() > 0.05
            seen += 1
    assert seen == 12


def test_limit_alias_and_languages(cvss_root):
    assert len(list(iter_pairs(cvss_root, "test", limit=2))) == 2
    assert [p.id for p in iter_pairs(cvss_root, "validation")] == [p.id for p in iter_pairs(cvss_root, "dev")]
    assert {p.source_lang for p in iter_pairs(cvss_root, "train", languages=["fr"])} == {"fr"}
    with pytest.raises(ValueError, match="unknown CVSS split"):
        list(iter_pairs(cvss_root, "eval"))


def test_missing_root_or_split_file_names_the_path(cvss_root, tmp_path):
    with pytest.raises(FileNotFoundError, match="cvss"):
        list(iter_pairs(str(tmp_path / "nothing"), "train"))
    root = _copy(cvss_root, tmp_path)
    os.remove(os.path.join(root, "cvss", "es-en", "dev.tsv"))
    with pytest.raises(FileNotFoundError, match=r"es-en/dev\.tsv"):
        list(iter_pairs(root, "dev"))


def test_bad_rows_are_skipped_and_counted(cvss_root, tmp_path):
    root = _copy(cvss_root, tmp_path)
    test_rows = {p["clip"]: p for p in fixture_pairs() if p["split"] == "test"}
    es = [c for c in test_rows if "_es_" in c]
    fr = [c for c in test_rows if "_fr_" in c]
    de = [c for c in test_rows if "_de_" in c]
    # es: one target wav missing, one source clip corrupt (truncated mp3 -> undecodable)
    os.remove(os.path.join(root, "cvss", "es-en", "test", f"{es[0]}.wav"))
    with open(os.path.join(root, "common_voice", "es", "clips", es[1]), "wb") as f:
        f.write(b"not audio at all")
    # fr: empty translation plus a malformed line; de: no Common Voice sentence for the clip
    with open(os.path.join(root, "cvss", "fr-en", "test.tsv"), "w") as f:
        f.write(f"{fr[0]}\t\nonly-one-field\n")
    cv_tsv = os.path.join(root, "common_voice", "de", "validated.tsv")
    lines = [ln for ln in open(cv_tsv).read().splitlines() if de[0] not in ln]
    open(cv_tsv, "w").write("\n".join(lines) + "\n")
    skipped = Counter()
    pairs = list(iter_pairs(root, "test", skipped=skipped))
    assert pairs == []
    assert skipped == Counter(missing_target_audio=1, bad_source_audio=1, empty_target_text=1,
                              malformed_row=1, missing_source_text=1)


# ---- preparing the downloads -------------------------------------------------------------------


def _tar(path, members, gz):
    import io
    import tarfile

    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tarfile.open(path, "w:gz" if gz else "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_prepare_unpacks_release_archives_into_the_reader_layout(cvss_root, tmp_path):
    """The fixture repacked as the real downloads (CVSS tar.gz per language from gs://cvss, the
    hub's Common Voice transcript tsvs + audio tars) and prepared gives the same pairs."""
    from steps.s2st.prepare import PrepareCvssConfig, prepare_cvss

    cvss_dl, cv_dl = tmp_path / "cvss_dl", tmp_path / "cv_dl"
    for lang in ("fr", "es", "de"):
        src = os.path.join(cvss_root, "cvss", f"{lang}-en")
        members = []
        for dirpath, _, names in os.walk(src):
            for n in sorted(names):
                rel = os.path.relpath(os.path.join(dirpath, n), src)
                members.append((rel, open(os.path.join(dirpath, n), "rb").read()))
        _tar(str(cvss_dl / "cvss_t_v1.0" / f"cvss_t_{lang}_en_v1.0.tar.gz"), members, gz=True)
        cv = os.path.join(cvss_root, "common_voice", lang)
        os.makedirs(cv_dl / "transcript" / lang)
        shutil.copy(os.path.join(cv, "validated.tsv"), cv_dl / "transcript" / lang / "validated.tsv")
        clips = sorted(os.listdir(os.path.join(cv, "clips")))
        extra = [("other_clip.mp3", b"unrelated")]
        _tar(str(cv_dl / "audio" / lang / "validated" / f"{lang}_validated_0.tar"),
             [(f"{lang}_validated_0/{c}", open(os.path.join(cv, "clips", c), "rb").read()) for c in clips] + extra,
             gz=False)
    out = str(tmp_path / "prepared")
    config = PrepareCvssConfig(cvss_path=str(cvss_dl), common_voice_path=str(cv_dl), output_path=out)
    summary = prepare_cvss(config)
    assert summary["clips"] == 12 and summary["clips_missing"] == 0
    assert not os.path.exists(os.path.join(out, "common_voice", "fr", "clips", "other_clip.mp3"))
    for split in ("train", "dev", "test"):
        got = [(p.id, p.source_text, p.target_text, len(p.source_audio)) for p in iter_pairs(out, split)]
        want = [(p.id, p.source_text, p.target_text, len(p.source_audio)) for p in iter_pairs(cvss_root, split)]
        assert got == want
    # a rerun reads the done markers and redoes nothing
    shutil.rmtree(cvss_dl)
    assert prepare_cvss(config)["clips"] == 12


def test_download_presets_pin_the_release_and_variant():
    from steps.s2st.prepare import common_voice_download, cvss_download

    cfg = cvss_download(("fr",))
    assert cfg.source_url == "gs://cvss" and cfg.include == ("cvss_t_v1.0/cvss_t_fr_en_v1.0.tar.gz",)
    with pytest.raises(ValueError, match="variant"):
        cvss_download(variant="cvss_x")
    assert "transcript/fr/*.tsv" in common_voice_download(("fr",)).include


# ---- SFT documents and exact loss masks ---------------------------------------------------------


def _random_audio(frames, seed):
    from tokenizer.audio import codes_to_chars

    return codes_to_chars(np.random.default_rng(seed).integers(0, 2048, (8, frames)))


def test_document_ids_and_exact_answer_mask_with_llama3(tmp_path_factory):
    """Expected positions come from the HF tokenizer on the whole document: the mask is 0 up to
    and including the second <|text_start|> (BOS and the whole prompt) and 1 from the first
    target-text token through <|audio_end|> and EOS; Levanter's weights are that mask shifted."""
    from transformers import AutoTokenizer

    from steps.s2st.sft_data import masked_example, s2st_document_parts
    from tokenizer.fast_tokenize import FastTokenizer
    from tokenizer.testing import llama3_extended_dir

    tok_dir = llama3_extended_dir(str(tmp_path_factory.mktemp("llama3")))
    src_audio, tgt_audio = _random_audio(5, 0), _random_audio(7, 1)
    prompt, answer = s2st_document_parts(src_audio, "Le chat dort.", "The cat sleeps.", tgt_audio)
    ex = masked_example(FastTokenizer.from_pretrained(tok_dir), prompt, answer)

    hf = AutoTokenizer.from_pretrained(tok_dir)
    ids = hf(prompt + answer, add_special_tokens=False)["input_ids"]
    assert ex["input_ids"].tolist() == ids
    tid = hf.convert_tokens_to_ids
    text_starts = [i for i, t in enumerate(ids) if t == tid("<|text_start|>")]
    assert ids[0] == tid("<|begin_of_text|>") == 128_000 and len(text_starts) == 2
    first_answer = text_starts[1] + 1
    assert hf.decode(ids[first_answer:first_answer + 1]).strip() == "The"
    assert ids[-1] == tid("<|end_of_text|>") and ids[-2] == tid("<|audio_end|>")
    expected_mask = np.array([0] * first_answer + [1] * (len(ids) - first_answer), np.float32)
    assert ex["loss_weights"].tolist() == expected_mask[1:].tolist() + [0.0]
    assert ex["loss_weights"].dtype == np.float32 and ex["input_ids"].dtype == np.int32
    # the source audio (5 frames) is all masked, the target audio (7 frames) all in the loss
    audio = (np.asarray(ids) >= tid("<|audio_end|>") + 1) & (np.asarray(ids) < 128_260 + 16_384)
    audio &= np.asarray(ids) >= 128_260
    assert int((audio & (expected_mask == 0)).sum()) == 40 and int((audio & (expected_mask == 1)).sum()) == 56


@pytest.fixture(scope="module")
def qwen_tok(tmp_path_factory):
    from tokenizer.testing import qwen_style_extended_dir

    return qwen_style_extended_dir(str(tmp_path_factory.mktemp("qwen")))


def _sft_config(cvss_root, tok, out, **kw):
    from steps.s2st.sft_data import S2stSftDataConfig
    from tests.test_mimi import SMALL

    return S2stSftDataConfig(pairs_path=cvss_root, tokenizer=tok, output_path=out, mimi_model="random",
                             device="cpu", mimi_config_overrides=SMALL, **kw)


@pytest.fixture(scope="module")
def sft_out(cvss_root, qwen_tok, tmp_path_factory):
    from steps.s2st.sft_data import build_s2st_sft_data

    out = str(tmp_path_factory.mktemp("sft"))
    build_s2st_sft_data(_sft_config(cvss_root, qwen_tok, out))
    return out


def test_sft_step_writes_masked_cache_and_summary(sft_out, qwen_tok, monkeypatch):
    import json

    import pyarrow.parquet as pq
    from levanter.store.cache import TreeCache
    from transformers import AutoTokenizer

    from steps.s2st import sft_data

    summary = json.load(open(os.path.join(sft_out, "summary.json")))
    assert summary["splits"]["train"]["pairs"] == 4 and summary["splits"]["dev"]["pairs"] == 4
    assert summary["splits"]["dev"]["cache_split"] == "validation"
    assert summary["skipped"] == {} and summary["plumbing_run"] is True
    assert summary["loss_tokens"] + summary["masked_tokens"] == summary["tokens"] > 0

    hf = AutoTokenizer.from_pretrained(qwen_tok)
    exemplar = {"input_ids": np.zeros((0,), np.int32), "loss_weights": np.zeros((0,), np.float32)}
    docs = {}
    for lang in ("de", "es", "fr"):
        for r in pq.read_table(os.path.join(sft_out, "documents", "train", f"{lang}.parquet")).to_pylist():
            docs[r["id"]] = r
    cache = TreeCache.load(os.path.join(sft_out, "train"), exemplar)
    rows = cache.get_batch_sync(list(range(len(cache))))
    assert len(rows) == 4 == len(docs)
    by_ids = {tuple(hf(d["prompt"] + d["answer"], add_special_tokens=False)["input_ids"]): d for d in docs.values()}
    loss_total = 0
    for row in rows:
        doc = by_ids[tuple(row["input_ids"].tolist())]  # the cached ids are the whole document's
        n_prompt = len(hf(doc["prompt"], add_special_tokens=False)["input_ids"])
        w = row["loss_weights"]
        assert w[: n_prompt - 1].sum() == 0 and (w[n_prompt - 1 : -1] == 1).all() and w[-1] == 0
        loss_total += int(w.sum())
    assert loss_total == summary["splits"]["train"]["loss_tokens"]

    # a rerun finds every part done and rebuilds nothing
    monkeypatch.setattr(sft_data, "build_part", lambda *a: pytest.fail("part rebuilt"))
    assert sft_data.build_s2st_sft_data(_sft_config(summary["pairs_path"], qwen_tok, sft_out))["pairs"] == 8


def test_too_long_documents_are_skipped_and_counted(cvss_root, qwen_tok, tmp_path):
    from steps.s2st.sft_data import build_s2st_sft_data

    summary = build_s2st_sft_data(_sft_config(cvss_root, qwen_tok, str(tmp_path / "sft"), splits=("test",),
                                              languages=("es",), max_document_tokens=420))
    split = summary["splits"]["test"]
    assert split["pairs"] + split["skipped"].get("too_long", 0) == 2 and split["skipped"]["too_long"] >= 1


def test_levanter_supervised_format_reads_our_weights(sft_out):
    """What train_lm sees: Levanter's own dataset for a SupervisedLmDatasetFormat component
    (packed) gives loss weights that are ours, position for position."""
    import haliax as hax
    from levanter.data.text import DatasetComponent, SupervisedLmDatasetFormat
    from levanter.data.text.datasets import dataset_for_component
    from levanter.store.cache import TreeCache

    exemplar = {"input_ids": np.zeros((0,), np.int32), "loss_weights": np.zeros((0,), np.float32)}
    cache = TreeCache.load(os.path.join(sft_out, "train"), exemplar)
    rows = cache.get_batch_sync(list(range(len(cache))))
    comp = DatasetComponent(cache_dir=os.path.join(sft_out, "train"), format=SupervisedLmDatasetFormat(), pack=True)
    ds = dataset_for_component(comp, hax.Axis("position", 1024), cache, eos_id=None,
                               block_cross_document_attention=True)
    ex = ds.as_sync_dataset()[0]
    tokens, weights = np.asarray(ex.tokens), np.asarray(ex.loss_weight)
    packed, length = [], 0
    for r in rows:  # the greedy packer fills the first example with whole documents, in order
        if length + len(r["input_ids"]) > 1024:
            break
        packed.append(r)
        length += len(r["input_ids"])
    assert len(packed) >= 2
    assert tokens[:length].tolist() == np.concatenate([r["input_ids"] for r in packed]).tolist()
    assert weights[:length].tolist() == np.concatenate([r["loss_weights"] for r in packed]).tolist()
    assert not weights[length:].any()  # padding carries no loss


def test_fixture_step_writes_the_layout_and_a_summary(tmp_path):
    import json

    from eval.fixtures import fixture_step_fn, local_fixture_step

    step = local_fixture_step("cvss", name="raw/local-cvss-t")
    assert step.name == "raw/local-cvss-t" and step.fn is fixture_step_fn
    out = str(tmp_path / "fixture")
    fixture_step_fn(type(step.config)(kind="cvss", output_path=out))
    assert json.load(open(os.path.join(out, "summary.json"))) == {"kind": "cvss", "examples": 12, "local_fixture": True}
    assert [len(list(iter_pairs(out, s))) for s in ("train", "dev", "test")] == [4, 4, 4]
