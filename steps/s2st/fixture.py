"""The offline CVSS-T + Common Voice fixture: twelve synthetic pairs (French, Spanish, German ->
English; committed in steps/s2st/cvss_fixture/, remade by make_cvss_fixture.py) written in the
layout `steps.s2st.cvss` reads, with the releases' own file formats: CVSS split tsvs without a
header and 24 kHz 16-bit wav targets named `{clip}.wav`; Common Voice `validated.tsv` with its
header and mp3 clips. It exercises the code; it measures nothing.

    write_cvss_fixture("/tmp/cvss", n_per_split=4)      # or eval.fixtures.local_fixture_step("cvss") (all 12)
"""

from __future__ import annotations

import io
import json
import os
from steps.audio_io import decode_audio_bytes, to_mono_24k
from steps.s2st.cvss import COMMON_VOICE_DIR, CVSS_DIR, SPLITS

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCES = os.path.join(HERE, "cvss_fixture")
COMMON_VOICE_HEADER = ("client_id", "path", "sentence", "up_votes", "down_votes", "age", "gender", "accent")


def fixture_pairs() -> list[dict]:
    """The committed pairs: {clip, lang, split, sentence, translation, voice}."""
    with open(os.path.join(SOURCES, "pairs.json"), encoding="utf-8") as f:
        return json.load(f)


def _wav24k(mp3: bytes) -> bytes:
    import soundfile as sf

    samples, sr = decode_audio_bytes(mp3, "mp3")
    buf = io.BytesIO()
    sf.write(buf, to_mono_24k(samples, sr), 24_000, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def _write(path: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def write_cvss_fixture(out: str, n_per_split: int = 4) -> int:
    """Write the first `n_per_split` pairs of each split (at most 4 exist) under local `out`;
    returns the number of pairs written."""
    chosen = []
    for split in SPLITS:
        chosen += [p for p in fixture_pairs() if p["split"] == split][:n_per_split]
    langs = sorted({p["lang"] for p in fixture_pairs()})
    for lang in langs:
        lang_dir = os.path.join(out, CVSS_DIR, f"{lang}-en")
        for split in SPLITS:
            rows = [p for p in chosen if p["lang"] == lang and p["split"] == split]
            _write(os.path.join(lang_dir, f"{split}.tsv"),
                   "".join(f"{p['clip']}\t{p['translation']}\n" for p in rows).encode("utf-8"))
            for p in rows:
                stem = p["clip"].rsplit(".", 1)[0]
                with open(os.path.join(SOURCES, f"{stem}.tgt.mp3"), "rb") as f:
                    _write(os.path.join(lang_dir, split, f"{p['clip']}.wav"), _wav24k(f.read()))
        cv_dir = os.path.join(out, COMMON_VOICE_DIR, lang)
        lines = ["\t".join(COMMON_VOICE_HEADER)]
        for k, p in enumerate(p for p in chosen if p["lang"] == lang):
            stem = p["clip"].rsplit(".", 1)[0]
            lines.append("\t".join([f"{k:064x}", p["clip"], p["sentence"], "2", "0", "", "", ""]))
            with open(os.path.join(SOURCES, f"{stem}.src.mp3"), "rb") as f:
                _write(os.path.join(cv_dir, "clips", p["clip"]), f.read())
        _write(os.path.join(cv_dir, "validated.tsv"), ("\n".join(lines) + "\n").encode("utf-8"))
    return len(chosen)
