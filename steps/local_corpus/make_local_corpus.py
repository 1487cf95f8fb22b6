"""Regenerate the small synthetic-speech corpus shipped in steps/local_corpus/.

The committed files are the corpus; this script only remakes them (it needs Debian's espeak-ng
and flite, which CI does not). Run from the repository root:

    python steps/local_corpus/make_local_corpus.py            # rewrites steps/local_corpus/
    python steps/local_corpus/make_local_corpus.py --out DIR  # writes elsewhere

Layout (the same as Emilia's webdataset shards, `amphion/Emilia-Dataset` Emilia/EN/*.tar, so the
encode step reads the local corpus and the real data with the same code):

    emilia_like/EN-B000000.tar   FLAC at the voices' native rates (espeak-ng 22.05 kHz, flite 16 kHz)
    emilia_like/EN-B000001.tar   MP3 at 24 kHz (Emilia ships mp3)
        {id}.flac|mp3 + {id}.json   json: id, wav, text, duration, speaker, language, voice
    eval_fixtures/               a directory of FLAC + json sidecars: minimal pairs (grammatical /
                                 ungrammatical, word / non-word) and prompt/target sentences for
                                 later eval fixtures.

Ids follow Emilia: EN_B{batch}_S{recording}_W{utterance}; one recording = one synthetic voice
reading 3-6 consecutive sentences. All sentences were written for this corpus (public domain).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import tarfile
import tempfile

import numpy as np
import soundfile as sf

HERE = os.path.dirname(os.path.abspath(__file__))

# (engine, voice, sentences): one recording each.
RECORDINGS = [
    ("espeak-ng", "en-us", [
        "The lighthouse keeper climbed the stairs at dusk.",
        "He wound the clock, trimmed the wick, and lit the lamp.",
        "Far out at sea, a small boat turned toward the light.",
        "By morning, the fog had lifted from the harbour.",
    ]),
    ("espeak-ng", "en-gb+f3", [
        "Preheat the oven to two hundred degrees.",
        "Mix the flour, the butter, and a pinch of salt in a large bowl.",
        "Add cold water, one spoon at a time, until the dough holds together.",
        "Bake for twenty minutes, or until the crust is golden.",
        "Let it cool before you slice it!",
    ]),
    ("espeak-ng", "en-gb-scotland+m3", [
        "Good evening, and welcome to the weather report.",
        "Tomorrow will start cold, with frost in the valleys.",
        "Showers will spread from the west by the afternoon.",
    ]),
    ("espeak-ng", "en-us-nyc+f2", [
        "Did you remember to water the plants?",
        "I did, but the tomatoes still look tired.",
        "Maybe they need more sun, not more water.",
        "Let's move them to the window on Saturday.",
    ]),
    ("espeak-ng", "en-029+m1", [
        "Chapter one: the river.",
        "Anna had lived beside the river all her life.",
        "In spring it ran brown and fast; in summer it slowed to a whisper.",
        "Every evening she counted the herons on the far bank.",
        "There were seven, and then, one evening, there were eight.",
        "Where had the new one come from?",
    ]),
    ("flite", "slt", [
        "Please keep your ticket until the end of your journey.",
        "The next train to Riverside leaves from platform four.",
        "Passengers are reminded not to leave bags unattended.",
    ]),
    ("flite", "rms", [
        "Welcome to the museum of old machines.",
        "On your left is a printing press from the eighteen hundreds.",
        "It could print two hundred pages an hour.",
        "Next to it stands a loom that once wove silk.",
    ]),
    ("flite", "awb", [
        "Measure twice, and cut once.",
        "Sand the edges until they feel smooth to the touch.",
        "Then apply a thin coat of oil, and wait a day.",
        "The second coat goes on much faster.",
    ]),
]

# Eval-fixture utterances: (id, engine, voice, text, kind)
EVAL_UTTERANCES = [
    ("EVAL_pair000_good", "espeak-ng", "en-us", "The dogs are barking at the mailman.", "syntax_good"),
    ("EVAL_pair000_bad", "espeak-ng", "en-us", "The dogs is barking at the mailman.", "syntax_bad"),
    ("EVAL_pair001_good", "flite", "slt", "She has finished her homework.", "syntax_good"),
    ("EVAL_pair001_bad", "flite", "slt", "She have finished her homework.", "syntax_bad"),
    ("EVAL_word000_real", "espeak-ng", "en-gb", "brick", "lexical_word"),
    ("EVAL_word000_fake", "espeak-ng", "en-gb", "blick", "lexical_nonword"),
    ("EVAL_word001_real", "flite", "rms", "window", "lexical_word"),
    ("EVAL_word001_fake", "flite", "rms", "wondow", "lexical_nonword"),
    ("EVAL_tts000_prompt", "flite", "awb", "I usually walk to work when the weather is nice.", "tts_prompt"),
    ("EVAL_tts000_target", "flite", "awb", "The library opens at nine on weekdays.", "tts_target"),
    ("EVAL_asr000", "espeak-ng", "en-us+m2", "A quiet street, a warm light, and an open door.", "asr"),
]


def synthesize(engine: str, voice: str, text: str) -> tuple[np.ndarray, int]:
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "out.wav")
        if engine == "espeak-ng":
            cmd = ["espeak-ng", "-v", voice, "-s", "160", "-w", out, text]
        elif engine == "flite":
            cmd = ["flite", "-voice", voice, "-t", text, "-o", out]
        else:
            raise ValueError(f"unknown engine {engine!r}")
        subprocess.run(cmd, check=True, capture_output=True)
        audio, sr = sf.read(out, dtype="float32")
    if audio.ndim == 2:
        audio = audio.mean(axis=1)
    return audio, sr


def encode_audio(audio: np.ndarray, sr: int, fmt: str) -> tuple[bytes, int]:
    buf = io.BytesIO()
    if fmt == "mp3":
        import soxr

        audio = soxr.resample(audio, sr, 24_000).astype(np.float32)
        sr = 24_000
        sf.write(buf, audio, sr, format="MP3", subtype="MPEG_LAYER_III", compression_level=0.9)
    else:
        sf.write(buf, audio, sr, format="FLAC", subtype="PCM_16")
    return buf.getvalue(), sr


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def make_shard(path: str, batch: int, recordings, fmt: str) -> int:
    count = 0
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for s, (engine, voice, sentences) in enumerate(recordings):
            speaker = f"EN_B{batch:05d}_S{s:05d}"
            for w, text in enumerate(sentences):
                uid = f"{speaker}_W{w:06d}"
                audio, sr = synthesize(engine, voice, text)
                data, _ = encode_audio(audio, sr, fmt)
                meta = {
                    "id": uid,
                    "wav": f"EN_B{batch:05d}/{speaker}/{fmt}/{uid}.{fmt}",
                    "text": " " + text,  # Emilia's transcripts carry a leading space
                    "duration": round(len(audio) / sr, 3),
                    "speaker": speaker,
                    "language": "en",
                    "voice": f"{engine}:{voice}",
                }
                _add(tar, f"{uid}.{fmt}", data)
                _add(tar, f"{uid}.json", json.dumps(meta, sort_keys=True).encode("utf-8"))
                count += 1
    return count


def make_eval_fixtures(out_dir: str) -> int:
    os.makedirs(out_dir, exist_ok=True)
    for uid, engine, voice, text, kind in EVAL_UTTERANCES:
        audio, sr = synthesize(engine, voice, text)
        data, _ = encode_audio(audio, sr, "flac")
        with open(os.path.join(out_dir, f"{uid}.flac"), "wb") as f:
            f.write(data)
        meta = {"id": uid, "text": text, "kind": kind, "voice": f"{engine}:{voice}",
                "duration": round(len(audio) / sr, 3), "language": "en"}
        with open(os.path.join(out_dir, f"{uid}.json"), "w", encoding="utf-8") as f:
            json.dump(meta, f, sort_keys=True)
            f.write("\n")
    return len(EVAL_UTTERANCES)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=HERE, help="output directory (default: steps/local_corpus)")
    args = parser.parse_args(argv)
    shard_dir = os.path.join(args.out, "emilia_like")
    os.makedirs(shard_dir, exist_ok=True)
    n0 = make_shard(os.path.join(shard_dir, "EN-B000000.tar"), 0, RECORDINGS[:5], "flac")
    n1 = make_shard(os.path.join(shard_dir, "EN-B000001.tar"), 1, RECORDINGS[5:], "mp3")
    n2 = make_eval_fixtures(os.path.join(args.out, "eval_fixtures"))
    print(f"wrote {n0 + n1} utterances in 2 shards and {n2} eval-fixture utterances under {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
