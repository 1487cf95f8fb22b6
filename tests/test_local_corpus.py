"""The shipped synthetic-speech corpus: layout, content, size, and that the script remakes it."""

import json
import shutil
import subprocess
import sys
import tarfile
from collections import defaultdict
from pathlib import Path

import pytest
import soundfile as sf

from steps.audio_io import Utterance, iter_raw_items, prepare

CORPUS = Path(__file__).resolve().parent.parent / "steps" / "local_corpus"
SHARDS = sorted((CORPUS / "emilia_like").glob("*.tar"))


def test_size_and_layout():
    total = sum(p.stat().st_size for p in CORPUS.rglob("*") if p.is_file())
    assert total <= 10 * 1024 * 1024
    assert [p.name for p in SHARDS] == ["EN-B000000.tar", "EN-B000001.tar"]
    for shard in SHARDS:
        with tarfile.open(shard) as tar:
            names = tar.getnames()
        stems = defaultdict(set)
        for name in names:
            stem, ext = name.split(".", 1)
            stems[stem].add(ext)
        for stem, exts in stems.items():  # Emilia's webdataset pairs: {id}.{mp3|flac} + {id}.json
            assert "json" in exts and len(exts) == 2 and exts & {"flac", "mp3"}, (shard, stem)


def test_content_recordings_voices_transcripts():
    by_recording = defaultdict(list)
    voices, rates = set(), set()
    for shard in SHARDS:
        with tarfile.open(shard) as tar:
            for member in tar:
                if member.name.endswith(".json"):
                    meta = json.loads(tar.extractfile(member).read())
                    assert {"id", "text", "duration", "speaker", "language"} <= set(meta)
                    voices.add(meta["voice"])
                else:
                    rates.add(sf.info(tar.extractfile(member)).samplerate)
        for raw in iter_raw_items(str(shard)):
            utt = prepare(raw)
            assert isinstance(utt, Utterance), utt
            assert abs(utt.duration - raw.meta["duration"]) < 0.06
            by_recording[utt.recording_id].append(utt)
    assert 6 <= len(by_recording) <= 10
    for rec, utts in by_recording.items():
        assert 3 <= len(utts) <= 6, rec
        assert [u.order for u in utts] == list(range(len(utts)))
        assert len({u.utterance_id.rsplit("_W", 1)[0] for u in utts}) == 1
    texts = [u.transcript for us in by_recording.values() for u in us]
    assert all(t[0].isupper() and t[-1] in ".!?" for t in texts)
    assert any("," in t for t in texts) and any("?" in t for t in texts)
    assert len(voices) >= 6 and {v.split(":")[0] for v in voices} == {"espeak-ng", "flite"}
    assert len(rates) >= 2  # the encoder resamples


def test_eval_fixture_utterances():
    items = [prepare(r) for r in iter_raw_items(str(CORPUS / "eval_fixtures"))]
    assert all(isinstance(i, Utterance) for i in items)
    kinds = defaultdict(list)
    for path in (CORPUS / "eval_fixtures").glob("*.json"):
        meta = json.loads(path.read_text())
        kinds[meta["kind"]].append(meta["id"])
    assert len(kinds["syntax_good"]) == len(kinds["syntax_bad"]) >= 2
    assert len(kinds["lexical_word"]) == len(kinds["lexical_nonword"]) >= 2
    assert kinds["tts_prompt"] and kinds["tts_target"] and kinds["asr"]


@pytest.mark.skipif(not (shutil.which("espeak-ng") and shutil.which("flite")), reason="needs espeak-ng and flite")
def test_script_regenerates_the_shipped_files(tmp_path):
    script = CORPUS / "make_local_corpus.py"
    subprocess.run([sys.executable, str(script), "--out", str(tmp_path)], check=True, capture_output=True)
    shipped = sorted(p.relative_to(CORPUS) for p in CORPUS.rglob("*") if p.is_file() and p.suffix != ".py"
                     and "__pycache__" not in p.parts)
    made = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert made == shipped
    for rel in made:
        assert (tmp_path / rel).read_bytes() == (CORPUS / rel).read_bytes(), rel
