"""Mixtures as data (final mix, ablations), weight validation, annealing stages, and the token
composition transform (S = codebook 0 only, frame-major)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from steps.training.composition import ComposeConfig, compose_document, compose_documents, keep_codebooks
from steps.training.mixtures import (
    FINAL, MIXTURES, anneal_start_step, get_mixture, levanter_train_weights, mixture, text_ratio_mixture,
    validate_weights,
)
from tokenizer.audio import chars_to_codes, codes_to_chars


def test_final_mix_is_the_papers():
    assert FINAL.as_dict == {"yodas2-en": 0.516, "emilia-yodas-en": 0.288, "emilia-en": 0.146,
                             "nemotron-cc-hq-actual": 0.05}


def test_ablation_mixes():
    assert get_mixture("text-0pct").active_sources == ["yodas2-en"]
    assert get_mixture("text-90pct").as_dict == pytest.approx({"yodas2-en": 0.1, "nemotron-cc-hq-actual": 0.9})
    assert text_ratio_mixture(0.3).as_dict == pytest.approx({"yodas2-en": 0.7, "nemotron-cc-hq-actual": 0.3})
    assert get_mixture("source-mls").as_dict == {"mls-en": 1.0}
    emilia = get_mixture("source-emilia").as_dict
    assert emilia["emilia-yodas-en"] / emilia["emilia-en"] == pytest.approx(0.288 / 0.146)
    for comp in ("S", "S+A", "S+A+T"):
        m = get_mixture(f"composition-{comp}")
        assert m.composition == comp and m.as_dict == {"yodas2-en": 1.0}  # YODAS only, no Nemotron
    for m in MIXTURES.values():
        assert sum(m.as_dict.values()) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("weights, message", [
    ({"yodas2-en": 0.6, "emilia-en": 0.3}, r"sum to 0\.9.*not 1"),
    ({"yodas2-en": 1.2, "emilia-en": -0.2}, r"'emilia-en' is negative"),
    ({"yodas2": 1.0}, r"unknown source\(s\) \['yodas2'\]"),
    ({"yodas2-en": float("nan")}, "finite"),
    ({}, "no weights"),
])
def test_bad_weights_are_clear_errors(weights, message):
    with pytest.raises(ValueError, match=message):
        validate_weights(weights)
    with pytest.raises(ValueError, match="mixture 'bad'"):
        mixture("bad", weights)


def test_weights_within_tolerance_pass():
    assert validate_weights({"yodas2-en": 0.5 + 5e-7, "emilia-en": 0.5}) == {"yodas2-en": 0.5 + 5e-7, "emilia-en": 0.5}


def test_annealing_stages_start_on_a_block_boundary():
    step = anneal_start_step(1000, batch_size=48, decay_fraction=0.2)
    assert step >= 800 and (step * 48) % 2048 == 0 and step < 800 + 2048
    stages = levanter_train_weights(get_mixture("prelim"), get_mixture("source-emilia"), step)
    assert stages[0] == (0, {"emilia-en": 0.0, "emilia-yodas-en": 0.0, "yodas2-multilingual": 1.0})
    assert stages[1][0] == step and stages[1][1]["yodas2-multilingual"] == 0.0


# ---- token composition ----------------------------------------------------------------------

def _doc(codes_list, transcripts, fmt="text_first"):
    parts = ["<|begin_of_text|>"]
    for codes, text in zip(codes_list, transcripts):
        a = "<|audio_start|>" + codes_to_chars(codes) + "<|audio_end|>"
        t = "<|text_start|>" + text + "<|text_end|>"
        parts.append(t + a if fmt == "text_first" else a + t)
    return "".join(parts)


def test_s_keeps_codebook_zero_frame_major():
    rng = np.random.default_rng(0)
    c1, c2 = rng.integers(0, 2048, (8, 5)), rng.integers(0, 2048, (8, 3))
    doc = _doc([c1, c2], ["Hello there.", "Bye."])
    s = compose_document(doc, "S")
    want = ("<|begin_of_text|><|audio_start|>" + codes_to_chars(c1[:1]) + "<|audio_end|>"
            "<|audio_start|>" + codes_to_chars(c2[:1]) + "<|audio_end|>")
    assert s == want
    # codebook 0 over time, not a prefix of time (the reshape(8, -1) bug would keep c1[:, :5//8...])
    run = s.split("<|audio_start|>")[1].split("<|audio_end|>")[0]
    assert [ord(ch) - 0xE000 for ch in run] == c1[0].tolist()
    assert compose_document(doc, "S+A") == ("<|begin_of_text|><|audio_start|>" + codes_to_chars(c1) + "<|audio_end|>"
                                            "<|audio_start|>" + codes_to_chars(c2) + "<|audio_end|>")
    assert compose_document(doc, "S+A+T") == doc
    assert compose_document(_doc([c1], ["x"], "audio_first"), "S") == compose_document(_doc([c1], ["x"]), "S")


def test_keep_codebooks_checks_layout():
    codes = np.arange(16).reshape(8, 2)
    assert np.array_equal(np.asarray(chars_to_codes(keep_codebooks(codes_to_chars(codes), 2), num_codebooks=2)), codes[:2])
    with pytest.raises(ValueError, match="whole number"):
        keep_codebooks(codes_to_chars(codes)[:-1], 1)
    codebook_major = "".join(chr(0xE000 + k * 2048 + int(c)) for k in range(8) for c in codes[k])
    with pytest.raises(ValueError, match="frame-major"):
        keep_codebooks(codebook_major, 1)


def test_text_only_documents_vanish_without_text():
    assert compose_document("<|begin_of_text|>Plain web text.", "S+A") == ""
    assert compose_document("<|begin_of_text|>Plain web text.", "S+A+T") == "<|begin_of_text|>Plain web text."
    with pytest.raises(ValueError, match="composition must be one of"):
        compose_document("x", "A")


def test_compose_step_writes_documents_and_drops_text_first_twins(tmp_path):
    rng = np.random.default_rng(1)
    c = rng.integers(0, 2048, (8, 4))
    rows = [{"id": "r1:text_first", "recording_id": "r1", "format": "text_first", "text": _doc([c], ["Hi."])},
            {"id": "r1:audio_first", "recording_id": "r1", "format": "audio_first", "text": _doc([c], ["Hi."], "audio_first")}]
    (tmp_path / "in" / "documents").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "in" / "documents" / "part-00000.parquet")
    summary = compose_documents(ComposeConfig(str(tmp_path / "in"), "S", str(tmp_path / "out")))
    out = pq.read_table(tmp_path / "out" / "documents" / "part-00000.parquet").to_pylist()
    assert [r["id"] for r in out] == ["r1:audio_first"]
    assert out[0]["text"] == "<|begin_of_text|><|audio_start|>" + codes_to_chars(c[:1]) + "<|audio_end|>"
    assert summary["text_first_dropped"] == 1 and summary["documents_out"] == 1
