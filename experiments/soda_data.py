"""The data every SODA experiment shares, declared once: pinned downloads, the released
pre-encoded documents, the tokenizer, one token cache per mixture component, evaluation sets.

The paper's runs trained on the released, already interleaved English documents of YODAS2
(164K h) and Emilia + Emilia-YODAS (139K h), both formats per recording, plus Nemotron-CC
HQ-actual text. (The raw path -- download audio, Mimi-encode, interleave -- is `default_encode`
+ `default_interleave` in experiments/defaults.py and gives documents of the same form.)
"""

from experiments.defaults import (
    default_text_documents,
    default_tokenize,
    default_tokenizer,
    download,
    pre_encoded_documents,
)
from eval.datasets import hellaswag_raw
from steps import download_presets as presets

# Pinned downloads.
yodas2_released = download("yodas2-mm-pretrain-en", presets.yodas2_mm_pretrain_en())
emilia_released = download("emilia-mm-pretrain-en", presets.emilia_mm_pretrain_en())
nemotron = download("nemotron-cc-hq-actual", presets.nemotron_cc_hq_actual())
librispeech = download("librispeech-dev-test-clean", presets.librispeech_dev_test_clean())
sblimp = download("sblimp", presets.sblimp())
swuggy = download("swuggy", presets.swuggy())
salmon = download("salmon", presets.salmon())
seed_tts_eval = download("seed-tts-eval-en", presets.seed_tts_eval_en())
hellaswag = download("hellaswag", hellaswag_raw())

# Documents, keyed by the mixture's source names (steps/training/mixtures.py).
documents = {
    "yodas2-en": pre_encoded_documents("yodas2-en", yodas2_released, "**/*.parquet"),
    "emilia-yodas-en": pre_encoded_documents("emilia-yodas-en", emilia_released, "Emilia-YODAS/EN/*.parquet"),
    "emilia-en": pre_encoded_documents("emilia-en", emilia_released, "Emilia/EN/*.parquet"),
    "nemotron-cc-hq-actual": default_text_documents("nemotron-cc-hq-actual", nemotron),
}

# Llama 3 + <|text_start|> <|text_end|> <|audio_start|> <|audio_end|> + 16,384 audio tokens.
tokenizer = default_tokenizer(base="llama3")

# One Levanter token cache per mixture component.
tokenized = {name: default_tokenize(name, docs, tokenizer) for name, docs in documents.items()}

# Evaluation data for each task (shared/reference.md section 8).
EVAL_DATA = {
    "validation_nll": librispeech,  # dev-clean
    "asr": librispeech,  # test-clean
    "tts": seed_tts_eval,
    "sblimp": sblimp,
    "swuggy": swuggy,
    "salmon": salmon,
    "tblimp": sblimp,  # transcripts of the same pairs
    "twuggy": swuggy,
    "hellaswag": hellaswag,
}
