"""`soda generate` runs every task end to end through `infra.cli.main` on a tiny CPU model, from
an HF export and from a Levanter checkpoint, and writes its files; missing inputs fail with exit 2
before any model is loaded.

The model is a tiny Qwen3 (hidden 64) trained here, in a few seconds, until greedy decoding
reproduces three documents built with tokenizer.prompts: an S2ST document (source clip A, "hello
world" -> "good morning", target clip B), a TTS one and a voice-conditioned TTS one with the same
target clip. ASR (A -> "hello world") and continuation (a prefix of A -> the rest of A) are
prefixes of the S2ST document. So greedy generation has known answers: every task's text, its
audio token count, and the stop token are checked exactly. Mimi is the small random one (the
project's offline test Mimi): the clips are plumbing audio, the token strings are what matter.
The Levanter checkpoint is the same weights converted with Levanter's HF converter and saved as a
warm-started train step's output; it must give the same answers.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tests.test_mimi import SMALL

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "steps" / "local_corpus" / "eval_fixtures"
SOURCE_TEXT, TARGET_TEXT = "hello world", "good morning"
MIMI_FLAGS = ["--mimi", "random", "--mimi-config", json.dumps(SMALL)]


def _clips(root: Path) -> tuple[Path, Path]:
    """The source clip as a 22.05 kHz wav and the target clip as a 16 kHz wav (inputs get resampled)."""
    import soundfile as sf

    out = []
    for name in ("EVAL_word000_real", "EVAL_word001_real"):
        audio, sr = sf.read(FIXTURES / f"{name}.flac", dtype="float32")
        path = root / f"{name}.wav"
        sf.write(path, audio, sr, subtype="PCM_16")
        out.append(path)
    return out[0], out[1]


def _audio_string(mimi, path: Path) -> str:
    from steps.audio_io import load_audio_file
    from tokenizer.audio import codes_to_chars
    from tokenizer.mimi import encode

    (codes,) = encode(mimi, [load_audio_file(str(path))])
    return codes_to_chars(codes)


def _prefix_clip(src: Path, out: Path, frames: int) -> Path:
    """The first `frames` Mimi frames of the source at 24 kHz (float wav: no requantisation). Mimi's
    encoder is causal, so their codes are the source string's first frames."""
    import soundfile as sf

    from steps.audio_io import load_audio_file

    sf.write(out, load_audio_file(str(src))[: frames * 1920], 24_000, subtype="FLOAT")
    return out


def _documents(a: str, b: str) -> list[tuple[str, str]]:
    """(context, answer) of each training document. The loss is on the answer only: the contexts
    disagree with each other right after BOS (S2ST starts with audio, both TTS prompts with text,
    with different texts), so no model could predict every context token of all three. The S2ST
    document's answer starts after the continuation prompt (4 frames = 32 audio tokens), so it also
    holds the ASR answer ("hello world") and the continuation (the rest of A)."""
    from tokenizer import prompts as P
    from tokenizer.vocab import AUDIO_END, AUDIO_START

    s2st = P.s2st_prompt(a, SOURCE_TEXT).text + P.s2st_answer(TARGET_TEXT, b)
    context = AUDIO_START + a[:32]
    return [(context, s2st[len(context):]),
            (P.tts_prompt(TARGET_TEXT).text, b + AUDIO_END),
            (P.voice_tts_prompt(SOURCE_TEXT, a, TARGET_TEXT).text, b + AUDIO_END)]


