"""Compare documents built from raw audio with the released pre-encoded ones, recording by recording.

SODA released its YODAS2 and Emilia documents already Mimi-encoded (`steps/pre_encoded.py`); this
project can also build them from the raw audio (`steps/raw_yodas2.py` -> encode -> interleave). The
step joins the two sets on (recording id, format) and says, for the recordings both hold, whether
they are the same document:

- `skeleton_equal`: the same text outside the audio spans (BOS, transcripts, control tokens, EOS) and
  the same number of audio tokens in each span, i.e. the same utterances, cut at the same times, in
  the same order and format;
- `audio_token_agreement`: the share of audio tokens that are equal, position by position, over the
  documents whose skeletons match. Mimi is deterministic on one device, but the released codes were
  computed on other hardware, so this measures the codec's agreement rather than requiring 1.0.

Writes `summary.json` (counts, agreement, up to 5 examples of each kind of difference) and
`mismatches.jsonl` (every matched document that differs, with where it first differs).
"""

from __future__ import annotations

import json
import logging
import posixpath
from dataclasses import dataclass
from typing import Iterator

from pipeline import strict_json
from pipeline.fileio import atomic_write_bytes, atomic_write_json, url_to_fs
from steps.table_readers import read_parquet
from tokenizer.audio import UNICODE_OFFSET

logger = logging.getLogger(__name__)

AUDIO_FIRST_CHAR, AUDIO_LAST_CHAR = UNICODE_OFFSET, UNICODE_OFFSET + 8 * 2048 - 1
MAX_EXAMPLES = 5


@dataclass(frozen=True)
class CompareDocumentsConfig:
    ours: str  # a documents directory: the interleave step's `documents/`
    released: str  # a documents directory: the pre-encoded step's `documents/`
    output_path: str


def split_audio(text: str) -> tuple[str, list[str]]:
    """(skeleton, audio runs): each maximal run of audio characters replaced by one U+FFFC."""
    skeleton, runs, current = [], [], []
    for ch in text:
        if AUDIO_FIRST_CHAR <= ord(ch) <= AUDIO_LAST_CHAR:
            current.append(ch)
            continue
        if current:
            runs.append("".join(current))
            skeleton.append("\ufffc")
            current = []
        skeleton.append(ch)
    if current:
        runs.append("".join(current))
        skeleton.append("\ufffc")
    return "".join(skeleton), runs


def _documents(directory: str) -> Iterator[dict]:
    fs, path = url_to_fs(directory)
    for name in sorted(fs.glob(posixpath.join(path, "*.parquet"))):
        with fs.open(name, "rb") as f:
            table = read_parquet(f, name)
        yield from table.select(["id", "recording_id", "format", "text"]).to_pylist()


def compare_pair(ours: str, released: str) -> dict:
    """How document `ours` differs from `released`: {"skeleton_equal", "audio_tokens", "audio_equal",
    "first_difference"} (the first differing skeleton character or audio position)."""
    sk_a, runs_a = split_audio(ours)
    sk_b, runs_b = split_audio(released)
    lengths_equal = [len(r) for r in runs_a] == [len(r) for r in runs_b]
    result = {"skeleton_equal": sk_a == sk_b and lengths_equal, "audio_tokens": sum(map(len, runs_a)),
              "audio_equal": 0, "first_difference": None}
    if not result["skeleton_equal"]:
        at = next((i for i, (x, y) in enumerate(zip(sk_a, sk_b)) if x != y), min(len(sk_a), len(sk_b)))
        what = "text" if sk_a != sk_b else "audio span lengths"
        result["first_difference"] = {"kind": what, "skeleton_offset": at,
                                      "ours": sk_a[max(0, at - 20):at + 40], "released": sk_b[max(0, at - 20):at + 40]}
        return result
    equal = sum(x == y for a, b in zip(runs_a, runs_b) for x, y in zip(a, b))
    result["audio_equal"] = equal
    if equal < result["audio_tokens"]:
        flat_a, flat_b = "".join(runs_a), "".join(runs_b)
        at = next(i for i, (x, y) in enumerate(zip(flat_a, flat_b)) if x != y)
        result["first_difference"] = {"kind": "audio tokens", "audio_position": at}
    return result


def compare_documents(config: CompareDocumentsConfig) -> dict:
    """The step fn: join both sets on (recording_id, format) and compare each pair."""
    released = {(d["recording_id"], d["format"]): d for d in _documents(config.released)}
    matched = only_ours = skeleton_equal = identical = 0
    audio_tokens = audio_equal = 0
    mismatches, examples = [], {"text": [], "audio span lengths": [], "audio tokens": []}
    seen = set()
    for doc in _documents(config.ours):
        key = (doc["recording_id"], doc["format"])
        other = released.get(key)
        if other is None:
            only_ours += 1
            continue
        seen.add(key)
        matched += 1
        diff = compare_pair(doc["text"], other["text"])
        if diff["skeleton_equal"]:
            skeleton_equal += 1
            audio_tokens += diff["audio_tokens"]
            audio_equal += diff["audio_equal"]
            identical += diff["audio_equal"] == diff["audio_tokens"]
        if diff["first_difference"] is not None:
            row = {"recording_id": key[0], "format": key[1], "ours": doc["id"], "released": other["id"], **diff}
            mismatches.append(row)
            if len(examples[diff["first_difference"]["kind"]]) < MAX_EXAMPLES:
                examples[diff["first_difference"]["kind"]].append(row)
    summary = {
        "matched": matched, "only_ours": only_ours, "only_released": len(released) - len(seen),
        "skeleton_equal": skeleton_equal, "identical": identical,
        "audio_tokens_compared": audio_tokens,
        "audio_token_agreement": audio_equal / audio_tokens if audio_tokens else None,
        "examples": {k: v for k, v in examples.items() if v},
    }
    atomic_write_bytes(posixpath.join(config.output_path, "mismatches.jsonl"),
                       "".join(strict_json.dumps(r) + "\n" for r in mismatches).encode())
    atomic_write_json(posixpath.join(config.output_path, "summary.json"), summary)
    logger.info("compare documents: %d matched (%d only ours, %d only released), %d same skeleton, %d identical, "
                "audio agreement %s", matched, only_ours, summary["only_released"], skeleton_equal, identical,
                json.dumps(summary["audio_token_agreement"]))
    return summary
