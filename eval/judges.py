"""The TTS judges: an ASR model for WER and a speaker-verification model for SIM, via transformers.

- `WhisperJudge(path)`: `WhisperForConditionalGeneration` + its feature extractor and tokenizer,
  16 kHz input, English transcription when the checkpoint knows languages (default judge
  `openai/whisper-large-v3`, as the paper).
- `SpeakerJudge(path)`: `WavLMForXVector` x-vector embeddings, 16 kHz, cosine similarity (default
  `microsoft/wavlm-base-plus-sv`; the paper used a WavLM-large speaker-verification model —
  seed-tts-eval's is a WavLM-large + ECAPA-TDNN checkpoint that transformers cannot load, so SIM
  from a transformers x-vector model is on a different scale; the summary records which).
- `make_random_judges(dir, tokenizer_dir)`: tiny randomly initialised Whisper and WavLM x-vector
  models saved locally, so tests exercise the whole path offline. Their numbers mean nothing
  (`judges: "random-init (plumbing)"`).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from pipeline.step import this_output_path

logger = logging.getLogger(__name__)

JUDGE_SAMPLE_RATE = 16_000
DEFAULT_ASR_JUDGE = "openai/whisper-large-v3"
DEFAULT_SIM_JUDGE = "microsoft/wavlm-base-plus-sv"
RANDOM_MARKER = "soda_random_judge.json"
MIN_SIM_SECONDS = 0.5


def to_16k(audio24: np.ndarray) -> np.ndarray:
    import soxr

    if len(audio24) == 0:
        return np.zeros(0, dtype=np.float32)
    return soxr.resample(np.asarray(audio24, dtype=np.float32), 24_000, JUDGE_SAMPLE_RATE).astype(np.float32)


def _device(device: Optional[str]) -> str:
    import torch

    return device or ("cuda" if torch.cuda.is_available() else "cpu")


def is_random_judge(path: str) -> bool:
    """Whether `path` (a local dir or an object-store URL; an HF id is never one) is a random-init judge."""
    from steps.sharding import exists, join

    if "://" not in path and not os.path.isdir(path):
        return False
    return exists(join(path, RANDOM_MARKER))


def _judge_dir(path: str) -> str:
    """A judge given as an object-store directory is read from a local copy (transformers reads files)."""
    from steps.sharding import local_copy

    return local_copy(path) if "://" in path else path


class WhisperJudge:
    def __init__(self, path: str = DEFAULT_ASR_JUDGE, device: Optional[str] = None, language: str = "en",
                 max_new_tokens: int = 200):
        from transformers import AutoFeatureExtractor, AutoTokenizer, WhisperForConditionalGeneration

        self.path, self.device, self.language, self.max_new_tokens = path, _device(device), language, max_new_tokens
        try:
            local = _judge_dir(path)
            self.model = WhisperForConditionalGeneration.from_pretrained(local).eval().to(self.device)
            self.features = AutoFeatureExtractor.from_pretrained(local)
            self.tokenizer = AutoTokenizer.from_pretrained(local)
        except OSError as exc:
            raise OSError(f"ASR judge {path!r} could not be loaded ({exc}); pass a local Whisper directory "
                          "(tts_asr_judge) or fill the HF cache") from exc

    def transcribe(self, waves16k: Sequence[np.ndarray]) -> list[str]:
        import torch

        out: list[str] = []
        for wave in waves16k:  # one at a time: no padding effects, simple memory bound
            if len(wave) == 0:
                out.append("")
                continue
            feats = self.features(wave, sampling_rate=JUDGE_SAMPLE_RATE, return_tensors="pt").input_features
            kwargs = {}
            if getattr(self.model.generation_config, "lang_to_id", None):
                kwargs = {"language": self.language, "task": "transcribe"}
            budget = min(self.max_new_tokens, self.model.config.max_target_positions - 8)
            with torch.no_grad():
                ids = self.model.generate(feats.to(self.device), max_new_tokens=budget, **kwargs)
            out.append(self.tokenizer.batch_decode(ids, skip_special_tokens=True)[0].strip())
        return out


class SpeakerJudge:
    def __init__(self, path: str = DEFAULT_SIM_JUDGE, device: Optional[str] = None):
        from transformers import AutoFeatureExtractor, WavLMForXVector

        self.path, self.device = path, _device(device)
        try:
            local = _judge_dir(path)
            self.model = WavLMForXVector.from_pretrained(local).eval().to(self.device)
            self.features = AutoFeatureExtractor.from_pretrained(local)
        except OSError as exc:
            raise OSError(f"speaker judge {path!r} could not be loaded ({exc}); pass a local WavLM x-vector "
                          "directory (tts_sim_judge) or fill the HF cache") from exc

    def embed(self, wave16k: np.ndarray) -> np.ndarray:
        import torch

        inputs = self.features(wave16k, sampling_rate=JUDGE_SAMPLE_RATE, return_tensors="pt")
        with torch.no_grad():
            emb = self.model(**{k: v.to(self.device) for k, v in inputs.items()}).embeddings[0]
        emb = emb.float().cpu().numpy()
        return emb / max(float(np.linalg.norm(emb)), 1e-12)

    def similarity(self, a16k: np.ndarray, b16k: np.ndarray) -> Optional[float]:
        """Cosine similarity of the two clips' embeddings; None if either is shorter than
        MIN_SIM_SECONDS (the x-vector TDNN needs ~15 feature frames)."""
        shortest = int(MIN_SIM_SECONDS * JUDGE_SAMPLE_RATE)
        if len(a16k) < shortest or len(b16k) < shortest:
            return None
        return float(np.dot(self.embed(a16k), self.embed(b16k)))


def make_random_judges(root: str, tokenizer_dir: str, seed: int = 0) -> tuple[str, str]:
    """Tiny random-init Whisper (with the given tokenizer) and WavLM x-vector dirs under `root`."""
    import json

    import torch
    from transformers import (AutoTokenizer, Wav2Vec2FeatureExtractor, WavLMConfig, WavLMForXVector,
                              WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration)

    asr_dir, sim_dir = os.path.join(root, "random-whisper"), os.path.join(root, "random-wavlm-sv")
    if not os.path.isfile(os.path.join(asr_dir, RANDOM_MARKER)):
        tok = AutoTokenizer.from_pretrained(tokenizer_dir)
        eos = tok.eos_token_id if tok.eos_token_id is not None else 0
        torch.manual_seed(seed)
        cfg = WhisperConfig(vocab_size=len(tok), num_mel_bins=80, d_model=32, encoder_layers=1, decoder_layers=1,
                            encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64,
                            decoder_ffn_dim=64, max_source_positions=1500, max_target_positions=64,
                            pad_token_id=eos, bos_token_id=eos, eos_token_id=eos, decoder_start_token_id=eos,
                            suppress_tokens=[], begin_suppress_tokens=[])
        WhisperForConditionalGeneration(cfg).save_pretrained(asr_dir)
        WhisperFeatureExtractor(feature_size=80).save_pretrained(asr_dir)
        tok.save_pretrained(asr_dir)
        with open(os.path.join(asr_dir, RANDOM_MARKER), "w") as f:
            json.dump({"seed": seed, "note": "random-init (plumbing)"}, f)
    if not os.path.isfile(os.path.join(sim_dir, RANDOM_MARKER)):
        torch.manual_seed(seed + 1)
        cfg = WavLMConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                          conv_dim=(32,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
                          tdnn_dim=(32,) * 5, xvector_output_dim=16, num_buckets=32, max_bucket_distance=100)
        WavLMForXVector(cfg).save_pretrained(sim_dir)
        Wav2Vec2FeatureExtractor(sampling_rate=JUDGE_SAMPLE_RATE, return_attention_mask=True,
                                 do_normalize=True).save_pretrained(sim_dir)
        with open(os.path.join(sim_dir, RANDOM_MARKER), "w") as f:
            json.dump({"seed": seed, "note": "random-init (plumbing)"}, f)
    return asr_dir, sim_dir


# ---- the random-init judges as an executor step (offline runs and rehearsals) -------------------


@dataclass(frozen=True)
class RandomJudgesConfig:
    output_path: str = this_output_path()
    seed: int = 0


def make_random_judges_step(config: RandomJudgesConfig) -> None:
    """Step fn: tiny random-init Whisper and WavLM x-vector dirs (`random-whisper/`, `random-wavlm-sv/`)
    under the step's output, local or on an object store: offline stand-ins for the TTS judges."""
    import tempfile

    from steps.sharding import fs_and_path
    from tokenizer.testing import make_tiny_qwen_style_tokenizer_dir

    if "://" not in config.output_path:
        root = config.output_path
        make_random_judges(root, make_tiny_qwen_style_tokenizer_dir(os.path.join(root, "plain-tokenizer")), config.seed)
        return
    with tempfile.TemporaryDirectory(prefix="soda-judges-") as tmp:
        make_random_judges(tmp, make_tiny_qwen_style_tokenizer_dir(os.path.join(tmp, "plain-tokenizer")), config.seed)
        fs, path = fs_and_path(config.output_path)
        fs.put(tmp.rstrip("/") + "/", path.rstrip("/") + "/", recursive=True)
