"""Audio codes <-> characters <-> ids, against the paper's reference loops, and the id layout."""

import numpy as np
import pytest

from tokenizer.audio import (
    CODEBOOK_SIZE,
    NUM_CODEBOOKS,
    UNICODE_OFFSET,
    chars_to_codes,
    chars_to_ids,
    codes_to_chars,
    codes_to_ids,
    ids_to_chars,
    ids_to_codes,
)
from tokenizer.vocab import LLAMA3_LAYOUT, VocabLayout


# The reference implementation from the paper's experiment log (shared/seeds/003_*.txt), as an
# oracle: a per-codebook offset, a transpose, one chr() per code.
def ref_codes_to_chars(codes, codebook_size=2048, unicode_offset=0xE000):
    codes = np.array(codes).copy()
    for i in range(codes.shape[0]):
        codes[i] += unicode_offset + i * codebook_size
    codes = codes.T.reshape(-1)
    return "".join([chr(c) for c in codes])


def ref_chars_to_codes(chars, num_codebooks=8, codebook_size=2048, unicode_offset=0xE000):
    codes = np.array([ord(c) for c in chars])
    codes = codes.reshape(-1, num_codebooks).T
    for i in range(codes.shape[0]):
        codes[i] -= unicode_offset + i * codebook_size
    return codes.tolist()


@pytest.mark.parametrize("frames", [1, 2, 37, 375])
def test_matches_reference(frames):
    rng = np.random.default_rng(frames)
    codes = rng.integers(0, CODEBOOK_SIZE, size=(NUM_CODEBOOKS, frames))
    chars = codes_to_chars(codes)
    assert chars == ref_codes_to_chars(codes)
    assert chars_to_codes(chars).tolist() == ref_chars_to_codes(chars)
    # nested lists are accepted like the reference
    assert codes_to_chars(codes.tolist()) == chars


def test_frame_major_layout():
    codes = np.arange(16).reshape(8, 2)  # codebook k, frame t -> 2k + t
    chars = codes_to_chars(codes)
    expected = [0xE000 + k * 2048 + (2 * k + t) for t in range(2) for k in range(8)]
    assert [ord(c) for c in chars] == expected
    assert chars[0] == "\ue000" and chars[8] == "\ue001"  # frame 1 starts after 8 codebooks


def test_extremes_span_u_e000_to_u_11fff():
    codes = np.full((8, 1), 2047)
    codes[0, 0] = 0
    chars = codes_to_chars(codes)
    assert ord(chars[0]) == 0xE000 and ord(chars[-1]) == 0x11FFF
    assert chars_to_codes(chars).tolist() == codes.tolist()


def test_round_trip_codes_chars_ids_codes():
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 2048, size=(8, 250))
    base = LLAMA3_LAYOUT.audio_base_id
    ids = chars_to_ids(codes_to_chars(codes), base)
    assert ids.dtype == np.int32
    expected = [128260 + k * 2048 + int(codes[k, t]) for t in range(250) for k in range(8)]
    assert ids.tolist() == expected
    assert np.array_equal(codes_to_ids(codes, base), ids)
    assert np.array_equal(ids_to_codes(ids, base), codes)
    assert ids_to_chars(ids, base) == codes_to_chars(codes)


def test_empty():
    assert codes_to_chars(np.zeros((8, 0), dtype=np.int64)) == ""
    assert chars_to_codes("").shape == (8, 0)


def test_length_not_multiple_of_codebooks():
    chars = codes_to_chars(np.zeros((8, 3), dtype=int))[:-3]
    with pytest.raises(ValueError, match=r"21 characters.*multiple of 8.*position 16"):
        chars_to_codes(chars)


def test_char_outside_its_codebook_names_position():
    chars = list(codes_to_chars(np.zeros((8, 3), dtype=int)))
    chars[9] = chr(UNICODE_OFFSET + 5)  # a codebook-0 token where codebook 1 belongs
    with pytest.raises(ValueError, match=r"character 9 \(U\+E005\).*codebook-1.*frame 1"):
        chars_to_codes("".join(chars))
    with pytest.raises(ValueError, match=r"character 3 \(U\+0061\)"):
        chars_to_codes("\ue000\ue800\uf000a" + "\ue000" * 4)


def test_code_out_of_range_names_codebook_and_frame():
    codes = np.zeros((8, 4), dtype=int)
    codes[3, 2] = 2048
    with pytest.raises(ValueError, match=r"code 2048 at codebook 3, frame 2"):
        codes_to_chars(codes)
    codes[3, 2] = -1
    with pytest.raises(ValueError, match=r"code -1 at codebook 3, frame 2"):
        codes_to_chars(codes)


def test_wrong_shapes_and_types():
    with pytest.raises(ValueError, match="2D"):
        codes_to_chars(np.zeros(8, dtype=int))
    with pytest.raises(ValueError, match="2D"):
        codes_to_chars(np.zeros((1, 8, 2), dtype=int))
    with pytest.raises(ValueError, match="integers"):
        codes_to_chars(np.zeros((8, 2)) + 0.5)


def test_id_helpers_reject_non_audio():
    with pytest.raises(ValueError, match="character 1 .*not an audio character"):
        chars_to_ids("\ue000a", 128260)
    with pytest.raises(ValueError, match="id 128259 at position 0"):
        ids_to_chars([128259], 128260)


def test_llama3_layout():
    lay = LLAMA3_LAYOUT
    assert (lay.text_start_id, lay.text_end_id, lay.audio_start_id, lay.audio_end_id) == (
        128256,
        128257,
        128258,
        128259,
    )
    assert lay.audio_id(0, 0) == 128260 and lay.audio_id(7, 2047) == 144643
    assert lay.audio_id(3, 5) == 128260 + 3 * 2048 + 5
    assert lay.vocab_size == 144644 and lay.num_audio_tokens == 16384
    assert lay.special_ids == {
        "<|text_start|>": 128256,
        "<|text_end|>": 128257,
        "<|audio_start|>": 128258,
        "<|audio_end|>": 128259,
    }
    with pytest.raises(ValueError):
        lay.audio_id(8, 0)


def test_other_base_layout():
    lay = VocabLayout(151669)  # e.g. a Qwen3 tokenizer's length
    assert lay.text_start_id == 151669 and lay.audio_end_id == 151672
    assert lay.audio_base_id == 151673 and lay.vocab_size == 151669 + 4 + 16384
