"""SODA, the full reproduction (arXiv 2602.16687): data, tokenizer, token caches, models, evals.

    python experiments/exp1699_soda_all.py --dry-run --prefix gs://<bucket>/soda

The paper's recipe, stage by stage:
1. Data (experiments/soda_data.py): the released pre-encoded YODAS2 and Emilia documents and
   Nemotron-CC HQ-actual text, each download pinned to a dataset revision; the Llama 3 tokenizer
   extended by 16,388 tokens; one Levanter token cache per mixture component.
2. The four SODA models (Qwen3 shapes, 135M/600M/1.7B/4B) on 500B tokens of the final mix
   (YODAS2-en 0.516, Emilia-YODAS-en 0.288, Emilia-en 0.146, Nemotron 0.05), each on its TPU slice.
3. Every evaluation for each model (reference.md section 8), and the correlation of validation
   NLL with the downstream metrics.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from experiments.defaults import default_train, run_ref  # noqa: E402
from experiments.soda_data import EVAL_DATA, tokenized, tokenizer  # noqa: E402
from experiments.main import executor_main  # noqa: E402
from pipeline import ExecutorStep, this_output_path  # noqa: E402
from steps.evaluate import eval_step  # noqa: E402
from steps.scaling.analysis import CorrelationConfig, run_correlation  # noqa: E402
from steps.training.mixtures import FINAL  # noqa: E402

# The four SODA models: 500B tokens each (batch 512 x 4096 = 238,419 steps) on the final mix.
TOKENS = 500_000_000_000
SLICES = {"135m": "v5p-32", "600m": "v5p-64", "1.7b": "v5p-128", "4b": "v5p-256"}
models = {
    size: default_train(f"soda-{size}", preset=f"soda-{size}", caches=tokenized, tokenizer=tokenizer,
                        mixture=FINAL, batch_size=512, token_budget=TOKENS, tpu=slice_type)
    for size, slice_type in SLICES.items()
}

# Every evaluation for each model, on one GPU each.
evals = {size: {task: eval_step(task, model, data, gpus=1) for task, data in EVAL_DATA.items()}
         for size, model in models.items()}

# Validation NLL against each downstream metric across the four models (the paper's table).
correlations = ExecutorStep(
    name="analysis/soda-correlations",
    fn=run_correlation,
    config=CorrelationConfig(output_path=this_output_path(),
                             runs=tuple(run_ref(f"soda-{size}", models[size], evals[size]) for size in SLICES)),
    description="validation NLL vs downstream metrics across the SODA models",
)

STEPS = [correlations]

if __name__ == "__main__":
    executor_main(steps=STEPS, description="SODA: the full reproduction (arXiv 2602.16687)")
