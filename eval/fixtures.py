"""Small local stand-ins for the evaluation datasets, in the same on-disk layout and schema as
their raw/ downloads (eval.datasets), made from the shipped synthetic speech:
steps/local_corpus/eval_fixtures (minimal pairs, a TTS prompt/target, an ASR sentence) and
steps/local_corpus/emilia_like (33 utterances of 8 synthetic voices). Every eval task can then
run offline. Sizes are a handful of examples each: they exercise the code, they measure nothing.

    write_fixture("sblimp", out_dir)      # or: local_fixture_step("sblimp") as an executor step

Kinds: sblimp, swuggy, salmon, librispeech, seed-tts-eval, hellaswag, storycloze-text,
storycloze-spoken, cvss (S2ST pairs, from steps/s2st/cvss_fixture). The LibriSpeech-like sets reuse the corpus the tiny test model trains on.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
from pipeline import ExecutorStep, ResourceConfig, this_output_path, versioned
from pipeline.fileio import atomic_write_bytes, atomic_write_json, join
from steps.audio_io import decode_audio_bytes, iter_webdataset, to_mono_24k
from steps.s2st.fixture import write_cvss_fixture

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(os.path.dirname(HERE), "steps", "local_corpus")
FIXTURES = os.path.join(CORPUS, "eval_fixtures")
EMILIA_LIKE = os.path.join(CORPUS, "emilia_like")


def _fixture(uid: str) -> tuple[bytes, dict]:
    with open(os.path.join(FIXTURES, f"{uid}.flac"), "rb") as f:
        data = f.read()
    with open(os.path.join(FIXTURES, f"{uid}.json"), encoding="utf-8") as f:
        return data, json.load(f)


def _fixtures_of(kind_good: str, kind_bad: str) -> list[tuple[str, str]]:
    """(good id, bad id) pairs of the eval-fixture utterances, by shared prefix."""
    metas = [json.load(open(os.path.join(FIXTURES, n), encoding="utf-8"))
             for n in sorted(os.listdir(FIXTURES)) if n.endswith(".json")]
    good = {m["id"].rsplit("_", 1)[0]: m["id"] for m in metas if m["kind"] == kind_good}
    bad = {m["id"].rsplit("_", 1)[0]: m["id"] for m in metas if m["kind"] == kind_bad}
    return [(good[k], bad[k]) for k in sorted(good) if k in bad]


def corpus_utterances() -> list[dict]:
    """The emilia_like corpus: {id, speaker, text, audio (24 kHz float32), bytes, ext} in order."""
    out = []
    for name in sorted(os.listdir(EMILIA_LIKE)):
        if name.endswith(".tar"):
            for item in iter_webdataset(os.path.join(EMILIA_LIKE, name)):
                samples, sr = decode_audio_bytes(item.audio, item.audio_ext)
                out.append({"id": item.key, "speaker": item.meta["speaker"], "text": item.meta["text"].strip(),
                            "audio": to_mono_24k(samples, sr), "bytes": item.audio, "ext": item.audio_ext})
    return out


def _flac(audio: np.ndarray, sr: int = 24_000) -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.asarray(audio, dtype=np.float32), sr, format="FLAC", subtype="PCM_16")
    return buf.getvalue()


def _wav16k(audio24: np.ndarray) -> bytes:
    import soundfile as sf
    import soxr

    buf = io.BytesIO()
    sf.write(buf, soxr.resample(audio24, 24_000, 16_000).astype(np.float32), 16_000, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def _write_parquet(path: str, rows: list[dict]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    os.makedirs(os.path.dirname(path), exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)


def _audio_struct(data: bytes, name: str) -> dict:
    return {"bytes": data, "path": name}


# ---- one writer per kind ----------------------------------------------------------------------


def _minimal_pairs(out: str, good: str, bad: str) -> int:
    rows = []
    for g, b in _fixtures_of(good, bad):
        (gd, gm), (bd, bm) = _fixture(g), _fixture(b)
        rows.append({"id": g.rsplit("_", 1)[0], "positive": _audio_struct(gd, f"{g}.flac"),
                     "negative": _audio_struct(bd, f"{b}.flac"),
                     "positive_transcription": gm["text"], "negative_transcription": bm["text"]})
    _write_parquet(os.path.join(out, "data", "train-00000-of-00001.parquet"), rows)
    return len(rows)


def write_sblimp(out: str) -> int:
    return _minimal_pairs(out, "syntax_good", "syntax_bad")


def write_swuggy(out: str) -> int:
    return _minimal_pairs(out, "lexical_word", "lexical_nonword")


def write_salmon(out: str) -> int:
    """Two SALMon-like parts: the positive is one voice throughout; the negative switches voice
    (speaker_consistency) or switches to another recording of the other engine (gender_consistency)
    halfway through."""
    utts = corpus_utterances()
    first = {}
    for u in utts:
        first.setdefault(u["speaker"], []).append(u)
    speakers = sorted(first)
    rows = {"speaker_consistency": [], "gender_consistency": []}
    for i in range(2):
        a, b = first[speakers[i]][0], first[speakers[i + 1]][1]
        half = len(a["audio"]) // 2
        mixed = np.concatenate([a["audio"][:half], b["audio"][len(b["audio"]) // 2 :]])
        rows["speaker_consistency"].append({"task": "speaker_consistency", "ind": i,
                                            "positive_audio": _audio_struct(_flac(a["audio"]), f"{a['id']}.flac"),
                                            "negative_audio": _audio_struct(_flac(mixed), f"mix{i}.flac")})
        c, d = first[speakers[i]][1], first[speakers[-1 - i]][0]
        mixed = np.concatenate([c["audio"][: len(c["audio"]) // 2], d["audio"][len(d["audio"]) // 2 :]])
        rows["gender_consistency"].append({"task": "gender_consistency", "ind": i,
                                           "positive_audio": _audio_struct(_flac(c["audio"]), f"{c['id']}.flac"),
                                           "negative_audio": _audio_struct(_flac(mixed), f"gmix{i}.flac")})
    for part, part_rows in rows.items():
        _write_parquet(os.path.join(out, part, "train-00000-of-00001.parquet"), part_rows)
    return sum(len(r) for r in rows.values())


def write_librispeech(out: str, per_split: int = 4) -> int:
    """LibriSpeech-schema parquet: dev-clean from shard 0's first utterances, test-clean from shard 1's."""
    utts = corpus_utterances()
    splits = {"clean/validation": [u for u in utts if "_B00000_" in u["id"]][:per_split],
              "clean/test": [u for u in utts if "_B00001_" in u["id"]][:per_split]}
    n = 0
    for sub, chosen in splits.items():
        rows = []
        for k, u in enumerate(chosen):
            spk = 100 + int(u["speaker"][-5:])
            lid = f"{spk}-{1000 + int(u['id'][4:9])}-{k:04d}"
            rows.append({"file": f"{lid}.flac", "audio": _audio_struct(_flac(u["audio"]), f"{lid}.flac"),
                         "text": u["text"].upper(), "speaker_id": spk, "chapter_id": 1000 + int(u["id"][4:9]),
                         "id": lid})
        _write_parquet(os.path.join(out, sub, "0000.parquet"), rows)
        n += len(rows)
    return n


def write_seed_tts_eval(out: str) -> int:
    """seed-tts-eval layout: en/meta.lst (utt|prompt_text|prompt_wav|target_text) + 16 kHz prompt wavs."""
    wav_dir = os.path.join(out, "en", "prompt-wavs")
    os.makedirs(wav_dir, exist_ok=True)
    pdata, pmeta = _fixture("EVAL_tts000_prompt")
    _, tmeta = _fixture("EVAL_tts000_target")
    entries = [("tts000", pmeta["text"], to_mono_24k(*decode_audio_bytes(pdata, "flac")), tmeta["text"])]
    utts = corpus_utterances()
    entries.append(("tts001", utts[4]["text"], utts[4]["audio"], utts[5]["text"]))
    lines = []
    for utt, ptext, paudio, target in entries:
        with open(os.path.join(wav_dir, f"{utt}.wav"), "wb") as f:
            f.write(_wav16k(paudio))
        lines.append(f"{utt}|{ptext}|prompt-wavs/{utt}.wav|{target}")
    with open(os.path.join(out, "en", "meta.lst"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return len(entries)


_HELLASWAG = [
    {"activity_label": "Baking cookies", "ctx_a": "A woman mixes flour and butter in a bowl.",
     "ctx_b": "she", "endings": ["rolls the dough into small balls and puts them on a tray.",
                                 "drives a car across the desert.", "swims to the bottom of the pool.",
                                 "paints the ceiling [title] blue."], "label": "0"},
    {"activity_label": "Washing a dog", "ctx_a": "A man fills a tub with warm water.",
     "ctx_b": "then", "endings": ["the moon rises over the mountains.", "he lifts the dog into the tub and scrubs it.",
                                  "he reads a newspaper.", "a plane lands."], "label": "1"},
    {"activity_label": "Gardening", "ctx_a": "A girl kneels next to a flower bed.",
     "ctx_b": "she", "endings": ["starts a chess game.", "sings on a stage.",
                                 "digs a small hole and plants a seed.", "flies a kite at the beach."], "label": "2"},
]


def write_hellaswag(out: str) -> int:
    rows = [{"ind": i, "ctx": r["ctx_a"] + " " + r["ctx_b"].capitalize(), "source_id": f"local~{i}",
             "split": "val", "split_type": "indomain", **r} for i, r in enumerate(_HELLASWAG)]
    _write_parquet(os.path.join(out, "default", "validation", "0000.parquet"), rows)
    return len(rows)


def _stories() -> list[tuple[str, list[dict], dict, dict]]:
    """(id, four context utterances, right ending, wrong ending) from recordings with >= 5 utterances."""
    utts = corpus_utterances()
    recs: dict[str, list[dict]] = {}
    for u in utts:
        recs.setdefault(u["speaker"], []).append(u)
    long = [r for r in recs.values() if len(r) >= 5]
    others = [r for r in recs.values() if len(r) < 5]
    return [(f"story{i}", r[:4], r[4], others[i][-1]) for i, r in enumerate(long)]


def write_storycloze_text(out: str) -> int:
    rows = []
    for sid, ctx, right, wrong in _stories():
        label = 1 + len(rows) % 2
        quiz = [right["text"], wrong["text"]] if label == 1 else [wrong["text"], right["text"]]
        rows.append({"story_id": sid, **{f"input_sentence_{k + 1}": c["text"] for k, c in enumerate(ctx)},
                     "sentence_quiz1": quiz[0], "sentence_quiz2": quiz[1], "answer_right_ending": label})
    _write_parquet(os.path.join(out, "storycloze_2016_test.parquet"), rows)
    return len(rows)


def write_storycloze_spoken(out: str) -> int:
    os.makedirs(os.path.join(out, "sSC"), exist_ok=True)
    stories = _stories()
    for sid, ctx, right, wrong in stories:
        context = np.concatenate([c["audio"] for c in ctx])
        for kind, ending in (("correct", right), ("incorrect", wrong)):
            with open(os.path.join(out, "sSC", f"{sid}_{kind}.wav"), "wb") as f:
                f.write(_wav16k(np.concatenate([context, ending["audio"]])))
    return len(stories)


def write_cvss(out: str) -> int:
    """CVSS-T + Common Voice pairs in the layout steps.s2st.cvss reads (steps.s2st.fixture)."""
    return write_cvss_fixture(out)


WRITERS: dict[str, Callable[[str], int]] = {
    "sblimp": write_sblimp,
    "swuggy": write_swuggy,
    "salmon": write_salmon,
    "librispeech": write_librispeech,
    "seed-tts-eval": write_seed_tts_eval,
    "hellaswag": write_hellaswag,
    "storycloze-text": write_storycloze_text,
    "storycloze-spoken": write_storycloze_spoken,
    "cvss": write_cvss,
}


def write_fixture(kind: str, out: str) -> int:
    """Write the local fixture `kind` into the local directory `out`; returns its example count."""
    if kind not in WRITERS:
        raise KeyError(f"unknown fixture {kind!r}; known: {', '.join(WRITERS)}")
    return WRITERS[kind](out)


# ---- as an executor step --------------------------------------------------------------------


@dataclass(frozen=True)
class FixtureConfig:
    kind: str
    output_path: str


def fixture_step_fn(config: FixtureConfig) -> None:
    """Write the fixture locally, then copy it under the step's output (local or gs://)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        n = write_fixture(config.kind, tmp)
        for dirpath, _, names in os.walk(tmp):
            for name in sorted(names):
                rel = os.path.relpath(os.path.join(dirpath, name), tmp)
                with open(os.path.join(dirpath, name), "rb") as f:
                    atomic_write_bytes(join(config.output_path, *rel.split(os.sep)), f.read())
    atomic_write_json(join(config.output_path, "summary.json"), {"kind": config.kind, "examples": n,
                                                                 "local_fixture": True})


def local_fixture_step(kind: str, name: Optional[str] = None):
    """`raw/local-eval-<kind>`: the local fixture as a step whose output a task reads like a download."""
    return ExecutorStep(name=name or f"raw/local-eval-{kind}", fn=fixture_step_fn,
                        config=FixtureConfig(kind=versioned(kind), output_path=this_output_path()),
                        description=f"local offline stand-in for the {kind} eval data (plumbing only)",
                        resources=ResourceConfig(cpus=1))
