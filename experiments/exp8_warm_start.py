"""Warm start vs cold start at 600M and 1.7B on 500B tokens (the experiment log, "Warm start").

    python experiments/exp8_warm_start.py --dry-run --prefix gs://<bucket>/soda

Question: many audio LMs (TWIST, CSM, SpiritLM) start from a text LLM. Which skills does that
help, and which not?

Recipe: the SODA-LongRun recipe (final mix: 5% Nemotron + 95% YODAS2/Emilia; 500B tokens; batch
512; SODA optimizer) at 600M and 1.7B, initialised either at random (cold: the SODA-600M/1.7B of
exp1699_soda_all.py, the very same steps) or from Qwen3-0.6B-Base / Qwen3-1.7B-Base (warm). A warm
start needs a Qwen3-based tokenizer (Qwen3 + the 16,388 SODA tokens), so the data is tokenized
again with it. One run per configuration, as in the log.

Found (log): warm start shows unpredictable loss spikes (cold is smooth); it keeps a text-knowledge
edge (tWUGGY 77.0 vs 73.1 at 600M, 79.2 vs 74.7 at 1.7B; HellaSwag 36.3 vs 35.8, 47.1 vs 44.5) but
ASR is worse (14.6 vs 10.2, 17.3 vs 7.0); speech scores are about equal. Recommendation: cold start.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from experiments.defaults import run_ref  # noqa: E402

from experiments.defaults import default_tokenize, default_tokenizer, default_train  # noqa: E402
from experiments.exp1699_soda_all import SLICES, TOKENS  # noqa: E402
from experiments.exp1699_soda_all import evals as cold_evals  # noqa: E402
from experiments.exp1699_soda_all import models as cold_models  # noqa: E402
from experiments.soda_data import EVAL_DATA, documents  # noqa: E402
from experiments.main import executor_main  # noqa: E402
from pipeline import ExecutorStep, this_output_path  # noqa: E402
from steps.evaluate import eval_step  # noqa: E402
from steps.scaling.analysis import CorrelationConfig, run_correlation  # noqa: E402
from steps.training.mixtures import FINAL  # noqa: E402
from steps.training.optimizer import SodaRecipe  # noqa: E402

# Qwen3-0.6B-Base and Qwen3-1.7B-Base share one tokenizer; extend it as the Llama 3 one is.
qwen3_tokenizer = default_tokenizer(base="Qwen/Qwen3-0.6B-Base", name="tokenizer/soda-qwen3")
qwen3_tokenized = {name: default_tokenize(f"{name}-qwen3", docs, qwen3_tokenizer) for name, docs in documents.items()}

# Same mix, tokens, batch, optimizer and slices as the cold runs. The model's shape is the
# checkpoint's (Qwen3-0.6B: hidden 1024, 28 layers; Qwen3-1.7B: hidden 2048, 28 layers), so the
# LR formula gives the cold runs' LR (4.24e-3 and 3.0e-3).
CHECKPOINTS = {"600m": "Qwen/Qwen3-0.6B-Base", "1.7b": "Qwen/Qwen3-1.7B-Base"}
warm = {
    size: default_train(f"soda-{size}-warm-start", warm_start_hf=checkpoint, caches=qwen3_tokenized,
                                tokenizer=qwen3_tokenizer, mixture=FINAL, batch_size=512, token_budget=TOKENS,
                                tpu=SLICES[size], optimizer=SodaRecipe())
    for size, checkpoint in CHECKPOINTS.items()
}

# The full suite for the warm runs; the cold runs' evaluations are exp1699's own steps.
warm_evals = {size: {task: eval_step(task, model, data, gpus=1) for task, data in EVAL_DATA.items()}
              for size, model in warm.items()}


comparison = ExecutorStep(
    name="analysis/warm-vs-cold-start",
    fn=run_correlation,
    config=CorrelationConfig(
        output_path=this_output_path(),
        runs=tuple(run for size in CHECKPOINTS
                   for run in (run_ref(f"soda-{size}-cold", cold_models[size], cold_evals[size]),
                               run_ref(f"soda-{size}-warm", warm[size], warm_evals[size]))),
    ),
    description="warm (Qwen3 base) vs cold start at 600M and 1.7B: dev-clean NLL vs every metric",
)

STEPS = [comparison]

if __name__ == "__main__":
    executor_main(steps=STEPS, description="Warm start (Qwen3 base) vs cold start, 600M and 1.7B, 500B tokens")
