"""SODA, the full reproduction (arXiv 2602.16687): data, tokenizer, token caches, models, evals.

    python experiments/exp1699_soda_all.py --dry-run --prefix gs://<bucket>/soda

The paper's recipe, stage by stage:
1. Data: the released pre-encoded, already interleaved English documents of YODAS2 (164K h) and
   Emilia + Emilia-YODAS (139K h), both formats per recording, as the paper's runs used them;
   Nemotron-CC HQ-actual as text. Every download is pinned to a dataset revision.
   (The raw path -- download audio, Mimi-encode, interleave -- is `default_encode` +
   `default_interleave` in experiments/defaults.py and gives documents of the same form.)
2. Tokenizer: Llama 3 + <|text_start|> <|text_end|> <|audio_start|> <|audio_end|> + 16,384 audio tokens.
3. One Levanter token cache per mixture component.
4. The four SODA models (Qwen3 shapes, 135M/600M/1.7B/4B) on 500B tokens of the final mix
   (YODAS2-en 0.516, Emilia-YODAS-en 0.288, Emilia-en 0.146, Nemotron 0.05), each on its TPU slice.
Their evaluations, the correlation analysis and the report join as their steps land (#6, #8).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from experiments.defaults import (  # noqa: E402
    default_text_documents,
    default_train,
    default_tokenize,
    default_tokenizer,
    download,
    pre_encoded_documents,
)
from pipeline import executor_main  # noqa: E402
from steps import download_presets as presets  # noqa: E402
from steps.training.mixtures import FINAL  # noqa: E402

# 1. Data, pinned.
yodas2_released = download("yodas2-mm-pretrain-en", presets.yodas2_mm_pretrain_en())
emilia_released = download("emilia-mm-pretrain-en", presets.emilia_mm_pretrain_en())
nemotron = download("nemotron-cc-hq-actual", presets.nemotron_cc_hq_actual())
librispeech = download("librispeech-dev-test-clean", presets.librispeech_dev_test_clean())
eval_sets = [download(name, presets.PRESETS[name]()) for name in ("sblimp", "swuggy", "salmon", "seed-tts-eval-en")]

documents = {
    "yodas2-en": pre_encoded_documents("yodas2-en", yodas2_released, "**/*.parquet"),
    "emilia-yodas-en": pre_encoded_documents("emilia-yodas-en", emilia_released, "Emilia-YODAS/EN/*.parquet"),
    "emilia-en": pre_encoded_documents("emilia-en", emilia_released, "Emilia/EN/*.parquet"),
    "nemotron-cc-hq-actual": default_text_documents("nemotron-cc-hq-actual", nemotron),
}

# 2. Tokenizer.
tokenizer = default_tokenizer(base="llama3")

# 3. Token caches, one per mixture component.
tokenized = {name: default_tokenize(name, docs, tokenizer) for name, docs in documents.items()}

# 4. The four SODA models: 500B tokens each (batch 512 x 4096 = 238,419 steps) on the final mix.
TOKENS = 500_000_000_000
SLICES = {"135m": "v5p-32", "600m": "v5p-64", "1.7b": "v5p-128", "4b": "v5p-256"}
models = {
    size: default_train(f"soda-{size}", preset=f"soda-{size}", caches=tokenized, tokenizer=tokenizer,
                        mixture=FINAL, batch_size=512, token_budget=TOKENS, tpu=slice_type)
    for size, slice_type in SLICES.items()
}

STEPS = [*models.values(), librispeech, *eval_sets]

if __name__ == "__main__":
    executor_main(steps=STEPS, description="SODA: the full reproduction (arXiv 2602.16687)")
