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
    n = len(base) + 2  # the base, then <|begin_of_text|> and <|end_of_text|> (see test_qwen_style_bos_eos)
    assert len(ext) == n + 4 + 16384
    assert ext.convert_tokens_to_ids(list(SODA_SPECIAL_TOKENS)) == [n, n + 1, n + 2, n + 3]
    assert ext.convert_tokens_to_ids(chr(0xE000 + 2 * 2048 + 7)) == n + 4 + 2 * 2048 + 7
    text = "Hello world, naïve café! <|im_end|><think>"
    assert ext(text)["input_ids"] == base(text)["input_ids"]
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


# ---- the base: files, family, refusals ---------------------------------------------------------


def _vocab(tokenizer_dir):
    with open(os.path.join(tokenizer_dir, "tokenizer.json"), encoding="utf-8") as f:
        data = json.load(f)
    return {t["content"]: t["id"] for t in data["added_tokens"]} | data["model"]["vocab"]


@pytest.mark.parametrize("with_model", [True, False])
def test_base_with_only_tokenizer_json_gives_the_released_ids(tmp_path, llama3_dir, with_model):
    """A directory named like Llama holding tokenizer.json (+ tokenizer.model) but no
    tokenizer_config.json: transformers would load it as LlamaTokenizerFast and add <s></s><unk>
    at 128256..128258; the build gives exactly the `--base llama3` tokenizer instead."""
    from transformers import AutoTokenizer

    from tokenizer.build import build_extended_tokenizer, save_extended_tokenizer
    from tokenizer.testing import make_llama3_files_only_dir

    base = make_llama3_files_only_dir(str(tmp_path / "llama3-8b"), with_model=with_model)
    plain = AutoTokenizer.from_pretrained(base)  # the trap, still there in transformers
    assert type(plain).__name__ == "LlamaTokenizerFast" and len(plain) == 128259 and plain.bos_token == "<s>"

    tok, layout = build_extended_tokenizer(base)
    out = str(tmp_path / "out")
    save_extended_tokenizer(tok, layout, out, base)
    got, want = AutoTokenizer.from_pretrained(out), AutoTokenizer.from_pretrained(llama3_dir)
    assert _vocab(out) == _vocab(llama3_dir) and len(got) == len(want) == 144644
    assert (got.bos_token, got.bos_token_id, got.eos_token, got.eos_token_id) == (
        "<|begin_of_text|>", 128000, "<|end_of_text|>", 128001)
    doc = "<|begin_of_text|><|text_start|>Hi there<|text_end|><|audio_start|>\ue000\U00011fff<|audio_end|><|end_of_text|>"
    assert got(doc, add_special_tokens=False)["input_ids"] == want(doc, add_special_tokens=False)["input_ids"]
    assert got("hi")["input_ids"] == want("hi")["input_ids"] == [128000, 6151]
    # every token of the base's own tokenizer.json keeps its id
    assert _vocab(base).items() <= _vocab(out).items()


def test_base_with_a_changed_llama_vocabulary_is_refused(tmp_path):
    from tokenizer.build import build_extended_tokenizer
    from tokenizer.testing import make_llama3_files_only_dir

    base = make_llama3_files_only_dir(str(tmp_path / "llama3-edited"), with_model=False)
    path = os.path.join(base, "tokenizer.json")
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    vocab = data["model"]["vocab"]
    a, b = "Hello", "ĠHello"
    vocab[a], vocab[b] = vocab[b], vocab[a]  # two ids swapped: every text with them would shift
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, ensure_ascii=False)
    with pytest.raises(ValueError, match=r"looks like Llama 3 .* not the Llama 3 vocabulary: its BPE "
                                         r"vocabulary/merges differ .*2 ids differ, e\.g\. id 9906"):
        build_extended_tokenizer(base)