def _memorize(model, seqs: list[np.ndarray], starts: list[int], max_steps: int = 600) -> int:
    """Adam on the documents until teacher-forced argmax equals every answer token (= greedy decoding
    from each context reproduces its answer); token j of document i is an answer token iff j >= starts[i]."""
    width = max(s.size for s in seqs)
    ids = torch.zeros((len(seqs), width), dtype=torch.long)
    mask = torch.zeros_like(ids)
    labels = torch.full_like(ids, -100)
    for i, (s, start) in enumerate(zip(seqs, starts)):
        ids[i, : s.size] = torch.from_numpy(s)
        labels[i, start : s.size] = torch.from_numpy(s[start:])
        mask[i, : s.size] = 1
    opt = torch.optim.Adam(model.parameters(), lr=2e-2)
    for step in range(max_steps):
        out = model(input_ids=ids, attention_mask=mask, labels=labels)
        if step % 10 == 0:
            pred = out.logits[:, :-1].argmax(-1)
            target, valid = labels[:, 1:], labels[:, 1:] != -100
            if bool((pred[valid] == target[valid]).all()):
                return step
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    raise AssertionError(f"the tiny model did not memorise the documents in {max_steps} steps")


def _levanter_run(hf_dir: Path, out: Path, tokenizer: str) -> Path:
    """The HF weights as a warm-started train step's output: warm_start/, checkpoints/step-0, summary.json."""
    from levanter.checkpoint import save_checkpoint

    from eval.model import LevanterLM
    from steps.training.warm_start import levanter_config_from_hf

    shutil.copytree(hf_dir, out / "warm_start")
    config = levanter_config_from_hf(str(hf_dir), 512, tokenizer)
    with LevanterLM._mesh():
        model = config.hf_checkpoint_converter().load_pretrained(config.model_type, ref=str(hf_dir), config=config)
        save_checkpoint({"model": model}, 0, str(out / "checkpoints" / "step-0"))
    hf_cfg = json.loads((hf_dir / "config.json").read_text())
    shape = dict(hidden=hf_cfg["hidden_size"], intermediate=hf_cfg["intermediate_size"],
                 layers=hf_cfg["num_hidden_layers"], heads=hf_cfg["num_attention_heads"],
                 kv_heads=hf_cfg["num_key_value_heads"], head_dim=hf_cfg["head_dim"], seq_len=512,
                 vocab_size=hf_cfg["vocab_size"], tied_embeddings=False, qk_norm=True)
    (out / "summary.json").write_text(json.dumps({"preset": "test-memorised", "model": shape, "seq_len": 512,
                                                  "hf_export": str(hf_dir), "plumbing_run": True, "steps": 0}))
    return out


def build_memorised_model(root: Path) -> dict:
    """The tiny memorising model as an HF dir and as a Levanter train output, with its clips and strings.
    Cached under `root` (one build per test session)."""
    from transformers import AutoTokenizer, Qwen3Config, Qwen3ForCausalLM

    from tokenizer.fast_tokenize import FastTokenizer
    from tokenizer.mimi import load_mimi
    from tokenizer.testing import qwen_style_extended_dir
    from tokenizer.vocab import BOS

    done = root / "memorised.json"
    if done.exists():
        return json.loads(done.read_text())
    root.mkdir(parents=True, exist_ok=True)
    tokenizer = qwen_style_extended_dir(str(root))
    src, tgt = _clips(root)
    mimi = load_mimi("random", seed=0, device="cpu", config_overrides=SMALL)  # what --mimi random --seed 0 loads
    a, b = _audio_string(mimi, src), _audio_string(mimi, tgt)
    prefix = _prefix_clip(src, root / "source_prefix.wav", frames=4)
    tok = FastTokenizer.from_pretrained(tokenizer)
    docs = _documents(a, b)
    seqs = [tok.encode(BOS + context + answer).astype(np.int64) for context, answer in docs]
    starts = [len(tok.encode(BOS + context)) for context, _ in docs]
    torch.manual_seed(0)
    cfg = Qwen3Config(vocab_size=len(AutoTokenizer.from_pretrained(tokenizer)), hidden_size=64, intermediate_size=128,
                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                      max_position_embeddings=512, tie_word_embeddings=False)
    model = Qwen3ForCausalLM(cfg)
    steps = _memorize(model, seqs, starts)
    hf_dir = root / "hf"
    model.eval().save_pretrained(hf_dir)
    AutoTokenizer.from_pretrained(tokenizer).save_pretrained(hf_dir)
    lev = _levanter_run(hf_dir, root / "levanter-run", tokenizer)
    info = {"hf": str(hf_dir), "levanter": str(lev), "tokenizer": tokenizer, "source_wav": str(src),
            "target_wav": str(tgt), "prefix_wav": str(prefix), "source_chars": len(a), "target_chars": len(b), "steps": steps}
    done.write_text(json.dumps(info))
    return info


