"""Remake the committed CVSS-T fixture sources in steps/s2st/cvss_fixture/ (needs Debian's
espeak-ng; CI does not run this). Run from the repository root:

    python steps/s2st/make_cvss_fixture.py

Twelve short sentence pairs, four per source language (French, Spanish, German), each spoken by
an espeak-ng voice variant in the source language and by the same variant in English: the
fixture's stand-in for CVSS-T's voice transfer. Stored as 24 kHz MP3 (`{clip}.src.mp3`,
`{clip}.tgt.mp3`) plus `pairs.json`; `steps.s2st.fixture` turns them into the CVSS + Common Voice
layout. Plumbing data: the sentences are real translations, the voices are synthetic.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import soundfile as sf

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "cvss_fixture")

# (lang, variant, split, source sentence, English translation)
PAIRS = [
    ("fr", "m3", "train", "Le chat dort sur la chaise.", "The cat sleeps on the chair."),
    ("fr", "f2", "train", "Il fait beau aujourd'hui.", "The weather is nice today."),
    ("fr", "m1", "dev", "Nous partons demain matin.", "We leave tomorrow morning."),
    ("fr", "f4", "test", "Où est la gare, s'il vous plaît ?", "Where is the station, please?"),
    ("es", "m2", "train", "El libro está en la mesa.", "The book is on the table."),
    ("es", "f3", "dev", "Me gusta mucho la música.", "I like music a lot."),
    ("es", "m4", "test", "Mañana vamos a la playa.", "Tomorrow we go to the beach."),
    ("es", "f1", "test", "¿Cuántos años tienes?", "How old are you?"),
    ("de", "m5", "train", "Das Wasser ist sehr kalt.", "The water is very cold."),
    ("de", "f5", "dev", "Ich lese gern am Abend.", "I like to read in the evening."),
    ("de", "m6", "dev", "Der Zug kommt um acht Uhr.", "The train arrives at eight o'clock."),
    ("de", "f2", "test", "Wir wohnen in einer kleinen Stadt.", "We live in a small town."),
]
FIRST_CLIP = 19_000_000


def synthesize(voice: str, text: str) -> tuple[np.ndarray, int]:
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "out.wav")
        subprocess.run(["espeak-ng", "-v", voice, "-s", "165", "-w", out, text], check=True, capture_output=True)
        audio, sr = sf.read(out, dtype="float32")
    return (audio.mean(axis=1) if audio.ndim == 2 else audio), sr


def mp3_24k(audio: np.ndarray, sr: int) -> bytes:
    import soxr

    buf = io.BytesIO()
    sf.write(buf, soxr.resample(audio, sr, 24_000).astype(np.float32), 24_000, format="MP3",
             subtype="MPEG_LAYER_III", compression_level=0.9)
    return buf.getvalue()


def main(argv=None) -> int:
    os.makedirs(OUT, exist_ok=True)
    rows = []
    for i, (lang, variant, split, src_text, tgt_text) in enumerate(PAIRS):
        clip = f"common_voice_{lang}_{FIRST_CLIP + i}"
        for side, voice, text in (("src", f"{lang}+{variant}", src_text), ("tgt", f"en-us+{variant}", tgt_text)):
            audio, sr = synthesize(voice, text)
            with open(os.path.join(OUT, f"{clip}.{side}.mp3"), "wb") as f:
                f.write(mp3_24k(audio, sr))
        rows.append({"clip": f"{clip}.mp3", "lang": lang, "split": split, "sentence": src_text,
                     "translation": tgt_text, "voice": f"espeak-ng:{lang}+{variant} / en-us+{variant}"})
    with open(os.path.join(OUT, "pairs.json"), "w", encoding="utf-8") as f:
        json.dump(rows, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print(f"wrote {len(rows)} pairs to {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