def test_base_with_llama_bos_at_another_id_is_refused(tmp_path):
    from tokenizer.build import build_extended_tokenizer
    from tokenizer.testing import make_tiny_qwen_style_tokenizer_dir

    base = make_tiny_qwen_style_tokenizer_dir(str(tmp_path / "base"))
    with open(os.path.join(base, "tokenizer.json"), encoding="utf-8") as f:
        data = json.load(f)
    n = max(_vocab(base).values()) + 1
    data["added_tokens"].append({"id": n, "content": "<|begin_of_text|>", "single_word": False, "lstrip": False,
                                 "rstrip": False, "normalized": False, "special": True})
    with open(os.path.join(base, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(data, f, ensure_ascii=False)
    with pytest.raises(ValueError, match=rf"looks like Llama 3 .*<\|begin_of_text\|> is id {n}, Llama 3's is 128000"):
        build_extended_tokenizer(base)


def test_unknown_vocabulary_is_refused(tmp_path, capsys):
    from tokenizers import Tokenizer, models, pre_tokenizers

    from tokenizer.build import build_extended_tokenizer, cli_main

    tok = Tokenizer(models.WordLevel({"[UNK]": 0, "hello": 1, "world": 2}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    base = tmp_path / "wordlevel"
    base.mkdir()
    tok.save(str(base / "tokenizer.json"))
    with pytest.raises(ValueError, match=r"unknown vocabulary \(3 tokens.*Llama 3 tokenizer .*Qwen3"):
        build_extended_tokenizer(str(base))
    assert cli_main(["--base", str(base), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "unknown vocabulary" in err and not (tmp_path / "out").exists()


def test_config_that_invents_tokens_is_refused(tmp_path):
    """A tokenizer_config.json naming special tokens its tokenizer.json lacks (here a Llama-style
    `<s>`) makes transformers append them: refused rather than shifting every SODA id."""
    from tokenizer.build import build_extended_tokenizer
    from tokenizer.testing import make_tiny_qwen_style_tokenizer_dir

    base = make_tiny_qwen_style_tokenizer_dir(str(tmp_path / "base"))
    config_path = os.path.join(base, "tokenizer_config.json")
    with open(config_path) as f:
        config = json.load(f)
    config["bos_token"] = "<s>"
    with open(config_path, "w") as f:
        json.dump(config, f)
    with pytest.raises(ValueError, match=r"with \d+ ids, its tokenizer.json has \d+ \(added \['<s>'\].*fix or remove"):
        build_extended_tokenizer(base)


def test_no_tokenizer_json_is_refused(tmp_path, capsys):
    from tokenizer.build import cli_main

    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "tokenizer_config.json").write_text("{}")
    assert cli_main(["--base", str(tmp_path / "base"), "--out", str(tmp_path / "out")]) == 2
    assert "holds no tokenizer.json" in capsys.readouterr().err


def test_qwen_style_bos_eos_are_single_added_special_tokens(qwen_dir, tmp_path):
    """The warm-start documents start with <|begin_of_text|> and end with <|end_of_text|>: in the
    Qwen3-style extension each is one special token (HF and the tokenize step's fast path)."""
    from transformers import AutoTokenizer

    from tokenizer.fast_tokenize import FastTokenizer

    ext = AutoTokenizer.from_pretrained(qwen_dir)
    base = AutoTokenizer.from_pretrained(os.path.join(os.path.dirname(qwen_dir), "tiny-qwen-base"))
    n = len(base)
    assert len(base("<|begin_of_text|>", add_special_tokens=False)["input_ids"]) > 1  # the base splits it
    assert (ext.bos_token, ext.bos_token_id, ext.eos_token, ext.eos_token_id) == (
        "<|begin_of_text|>", n, "<|end_of_text|>", n + 1)
    assert {"<|begin_of_text|>", "<|end_of_text|>"} <= set(ext.all_special_tokens)
    audio = codes_to_chars(np.arange(16).reshape(8, 2))
    doc = f"<|begin_of_text|><|text_start|>Hello world<|text_end|><|audio_start|>{audio}<|audio_end|><|end_of_text|>"
    ids = ext(doc, add_special_tokens=False)["input_ids"]
    hello = base("Hello world", add_special_tokens=False)["input_ids"]
    assert ids == [n, n + 2, *hello, n + 3, n + 4, *[n + 6 + ord(c) - 0xE000 for c in audio], n + 5, n + 1]
    assert FastTokenizer(qwen_dir).encode(doc).tolist() == ids
    assert ext(doc)["input_ids"] == ids  # no BOS of its own added either
    assert ext.decode(ids) == doc
