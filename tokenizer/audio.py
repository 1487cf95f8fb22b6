"""Mimi codes <-> characters <-> token ids (shared/reference.md section 1).

Code `c` of codebook `k` is the character `chr(0xE000 + k*2048 + c)`; a (codebooks, frames)
array is flattened frame-major (c0[t], c1[t], ..., c7[t], then frame t+1). The audio characters
span U+E000..U+11FFF: the BMP private-use area and, for codebooks 4..7, ordinary code points
beyond it (CJK compatibility ideographs, presentation forms, variation selectors, ...), which is
why transcripts are sanitised before they enter a document (`tokenizer.documents`).

Everything here is vectorised: strings are viewed as UTF-32 code points with numpy.
"""

from __future__ import annotations

from typing import Any

import numpy as np

UNICODE_OFFSET: int = 0xE000
NUM_CODEBOOKS: int = 8
CODEBOOK_SIZE: int = 2048
NUM_AUDIO_TOKENS: int = NUM_CODEBOOKS * CODEBOOK_SIZE
# First code point after the audio characters (exclusive bound): U+12000.
AUDIO_CHAR_END: int = UNICODE_OFFSET + NUM_AUDIO_TOKENS


def str_to_codepoints(s: str) -> np.ndarray:
    """The code points of `s` as a uint32 array (a copy-free view of its UTF-32 bytes)."""
    return np.frombuffer(s.encode("utf-32-le", "surrogatepass"), dtype="<u4")


def codepoints_to_str(points: np.ndarray) -> str:
    """Inverse of `str_to_codepoints`."""
    return np.ascontiguousarray(points, dtype="<u4").tobytes().decode("utf-32-le")


def _as_int_array(codes: Any) -> np.ndarray:
    if hasattr(codes, "detach"):  # torch.Tensor, without importing torch
        codes = codes.detach().cpu().numpy()
    arr = np.asarray(codes)
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"codes must be integers, got dtype {arr.dtype}")
    return arr


def codes_to_chars(
    codes: Any,
    codebook_size: int = CODEBOOK_SIZE,
    unicode_offset: int = UNICODE_OFFSET,
) -> str:
    """Codes shaped (num_codebooks, frames) -> the frame-major audio string.

    Accepts a numpy array, nested lists or a torch tensor. Raises ValueError for a wrong number
    of dimensions or a code outside 0..codebook_size-1 (naming its codebook and frame).
    """
    arr = _as_int_array(codes)
    if arr.ndim != 2:
        raise ValueError(
            f"codes must be a 2D array shaped (num_codebooks, frames), got shape {arr.shape}"
        )
    if arr.size == 0:
        return ""
    bad = (arr < 0) | (arr >= codebook_size)
    if bad.any():
        k, t = (int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"code {int(arr[k, t])} at codebook {k}, frame {t} is outside 0..{codebook_size - 1}"
        )
    num_codebooks = arr.shape[0]
    if (unicode_offset, codebook_size) == (UNICODE_OFFSET, CODEBOOK_SIZE) and num_codebooks > NUM_CODEBOOKS:
        raise ValueError(
            f"codes have {num_codebooks} codebooks; SODA's vocabulary has audio tokens for {NUM_CODEBOOKS} "
            f"(codebook {NUM_CODEBOOKS} would map to U+{UNICODE_OFFSET + NUM_AUDIO_TOKENS:04X}, ordinary text): "
            f"keep codes[:{NUM_CODEBOOKS}]"
        )
    if unicode_offset + num_codebooks * codebook_size > 0x110000:
        raise ValueError(f"{num_codebooks} codebooks of {codebook_size} codes overflow Unicode")
    offsets = unicode_offset + codebook_size * np.arange(num_codebooks, dtype=np.int64)
    points = arr.astype(np.int64) + offsets[:, None]
    return codepoints_to_str(points.T.reshape(-1))


