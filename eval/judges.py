"""The TTS judges: an ASR model for WER and a speaker-verification model for SIM.

- `WhisperJudge(path)`: `WhisperForConditionalGeneration` + its feature extractor and tokenizer,
  16 kHz input, English transcription when the checkpoint knows languages (default judge
  `openai/whisper-large-v3`, as the paper).
- `load_speaker_judge(path)` (also callable as `SpeakerJudge(path)`): the SIM judge `path` names.
  A `.pth` file, or a directory holding `wavlm_large_finetune.pth`, is seed-tts-eval's WavLM-large +
  ECAPA-TDNN model (`eval.ecapa_judge.EcapaJudge`, the default, as the paper: `DEFAULT_SIM_JUDGE` is
  the bare file name, found in ~/.cache/soda/judges/); anything else is a transformers
  `WavLMForXVector` (`XVectorJudge`, e.g. `microsoft/wavlm-base-plus-sv`, whose SIM is on another
  scale). Both take 16 kHz clips and give the cosine of the two embeddings; a pair the judge cannot
  embed (a clip under `min_samples`: 45 ms for ECAPA, 0.5 s for the x-vector TDNN) gives None, and
  the tasks count those (`sim_unscored`, by reason). `describe_sim_judge(path)` names the judge for
  summaries without loading it.
- `make_random_judges(dir, tokenizer_dir)`: tiny randomly initialised Whisper, WavLM x-vector and
  WavLM + ECAPA-TDNN (published checkpoint format) judges saved locally, so tests and rehearsals
  exercise the whole path offline. Their numbers mean nothing (`judges: "random-init (plumbing)"`).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from eval import ecapa_judge
from pipeline.step import this_output_path
from pipeline.fileio import exists, join, local_copy, url_to_fs
from tokenizer.testing import make_tiny_qwen_style_tokenizer_dir

logger = logging.getLogger(__name__)

JUDGE_SAMPLE_RATE = 16_000
DEFAULT_ASR_JUDGE = "openai/whisper-large-v3"
DEFAULT_SIM_JUDGE = ecapa_judge.CHECKPOINT_NAME  # seed-tts-eval's WavLM-large + ECAPA-TDNN (the paper's)
XVECTOR_SIM_JUDGE = "microsoft/wavlm-base-plus-sv"  # the transformers option (another SIM scale)
RANDOM_MARKER = "soda_random_judge.json"
MIN_SIM_SECONDS = 0.5  # the x-vector judge's shortest clip (its TDNN needs ~15 feature frames)
RANDOM_SIM_JUDGES = {"ecapa": "random-wavlm-ecapa", "xvector": "random-wavlm-sv"}  # make_random_judges' dirs


def to_16k(audio24: np.ndarray) -> np.ndarray:
    import soxr

    if len(audio24) == 0:
        return np.zeros(0, dtype=np.float32)
    return soxr.resample(np.asarray(audio24, dtype=np.float32), 24_000, JUDGE_SAMPLE_RATE).astype(np.float32)


def _device(device: Optional[str]) -> str:
    import torch

    return device or ("cuda" if torch.cuda.is_available() else "cpu")


def is_random_judge(path: str) -> bool:
    """Whether `path` (a local dir, a checkpoint file in one, or an object-store URL; an HF id is never
    one) is a random-init judge."""
    if path.endswith(".pth"):  # a checkpoint file: its directory carries the marker
        path = path.rstrip("/").rsplit("/", 1)[0] if "/" in path else "."
    if "://" not in path and not os.path.isdir(path):
        return False
    return exists(join(path, RANDOM_MARKER))


def _judge_dir(path: str) -> str:
    """A judge given as an object-store directory is read from a local copy (transformers reads files)."""
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


class XVectorJudge:
    """Speaker similarity from a transformers `WavLMForXVector` model (an HF id or a local dir)."""

    kind = "wavlm-xvector"
    min_samples = int(MIN_SIM_SECONDS * JUDGE_SAMPLE_RATE)

    def __init__(self, path: str = XVECTOR_SIM_JUDGE, device: Optional[str] = None):
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
        if len(a16k) < self.min_samples or len(b16k) < self.min_samples:
            return None
        return float(np.dot(self.embed(a16k), self.embed(b16k)))

    @property
    def name(self) -> str:
        return f"{self.kind} ({self.path})"


def load_speaker_judge(path: str = DEFAULT_SIM_JUDGE, device: Optional[str] = None):
    """The SIM judge a setting names: an ECAPA checkpoint (`.pth`, or a dir holding one) or an x-vector model."""
    if ecapa_judge.is_ecapa_path(path):
        return ecapa_judge.EcapaJudge(path, device=_device(device))
    return XVectorJudge(path, device=device)


SpeakerJudge = load_speaker_judge  # the name eval.tasks.s2st and older callers use


def describe_sim_judge(path: str) -> str:
    """The judge a setting names, for summaries: kind (and "random-init" when it is one) and the setting."""
    kind = ecapa_judge.EcapaJudge.kind if ecapa_judge.is_ecapa_path(path) else XVectorJudge.kind
    return f"{kind}{', random-init' if is_random_judge(path) else ''} ({path})"


def unscored_sim_reason(judge, generated16k: np.ndarray, reference16k: np.ndarray) -> Optional[str]:
    """Why `judge` gives no SIM for this pair (None when it scores it): the counts a summary reports."""
    if len(generated16k) == 0:
        return "no generated audio"
    if len(generated16k) < judge.min_samples:
        return f"generated clip under {judge.min_samples / JUDGE_SAMPLE_RATE:g} s"
    if len(reference16k) < judge.min_samples:
        return f"reference clip under {judge.min_samples / JUDGE_SAMPLE_RATE:g} s"
    return None


def make_random_judges(root: str, tokenizer_dir: str, seed: int = 0, sim: str = "ecapa") -> tuple[str, str]:
    """Tiny random-init judges under `root`: Whisper (with the given tokenizer) in `random-whisper/`, a
    WavLM x-vector model in `random-wavlm-sv/` and a WavLM + ECAPA-TDNN checkpoint in the published format
    in `random-wavlm-ecapa/wavlm_large_finetune.pth`. Returns the ASR dir and the `sim` kind's dir
    ("ecapa", the default judge's kind, or "xvector")."""
    import json

    import torch
    from transformers import (AutoTokenizer, Wav2Vec2FeatureExtractor, WavLMConfig, WavLMForXVector,
                              WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration)

    if sim not in RANDOM_SIM_JUDGES:
        raise ValueError(f"make_random_judges: sim={sim!r}; expected one of {sorted(RANDOM_SIM_JUDGES)}")
    asr_dir, sim_dir = os.path.join(root, "random-whisper"), os.path.join(root, RANDOM_SIM_JUDGES["xvector"])
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
    ecapa_dir = os.path.join(root, RANDOM_SIM_JUDGES["ecapa"])
    if not os.path.isfile(os.path.join(ecapa_dir, RANDOM_MARKER)):
        ecapa_judge.write_random_checkpoint(os.path.join(ecapa_dir, ecapa_judge.CHECKPOINT_NAME), seed=seed + 2)
        with open(os.path.join(ecapa_dir, RANDOM_MARKER), "w") as f:
            json.dump({"seed": seed, "note": "random-init (plumbing)", "shape": "eval.ecapa_judge.SMALL_ECAPA"}, f)
    return asr_dir, ecapa_dir if sim == "ecapa" else sim_dir


# ---- the random-init judges as an executor step (offline runs and rehearsals) -------------------


@dataclass(frozen=True)
class RandomJudgesConfig:
    output_path: str = this_output_path()
    seed: int = 0


def make_random_judges_step(config: RandomJudgesConfig) -> None:
    """Step fn: tiny random-init Whisper, WavLM x-vector and WavLM + ECAPA dirs (`random-whisper/`,
    `random-wavlm-sv/`, `random-wavlm-ecapa/`) under the step's output, local or on an object store: offline stand-ins for the TTS judges."""
    import tempfile

    if "://" not in config.output_path:
        root = config.output_path
        make_random_judges(root, make_tiny_qwen_style_tokenizer_dir(os.path.join(root, "plain-tokenizer")), config.seed)
        return
    with tempfile.TemporaryDirectory(prefix="soda-judges-") as tmp:
        make_random_judges(tmp, make_tiny_qwen_style_tokenizer_dir(os.path.join(tmp, "plain-tokenizer")), config.seed)
        fs, path = url_to_fs(config.output_path)
        fs.put(tmp.rstrip("/") + "/", path.rstrip("/") + "/", recursive=True)
