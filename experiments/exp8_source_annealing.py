"""Which speech data? Annealing from SODA-prelim vs 150M / 10B scratch proxies (the experiment log,
"Data sources": annealing and small-scale proxies).

    python experiments/exp8_source_annealing.py --dry-run --prefix gs://<bucket>/soda

Question: can cheap methods -- annealing (switching the data for the LR decay phase) or small
scratch runs -- pick the best speech source without full pre-training runs?

Compared, on three English sources (MLS-en; Emilia = Emilia-en + Emilia-YODAS-en by size;
YODAS2-en), against the SODA-prelim baseline (exp8_soda_prelim.py, multilingual YODAS2):
1. Annealing: SODA-prelim's run with its decay phase (the last 20% of its 238,419 steps) on
   100% of one source.
2. Scratch proxies: a 150M model trained from scratch on 10B tokens of one source.
Each scored on sWUGGY, sBLIMP, Salmon, tWUGGY, tBLIMP, ASR and (annealing only, as the log) TTS.

Found (log): MLS is poor (ASR WER 92.6 annealed, 105.6 at 150M: uncased, unpunctuated text and
fixed 10-20 s chunks); Emilia is best at TTS (WER 6.1) and Yodas at text knowledge (tWUGGY 73.8);
the 150M proxies rank the sources as annealing does, so later mixture studies use them.
Decision: drop MLS, mix YODAS2 + Emilia.
"""

import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from experiments.defaults import run_ref  # noqa: E402

from experiments.defaults import (  # noqa: E402
    default_interleave,
    default_tokenize,
    default_train,
    download,
)
from experiments.exp8_soda_prelim import TOKENS as PRELIM_TOKENS  # noqa: E402
from experiments.exp8_soda_prelim import evals as prelim_evals  # noqa: E402
from experiments.exp8_soda_prelim import prelim  # noqa: E402
from experiments.exp8_soda_prelim import tokenized as prelim_tokenized  # noqa: E402
from experiments.soda_data import EVAL_DATA, tokenized, tokenizer  # noqa: E402
from experiments.main import executor_main  # noqa: E402
from pipeline import ExecutorStep, ResourceConfig, output_path_of, this_output_path, versioned  # noqa: E402
from steps import download_presets as presets  # noqa: E402
from steps.encode import EncodeConfig, encode_speech  # noqa: E402
from steps.evaluate import eval_step  # noqa: E402
from steps.scaling.analysis import CorrelationConfig, run_correlation  # noqa: E402
from steps.training.accounting import ModelShape  # noqa: E402
from steps.training.mixtures import MIXTURES, PRELIM  # noqa: E402
from steps.training.optimizer import SodaRecipe  # noqa: E402

# ---- data: MLS English is the one source not in soda_data (raw audio, Mimi-encoded here) -----
# parler-tts/mls_eng at its pinned commit (steps/download_presets.py): 1,416 train parquet shards,
# read by MLS's own reader (steps/raw_mls.py; input_format "mls"): ids {speaker}_{book}_{segment}
# from each row, unique across shards. As the paper, MLS's fixed 10-20 s chunks are used as they
# are: each chunk is its own recording, so its own document.
mls_raw = download("mls-en", presets.mls_eng_train())
mls_encoded = ExecutorStep(
    name="encoded/mls-en",
    fn=encode_speech,
    config=EncodeConfig(input_paths=(output_path_of(mls_raw, "data/train-*.parquet"),),
                        output_path=this_output_path(), input_format=versioned("mls"),
                        mimi_model=versioned("kyutai/mimi"), num_codebooks=versioned(8), seed=versioned(0),
                        max_chunk_seconds=versioned(60.0), batch_size=64, use_gpu=True),
    description="Mimi codes (8 codebooks) of raw/mls-en, one document per MLS chunk",
    resources=ResourceConfig(cpus=1.0),
)
mls_documents = default_interleave("mls-en", mls_encoded)
caches = {**tokenized, **prelim_tokenized, "mls-en": default_tokenize("mls-en", mls_documents, tokenizer)}

