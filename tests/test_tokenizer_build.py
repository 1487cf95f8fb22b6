"""The extended tokenizer: documented ids, single-id audio, reload by transformers and Levanter."""

import json
import os
import re

import numpy as np
import pytest

from tokenizer.audio import UNICODE_OFFSET, codes_to_chars
from tokenizer.vocab import SODA_SPECIAL_TOKENS


@pytest.fixture(scope="module")
def hf(llama3_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(llama3_dir)


def test_documented_ids(hf):
    assert len(hf) == 144644
    assert hf.convert_tokens_to_ids(list(SODA_SPECIAL_TOKENS)) == [128256, 128257, 128258, 128259]
    assert hf.bos_token == "<|begin_of_text|>" and hf.bos_token_id == 128000
    assert hf.eos_token == "<|end_of_text|>" and hf.eos_token_id == 128001
    for k, c in [(0, 0), (0, 2047), (3, 5), (7, 2047)]:
        assert hf.convert_tokens_to_ids(chr(UNICODE_OFFSET + k * 2048 + c)) == 128260 + k * 2048 + c
    # the base vocabulary is untouched
    assert hf("Hello world", add_special_tokens=False)["input_ids"] == [9906, 1917]


def test_audio_run_is_one_id_per_char_and_decodes_back(hf):
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 2048, size=(8, 500))
    audio = codes_to_chars(codes)
    ids = hf(audio, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(audio) == 4000
    assert ids == [128260 + ord(ch) - UNICODE_OFFSET for ch in audio]
    assert hf.decode(ids) == audio
    # no merges with neighbouring text either
    ids2 = hf("so" + audio[:16] + "on", add_special_tokens=False)["input_ids"]
    assert ids2[1:17] == ids[:16] and len(ids2) == 18
    doc = "<|begin_of_text|><|text_start|> Hi<|text_end|><|audio_start|>" + audio[:8] + "<|audio_end|>"
    doc_ids = hf(doc, add_special_tokens=False)["input_ids"]
    assert doc_ids[:3] == [128000, 128256, 21694] and doc_ids[3:5] == [128257, 128258]
    assert doc_ids[-1] == 128259 and hf.decode(doc_ids) == doc


def test_bos_added_by_default_like_meta_llama3(hf):
    assert hf("hi")["input_ids"] == [128000, 6151]


def test_levanter_loads_it(llama3_dir, hf):
    from levanter.tokenizers import load_tokenizer

    lev = load_tokenizer(llama3_dir)
    assert lev.vocab_size == 144644 and len(lev) == 144644
    assert lev.bos_token_id == 128000 and lev.eos_token_id == 128001
    doc = "<|begin_of_text|><|audio_start|>\ue000\uf7ff\U00011fff<|audio_end|><|text_start|>ok<|text_end|>"
    assert lev.encode(doc) == hf(doc, add_special_tokens=False)["input_ids"]
    assert lev.encode(doc)[2:5] == [128260, 128260 + 0xF7FF - 0xE000, 144643]
    assert {128256, 128257, 128258, 128259} <= set(lev.all_special_ids)


def test_layout_files(llama3_dir):
    from tokenizer.build import load_layout

    lay = load_layout(llama3_dir)
    assert (lay.base_vocab_size, lay.audio_base_id, lay.vocab_size) == (128256, 128260, 144644)
    with open(os.path.join(llama3_dir, "summary.json")) as f:
        summary = json.load(f)
    assert summary["special_ids"]["<|audio_end|>"] == 128259 and summary["base"] == "llama3"


def test_rebuilding_an_extended_tokenizer_is_refused(llama3_dir):
    from tokenizer.build import build_extended_tokenizer

    with pytest.raises(ValueError, match="already has tokens"):
        build_extended_tokenizer(llama3_dir)


def test_local_llama3_dir_is_reused(tmp_path):
    from tokenizer.build import local_llama3_tokenizer_dir

    a = local_llama3_tokenizer_dir(str(tmp_path))
    assert a == local_llama3_tokenizer_dir(str(tmp_path))
    assert sorted(os.listdir(a)) == ["special_tokens_map.json", "tokenizer.json", "tokenizer_config.json"]


def test_qwen_style_base(tmp_path):
    from transformers import AutoTokenizer

    from tokenizer.testing import qwen_style_extended_dir

    out = qwen_style_extended_dir(str(tmp_path))
    base = AutoTokenizer.from_pretrained(str(tmp_path / "tiny-qwen-base"))
    ext = AutoTokenizer.from_pretrained(out)
    n = len(base)
    assert len(ext) == n + 4 + 16384
    assert ext.convert_tokens_to_ids(list(SODA_SPECIAL_TOKENS)) == [n, n + 1, n + 2, n + 3]
    assert ext.convert_tokens_to_ids(chr(0xE000 + 2 * 2048 + 7)) == n + 4 + 2 * 2048 + 7
    text = "Hello world, naïve café! <|im_end|><think>"
    assert ext(text)["input_ids"] == base(text)["input_ids"]
    assert ext.bos_token is None and ext.eos_token == "<|endoftext|>"
    audio = codes_to_chars(np.arange(16).reshape(8, 2))
    assert ext(audio, add_special_tokens=False)["input_ids"] == [n + 4 + ord(c) - 0xE000 for c in audio]


def test_cli(tmp_path, capsys):
    from tokenizer.build import cli_main
    from tokenizer.testing import make_tiny_qwen_style_tokenizer_dir

    base = make_tiny_qwen_style_tokenizer_dir(str(tmp_path / "base"))
    out = str(tmp_path / "out")
    assert cli_main(["--base", base, "--out", out]) == 0
    printed = capsys.readouterr().out
    m = re.search(r"wrote (\S+): (\d+) ids \(base (\d+); <\|text_start\|> (\d+),", printed)
    assert m and m.group(1) == out
    assert int(m.group(2)) == int(m.group(3)) + 4 + 16384 and m.group(3) == m.group(4)
    assert sorted(os.listdir(out)) == [
        "soda_vocab.json",
        "special_tokens_map.json",
        "summary.json",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