@pytest.fixture(scope="module")
def memorised(tmp_path_factory):
    return build_memorised_model(tmp_path_factory.getbasetemp() / "memorised-s2st-model")


def _run(argv: list[str]) -> int:
    from infra.cli import main

    return main(["generate", *argv])


def _generate(memorised, checkpoint: str, task: str, out: Path, *extra: str) -> dict:
    inputs = {"continue": ["--audio", memorised["prefix_wav"]],
              "tts": ["--text", TARGET_TEXT],
              "tts-voice": ["--text", TARGET_TEXT, "--prompt-audio", memorised["source_wav"],
                            "--prompt-text", SOURCE_TEXT],
              "asr": ["--audio", memorised["source_wav"]],
              "s2st": ["--audio", memorised["source_wav"], "--source-text", SOURCE_TEXT]}[task]
    rc = _run(["--checkpoint", checkpoint, "--task", task, "--out", str(out), "--temperature", "0",
               "--device", "cpu", *MIMI_FLAGS, *inputs, *extra])
    assert rc == 0
    return json.loads((out / "generation.json").read_text())


def _check_wav(path: Path, audio_tokens: int) -> None:
    import soundfile as sf

    audio, sr = sf.read(path)
    assert sr == 24_000 and audio.ndim == 1
    assert len(audio) == (audio_tokens // 8) * 1920  # one Mimi frame = 8 tokens = 80 ms


@pytest.mark.parametrize("backend", ["hf", "levanter"])
def test_every_task_writes_its_answer(memorised, tmp_path, backend):
    ckpt = memorised[backend]
    tgt_tokens, src_tokens = memorised["target_chars"], memorised["source_chars"]
    for task in ("tts", "tts-voice", "s2st"):  # answers: the target clip (s2st: after "good morning")
        info = _generate(memorised, ckpt, task, tmp_path / task)
        assert info["stop_reached"] and info["audio_tokens"] == tgt_tokens
        assert info["stray_text_tokens_in_audio"] == info["stray_audio_tokens_in_text"] == 0
        assert info["model_backend"] == ("hf-torch" if backend == "hf" else "levanter-jax")
        _check_wav(tmp_path / task / "output.wav", tgt_tokens)
        assert info["plumbing_run"] and info["output_seconds"] == pytest.approx(tgt_tokens / 8 * 0.08, abs=1e-3)
    assert (tmp_path / "s2st" / "output.txt").read_text().strip() == TARGET_TEXT
    assert _generate(memorised, ckpt, "s2st", tmp_path / "s2st")["text"] == TARGET_TEXT
    info = _generate(memorised, ckpt, "asr", tmp_path / "asr")
    assert info["stop_reached"] and (tmp_path / "asr" / "output.txt").read_text().strip() == SOURCE_TEXT
    assert not (tmp_path / "asr" / "output.wav").exists()
    # continuation of the source's first 4 frames: the rest of the source clip, then <|audio_end|>
    info = _generate(memorised, ckpt, "continue", tmp_path / "continue")
    assert info["stop_reached"] and info["audio_seconds"] == pytest.approx(0.32)
    assert info["audio_tokens"] == src_tokens - 32
    _check_wav(tmp_path / "continue" / "output.wav", src_tokens - 32)
    _check_wav(tmp_path / "continue" / "with_prompt.wav", src_tokens)


def test_generation_that_never_stops_keeps_what_it_made(memorised, tmp_path):
    info = _generate(memorised, memorised["hf"], "tts", tmp_path, "--max-new-tokens", "21")
    assert not info["stop_reached"] and info["generated_tokens"] == 21
    assert info["audio_tokens"] == 21 and info["frames"] == 2 and info["incomplete_frame_tokens"] == 5
    _check_wav(tmp_path / "output.wav", 21)
    # s2st cut inside the text: the text so far is written, no audio
    info = _generate(memorised, memorised["hf"], "s2st", tmp_path / "cut", "--max-new-tokens", "1")
    assert not info["stop_reached"] and info["audio_tokens"] == 0 and not (tmp_path / "cut" / "output.wav").exists()
    assert TARGET_TEXT.startswith((tmp_path / "cut" / "output.txt").read_text().strip())


def test_split_answer_drops_and_counts_stray_tokens():
    from eval.generate import split_answer

    ids = dict(text_start=100, text_end=101, audio_start=102, audio_end=103, audio_base=104)
    a = split_answer("s2st", [5, 6, 200, 101, 102, 300, 7, 301, 102, 103, 9], **ids)
    assert a.text_ids == [5, 6] and a.stray_in_text == 1
    assert a.audio_ids == [300, 301] and a.stray_in_audio == 2 and a.stop_reached and not a.missing_audio_start
    b = split_answer("s2st", [5, 101, 300, 301], **ids)  # no <|audio_start|>, never stopped
    assert b.missing_audio_start and b.audio_ids == [300, 301] and not b.stop_reached
    c = split_answer("tts", [300, 5, 301, 103, 302], **ids)
    assert c.audio_ids == [300, 301] and c.stray_in_audio == 1 and c.stop_reached
    d = split_answer("asr", [5, 300, 6], **ids)
    assert d.text_ids == [5, 6] and d.stray_in_text == 1 and not d.stop_reached


@pytest.mark.parametrize("task,given,missing", [
    ("tts", [], "--text"),
    ("tts-voice", ["--text", "hi", "--prompt-audio", "{wav}"], "--prompt-text"),
    ("tts-voice", ["--text", "hi", "--prompt-text", "hi"], "--prompt-audio"),
    ("asr", [], "--audio"),
    ("continue", ["--text", "ignored"], "--audio"),
    ("s2st", ["--audio", "{wav}"], "--source-text"),
    ("s2st", ["--source-text", "hola"], "--audio"),
])
def test_missing_inputs_exit_2_before_loading_a_model(tmp_path, capsys, monkeypatch, task, given, missing):
    import eval.model

    def boom(*a, **k):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(eval.model, "load_scoring_model", boom)
    wav = tmp_path / "x.wav"
    import soundfile as sf

    sf.write(wav, np.zeros(8000, dtype=np.float32) + 0.01, 16_000)
    given = [g.replace("{wav}", str(wav)) for g in given]
    rc = _run(["--checkpoint", str(tmp_path), "--task", task, "--out", str(tmp_path / "o"), *given])
    err = capsys.readouterr().err
    assert rc == 2 and f"--task {task} needs {missing}" in err


def test_bad_files_exit_2_before_loading_a_model(tmp_path, capsys, monkeypatch):
    import eval.model

    monkeypatch.setattr(eval.model, "load_scoring_model", lambda *a, **k: pytest.fail("a model was loaded"))
    not_audio = tmp_path / "notes.wav"
    not_audio.write_text("this is not audio")
    base = ["--checkpoint", str(tmp_path), "--task", "asr", "--out", str(tmp_path / "o")]
    assert _run([*base, "--audio", str(tmp_path / "nope.wav")]) == 2
    assert "--audio" in (err := capsys.readouterr().err) and "no such file" in err and "--task asr" in err
    assert _run([*base, "--audio", str(not_audio)]) == 2
    assert "not usable audio" in capsys.readouterr().err
    assert _run(["--checkpoint", str(tmp_path / "missing"), "--task", "tts", "--text", "hi", "--out", "o"]) == 2
    assert "--checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