SOURCES = ("mls", "emilia", "yodas")  # steps.training.mixtures: source-mls, source-emilia, source-yodas

# ---- 1. annealing from SODA-prelim ---------------------------------------------------------
# SODA-prelim's run (600M, batch 512, 500B tokens, seed 0) continued from its checkpoint just before
# the LR decay (step 190,000; the decay starts at step 190,736 of 238,419, anneal_start_step) with its
# optimizer state and schedule, the data switching to the source at the decay's first step: as the
# authors restarted from step 190,000.
annealed = {
    source: default_train(f"soda-prelim-600m-anneal-{source}", preset="soda-600m", caches=caches,
                          tokenizer=tokenizer, mixture=PRELIM, anneal_mixture=MIXTURES[f"source-{source}"],
                          batch_size=512, token_budget=PRELIM_TOKENS, tpu="v5p-64", optimizer=SodaRecipe(),
                          initialize_from=prelim)
    for source in SOURCES
}

# ---- 2. small scratch proxies: 150M, 10B tokens ---------------------------------------------
# The log names only "150M, 10B tokens". Shape from the authors' Qwen3 150M (hidden 512, 20 layers,
# 8 heads of 64, FFN 1792, tied embeddings: ~76M non-embedding + 74M embedding params).
# Batch 128 and LR 3e-3 * sqrt(128/256) = 2.12e-3 (no width factor) as in the authors' public
# proxy scripts; the SODA LR formula would give 3.0e-3 at width 512. Other settings: SODA recipe.
PROXY_SHAPE = ModelShape(hidden=512, intermediate=1792, layers=20, heads=8, kv_heads=8, head_dim=64,
                         tied_embeddings=True)
PROXY_TOKENS = 10_000_000_000
PROXY_BATCH = 128  # 19,074 steps of 128 x 4096
PROXY_OPTIMIZER = SodaRecipe(learning_rate=3e-3 * math.sqrt(PROXY_BATCH / 256))
PROXY_TPU = "v5p-8"
proxies = {
    source: default_train(f"proxy-150m-10b-{source}", shape=PROXY_SHAPE, caches=caches, tokenizer=tokenizer,
                                  mixture=MIXTURES[f"source-{source}"], batch_size=PROXY_BATCH,
                                  token_budget=PROXY_TOKENS, tpu=PROXY_TPU, optimizer=PROXY_OPTIMIZER)
    for source in SOURCES
}

# ---- evaluations: the log's columns, plus dev-clean NLL for the comparison ---------------------
ANNEAL_TASKS = ("swuggy", "sblimp", "salmon", "twuggy", "tblimp", "asr", "tts", "validation_nll")
PROXY_TASKS = ("swuggy", "sblimp", "salmon", "twuggy", "tblimp", "asr", "validation_nll")  # no TTS at 150M ("--")
anneal_evals = {source: {task: eval_step(task, model, EVAL_DATA[task], gpus=1) for task in ANNEAL_TASKS}
                for source, model in annealed.items()}
proxy_evals = {source: {task: eval_step(task, model, EVAL_DATA[task], gpus=1) for task in PROXY_TASKS}
               for source, model in proxies.items()}


# The comparison: every run's metrics side by side (the experiment log's Results table) and
# dev-clean NLL against each metric across the seven runs, SODA-prelim as the baseline.
comparison = ExecutorStep(
    name="analysis/source-annealing-vs-proxies",
    fn=run_correlation,
    config=CorrelationConfig(
        output_path=this_output_path(),
        runs=(run_ref("soda-prelim-600m", prelim, {t: prelim_evals[t] for t in ANNEAL_TASKS}),
              *(run_ref(f"anneal-{s}", annealed[s], anneal_evals[s]) for s in SOURCES),
              *(run_ref(f"proxy-150m-{s}", proxies[s], proxy_evals[s]) for s in SOURCES)),
    ),
    description="MLS vs Emilia vs YODAS2: annealed from SODA-prelim and as 150M/10B scratch proxies",
)

STEPS = [comparison]

if __name__ == "__main__":
    executor_main(steps=STEPS, description="Data-source ablation: annealing from SODA-prelim vs 150M/10B proxies")
