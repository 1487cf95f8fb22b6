"""Utterances -> interleaved documents (shared/reference.md section 3).

One document is one recording's utterances in time order, written in two formats:

    text_first:  <|begin_of_text|> then per utterance <|text_start|>T<|text_end|><|audio_start|>A<|audio_end|>
                 then <|end_of_text|>
    audio_first: <|begin_of_text|> then per utterance <|audio_start|>A<|audio_end|><|text_start|>T<|text_end|>
                 then <|end_of_text|>

That is the released documents' form (reference.md section 10: each document string holds
`<|begin_of_text|>` ... `<|end_of_text|>`; steps/pre_encoded.py keeps it), so documents built here
and the released pre-encoded ones tokenize to the same ids at their boundaries; the tokenize step
adds neither BOS nor EOS. Section 3's templates show only the leading BOS; `end_with_eos=False`
gives that literal form (documents that no longer match the released data).

Transcripts are sanitised so that nothing in them tokenizes as an audio or control token:
- characters in the audio range U+E000..U+11FFF: private-use ones (U+E000..U+F8FF) are dropped;
  the others (CJK compatibility ideographs, fullwidth forms, presentation forms, the emoji
  variation selector U+FE0F, ...) are replaced by their NFKC form when that is safe, else dropped;
- supplementary private-use characters (planes 15-16) are dropped;
- strings shaped like a special token (`<|...|>`: the SODA four, Llama's `<|begin_of_text|>`,
  `<|eot_id|>`, `<|reserved_special_token_N|>`, Qwen's `<|im_start|>` ...) and any configured
  reserved strings are removed (repeatedly, so removal cannot assemble a new one).
Each kind is counted. Transcripts are stripped of surrounding whitespace; a missing transcript
becomes an empty text span (counted).

Long recordings are split at utterance boundaries into parts of at most `max_tokens` estimated
tokens (audio characters + UTF-8 bytes/4 of text + 4 delimiters + 1 BOS [+ 1 EOS]); an utterance longer
than that on its own becomes a part by itself (kept, never dropped; counted as `overlong_utterances`).
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

import numpy as np

from tokenizer.audio import AUDIO_CHAR_END, NUM_CODEBOOKS, UNICODE_OFFSET, chars_to_codes, str_to_codepoints
from tokenizer.vocab import AUDIO_END, AUDIO_START, BOS, EOS, TEXT_END, TEXT_START

logger = logging.getLogger(__name__)

TEXT_FIRST = "text_first"
AUDIO_FIRST = "audio_first"
TEXT = "text"
FORMATS = (TEXT_FIRST, AUDIO_FIRST)

# Every counter the interleave step reports (always present, possibly 0).
STAT_KEYS = (
    "private_use_chars_dropped",
    "audio_range_chars_normalized",
    "audio_range_chars_dropped",
    "special_token_strings_dropped",
    "texts_sanitized",
    "empty_transcripts",
    "empty_audio_utterances",
    "invalid_audio_utterances",
    "overlong_utterances",
    "recordings_split",
)

_UNSAFE_CHAR = re.compile(f"[{chr(UNICODE_OFFSET)}-{chr(AUDIO_CHAR_END - 1)}\U000f0000-\U0010ffff]")
_SPECIAL_LIKE = r"<\|[^\s<>|]{1,128}\|>"
_DELIMITER_TOKENS = 4  # per utterance: text_start, text_end, audio_start, audio_end


@dataclass(frozen=True)
class Utterance:
    """One encoded utterance (a row of the Mimi encode step's output)."""

    utterance_id: str
    recording_id: str
    order: int
    transcript: Optional[str]
    duration: float
    audio: str  # frame-major audio characters, 8 per frame


@dataclass(frozen=True)
class Document:
    id: str
    recording_id: str
    format: str  # "text_first" | "audio_first" | "text"
    text: str


def _reserved_pattern(reserved: Sequence[str]) -> re.Pattern:
    extra = [re.escape(s) for s in sorted(set(reserved), key=len, reverse=True) if s]
    return re.compile("|".join([_SPECIAL_LIKE, *extra]))


_DEFAULT_RESERVED = _reserved_pattern(())


def _fix_char(ch: str, counts: Counter) -> str:
    cp = ord(ch)
    if cp <= 0xF8FF or cp >= 0xF0000:
        counts["private_use_chars_dropped"] += 1
        return ""
    nfkc = unicodedata.normalize("NFKC", ch)
    if nfkc != ch and not _UNSAFE_CHAR.search(nfkc):
        counts["audio_range_chars_normalized"] += 1
        return nfkc
    counts["audio_range_chars_dropped"] += 1
    return ""


def sanitize_text(
    text: Optional[str], counts: Counter, reserved: Sequence[str] = (), strip: bool = True
) -> str:
    """`text` with audio-range characters and special-token strings neutralised (see module
    docstring); every change is counted in `counts`."""
    if not text:
        return ""
    out = text
    if _UNSAFE_CHAR.search(out):
        out = _UNSAFE_CHAR.sub(lambda m: _fix_char(m.group(), counts), out)
    pattern = _reserved_pattern(reserved) if reserved else _DEFAULT_RESERVED
    while True:
        out, n = pattern.subn("", out)
        if not n:
            break
        counts["special_token_strings_dropped"] += n
    if out != text:
        counts["texts_sanitized"] += 1
    return out.strip() if strip else out


def audio_error(audio: str, num_codebooks: int = NUM_CODEBOOKS) -> Optional[str]:
    """Why `audio` is not a valid frame-major audio string, or None if it is."""
    try:
        chars_to_codes(audio, num_codebooks=num_codebooks)
    except (ValueError, UnicodeEncodeError) as e:
        return str(e)
    return None


_AUDIO_SPAN = re.compile(re.escape(AUDIO_START) + "(.*?)" + re.escape(AUDIO_END), re.DOTALL)


def document_audio_error(doc: str, num_codebooks: int = NUM_CODEBOOKS) -> Optional[str]:
    """Why a finished document's audio is unusable, or None: every <|audio_start|> must be closed,
    every span between them must be whole frames of codebook-ordered audio characters, and no
    audio character may stand outside a span (it would silently become an audio token in text)."""
    spans = _AUDIO_SPAN.findall(doc)
    if doc.count(AUDIO_START) != len(spans) or doc.count(AUDIO_END) != len(spans):
        return (f"{doc.count(AUDIO_START)} <|audio_start|> and {doc.count(AUDIO_END)} <|audio_end|> "
                f"do not pair up")
    for i, span in enumerate(spans):
        err = audio_error(span, num_codebooks)
        if err is not None:
            return f"audio span {i}: {err}"
    rest = _AUDIO_SPAN.sub("", doc)
    if count_audio_tokens(rest):
        pos = int(np.argmax((str_to_codepoints(rest) - np.uint32(UNICODE_OFFSET))
                            < np.uint32(AUDIO_CHAR_END - UNICODE_OFFSET)))
        return f"audio character U+{ord(rest[pos]):04X} outside any <|audio_start|>...<|audio_end|> span"
    return None


def estimate_tokens(transcript: str, audio: str) -> int:
    """Estimated tokens of one utterance in a document: audio chars + text + 4 delimiters."""
    return len(audio) + (len(transcript.encode("utf-8")) + 3) // 4 + _DELIMITER_TOKENS


def split_recording(
    utterances: Sequence[Utterance], max_tokens: Optional[int], counts: Counter, overhead: int = 1
) -> list[list[Utterance]]:
    """Greedy split, in order, into parts of at most `max_tokens` estimated tokens (`overhead`:
    BOS, plus EOS if documents end with one). An utterance over the limit by itself becomes its
    own part."""
    if max_tokens is None or not utterances:
        return [list(utterances)] if utterances else []
    parts: list[list[Utterance]] = []
    current: list[Utterance] = []
    used = overhead
    for utt in utterances:
        cost = estimate_tokens(utt.transcript or "", utt.audio)
        if cost + overhead > max_tokens:
            counts["overlong_utterances"] += 1
        if current and used + cost > max_tokens:
            parts.append(current)
            current, used = [], overhead
        current.append(utt)
        used += cost
    if current:
        parts.append(current)
    if len(parts) > 1:
        counts["recordings_split"] += 1
    return parts


def render(utterances: Iterable[Utterance], fmt: str, end_with_eos: bool = True) -> str:
    """The document string for already-sanitised utterances (EOS last if `end_with_eos`)."""
    pieces = [BOS]
    if fmt == TEXT_FIRST:
        for u in utterances:
            pieces += (TEXT_START, u.transcript or "", TEXT_END, AUDIO_START, u.audio, AUDIO_END)
    elif fmt == AUDIO_FIRST:
        for u in utterances:
            pieces += (AUDIO_START, u.audio, AUDIO_END, TEXT_START, u.transcript or "", TEXT_END)
    else:
        raise ValueError(f"unknown document format {fmt!r}; expected one of {FORMATS}")
    if end_with_eos:
        pieces.append(EOS)
    return "".join(pieces)


def clean_utterances(
    utterances: Iterable[Utterance], counts: Counter, reserved: Sequence[str] = ()
) -> list[Utterance]:
    """Sort by (order, utterance_id), sanitise transcripts, and skip (counting, logging) the
    utterances without valid audio."""
    kept = []
    for u in sorted(utterances, key=lambda u: (u.order, u.utterance_id)):
        if not u.audio:
            counts["empty_audio_utterances"] += 1
            continue
        err = audio_error(u.audio)
        if err is not None:
            counts["invalid_audio_utterances"] += 1
            logger.warning("skipping utterance %s of %s: %s", u.utterance_id, u.recording_id, err)
            continue
        text = sanitize_text(u.transcript, counts, reserved)
        if not text:
            counts["empty_transcripts"] += 1
        kept.append(
            Utterance(u.utterance_id, u.recording_id, u.order, text, u.duration, u.audio)
        )
    return kept


def recording_documents(
    recording_id: str,
    utterances: Iterable[Utterance],
    counts: Counter,
    *,
    formats: Sequence[str] = FORMATS,
    max_tokens: Optional[int] = None,
    reserved: Sequence[str] = (),
    end_with_eos: bool = True,
) -> list[Document]:
    """All documents of one recording: for each part (see `split_recording`), one per format."""
    clean = clean_utterances(utterances, counts, reserved)
    return documents_from_clean(
        recording_id, clean, counts, formats=formats, max_tokens=max_tokens, end_with_eos=end_with_eos
    )


def documents_from_clean(
    recording_id: str,
    clean: Sequence[Utterance],
    counts: Counter,
    *,
    formats: Sequence[str] = FORMATS,
    max_tokens: Optional[int] = None,
    end_with_eos: bool = True,
) -> list[Document]:
    """`recording_documents` for utterances already passed through `clean_utterances`."""
    docs = []
    for i, part in enumerate(split_recording(clean, max_tokens, counts, 1 + end_with_eos)):
        for fmt in formats:
            text = render(part, fmt, end_with_eos)
            docs.append(Document(f"{recording_id}:{i:04d}:{fmt}", recording_id, fmt, text))
    return docs


def text_document(
    doc_id: str,
    text: str,
    counts: Counter,
    *,
    add_bos: bool = True,
    end_with_eos: bool = True,
    reserved: Sequence[str] = (),
) -> Document:
    """A text-only document: the sanitised text, no wrapper; BOS first unless `add_bos=False`,
    EOS last if `end_with_eos`."""
    clean = sanitize_text(text, counts, reserved, strip=False)
    return Document(doc_id, "", TEXT, (BOS if add_bos else "") + clean + (EOS if end_with_eos else ""))


def count_audio_tokens(doc: str) -> int:
    """Number of audio characters in a document string (vectorised)."""
    rel = str_to_codepoints(doc) - np.uint32(UNICODE_OFFSET)
    return int(np.count_nonzero(rel < np.uint32(AUDIO_CHAR_END - UNICODE_OFFSET)))


_MARKERS = (BOS, EOS, TEXT_START, TEXT_END, AUDIO_START, AUDIO_END)


def estimate_document_tokens(doc: str) -> int:
    """Estimated tokens of a document string: audio characters + BOS/EOS/SODA markers + UTF-8
    bytes/4 of the remaining text (the estimate `split_recording` uses, summed)."""
    points = str_to_codepoints(doc)
    is_audio = (points - np.uint32(UNICODE_OFFSET)) < np.uint32(AUDIO_CHAR_END - UNICODE_OFFSET)
    text = points[~is_audio]
    text_bytes = int(
        text.size + np.count_nonzero(text >= 0x80) + np.count_nonzero(text >= 0x800)
        + np.count_nonzero(text >= 0x10000)
    )
    n_markers = sum(doc.count(m) for m in _MARKERS)
    marker_bytes = sum(doc.count(m) * len(m) for m in _MARKERS)
    return int(np.count_nonzero(is_audio)) + n_markers + (text_bytes - marker_bytes + 3) // 4