def chars_to_codes(
    s: str,
    num_codebooks: int = NUM_CODEBOOKS,
    codebook_size: int = CODEBOOK_SIZE,
    unicode_offset: int = UNICODE_OFFSET,
) -> np.ndarray:
    """A frame-major audio string -> int64 codes shaped (num_codebooks, frames).

    Raises ValueError if the length is not a multiple of `num_codebooks`, or naming the first
    character that is not a token of the codebook its position belongs to.
    """
    if len(s) % num_codebooks:
        raise ValueError(
            f"audio string has {len(s)} characters, not a multiple of {num_codebooks} codebooks "
            f"(the last frame, from position {len(s) - len(s) % num_codebooks}, is incomplete)"
        )
    points = str_to_codepoints(s).astype(np.int64).reshape(-1, num_codebooks)
    rel = points - (unicode_offset + codebook_size * np.arange(num_codebooks, dtype=np.int64))
    bad = (rel < 0) | (rel >= codebook_size)
    if bad.any():
        t, k = (int(i) for i in np.argwhere(bad)[0])
        pos = t * num_codebooks + k
        lo = unicode_offset + k * codebook_size
        raise ValueError(
            f"character {pos} (U+{int(points[t, k]):04X}) of the audio string is not a codebook-{k} "
            f"token: expected U+{lo:04X}..U+{lo + codebook_size - 1:04X} (frame {t})"
        )
    return np.ascontiguousarray(rel.T)


# ---- token ids ------------------------------------------------------------------------------
# `audio_base_id` is the id of code 0 of codebook 0 (128,260 for the Llama 3 base; see
# tokenizer.vocab.VocabLayout.audio_base_id). Audio character U+E000+i is token audio_base_id+i.


def _check_audio_points(points: np.ndarray, what: str, num_audio_tokens: int) -> None:
    bad = (points < UNICODE_OFFSET) | (points >= UNICODE_OFFSET + num_audio_tokens)
    if bad.any():
        pos = int(np.argmax(bad))
        raise ValueError(
            f"{what}: character {pos} (U+{int(points[pos]):04X}) is not an audio character "
            f"(U+{UNICODE_OFFSET:04X}..U+{UNICODE_OFFSET + num_audio_tokens - 1:04X})"
        )


def chars_to_ids(
    s: str, audio_base_id: int, num_audio_tokens: int = NUM_AUDIO_TOKENS
) -> np.ndarray:
    """Audio characters -> token ids (int32), one per character."""
    points = str_to_codepoints(s)
    _check_audio_points(points, "chars_to_ids", num_audio_tokens)
    return (points.astype(np.int64) + (audio_base_id - UNICODE_OFFSET)).astype(np.int32)


def ids_to_chars(ids: Any, audio_base_id: int, num_audio_tokens: int = NUM_AUDIO_TOKENS) -> str:
    """Audio token ids -> audio characters. Raises ValueError on a non-audio id."""
    arr = np.asarray(ids, dtype=np.int64).reshape(-1)
    rel = arr - audio_base_id
    bad = (rel < 0) | (rel >= num_audio_tokens)
    if bad.any():
        pos = int(np.argmax(bad))
        raise ValueError(
            f"ids_to_chars: id {int(arr[pos])} at position {pos} is not an audio token id "
            f"({audio_base_id}..{audio_base_id + num_audio_tokens - 1})"
        )
    return codepoints_to_str(rel + UNICODE_OFFSET)


def codes_to_ids(codes: Any, audio_base_id: int, codebook_size: int = CODEBOOK_SIZE) -> np.ndarray:
    """Codes shaped (num_codebooks, frames) -> frame-major token ids (int32)."""
    arr = _as_int_array(codes)
    s = codes_to_chars(arr, codebook_size=codebook_size)
    return chars_to_ids(s, audio_base_id, arr.shape[0] * codebook_size)


def ids_to_codes(
    ids: Any,
    audio_base_id: int,
    num_codebooks: int = NUM_CODEBOOKS,
    codebook_size: int = CODEBOOK_SIZE,
) -> np.ndarray:
    """Frame-major audio token ids -> codes shaped (num_codebooks, frames)."""
    s = ids_to_chars(ids, audio_base_id, num_codebooks * codebook_size)
    return chars_to_codes(s, num_codebooks=num_codebooks, codebook_size=codebook_size)
