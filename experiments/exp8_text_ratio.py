"""How much text? The Nemotron text-ratio sweep at 150M / 10B tokens (the experiment log, "Nemotron mixture").

    python experiments/exp8_text_ratio.py --dry-run --prefix gs://<bucket>/soda

Question: SODA-prelim lacked semantics and knowledge (MMLU 25%, sBLIMP ~50%). Does adding
high-quality text-only data (Nemotron-CC HQ-actual) to the noisy speech transcripts help, and at
what text-to-speech ratio?

Recipe: the 150M / 10B-token scratch proxy of the data-source ablation (exp8_source_annealing.py,
whose proxies ranked sources as annealing did), trained on X% Nemotron + (100 - X)% YODAS2-en
for X from 0% to 90%. Compared: NLL on audio and on text validation data as X grows (the log's
figure), here LibriSpeech dev-clean NLL (its variants split audio and text tokens) with the
semantic (sBLIMP, sWUGGY) and text-knowledge (tBLIMP, tWUGGY, HellaSwag) scores beside it.

Found (log): a figure of audio and text validation NLL against X (its numbers are not in the
log); decision: 5% text (Nemotron) + 95% speech (YODAS2 + Emilia) for the IsoFLOP sweep and the
final runs (mixtures.FINAL).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from experiments.defaults import default_train  # noqa: E402
from experiments.exp8_source_annealing import (  # noqa: E402
    PROXY_BATCH,
    PROXY_OPTIMIZER,
    PROXY_SHAPE,
    PROXY_TOKENS,
    PROXY_TPU,
)
from experiments.soda_data import EVAL_DATA, tokenized, tokenizer  # noqa: E402
from experiments.main import executor_main  # noqa: E402
from pipeline import ExecutorStep, output_path_of, this_output_path  # noqa: E402
from steps.evaluate import eval_step  # noqa: E402
from steps.scaling.analysis import CorrelationConfig, RunRef, run_correlation  # noqa: E402
from steps.training.mixtures import TEXT_RATIOS, text_ratio_mixture  # noqa: E402

# The log gives the range, 0% to 90%, not the points: the project's grid (mixtures.TEXT_RATIOS:
# 0, 5, 10, 20, 30, 50, 70, 90%). The authors' public sweep also ran 2.5, 7.5, 40, 60, 80, 100%.
runs = {
    ratio: default_train(f"proxy-150m-10b-{text_ratio_mixture(ratio).name}", shape=PROXY_SHAPE,
                                 caches=tokenized, tokenizer=tokenizer, mixture=text_ratio_mixture(ratio),
                                 batch_size=PROXY_BATCH, token_budget=PROXY_TOKENS, tpu=PROXY_TPU,
                                 optimizer=PROXY_OPTIMIZER)
    for ratio in TEXT_RATIOS
}

# The log reports validation NLL only; the likelihood tasks and HellaSwag are cheap at 150M and
# show the semantic/knowledge effect the sweep was run for. No ASR/TTS (as the 150M source proxies).
TASKS = ("validation_nll", "sblimp", "swuggy", "tblimp", "twuggy", "hellaswag")
evals = {ratio: {task: eval_step(task, model, EVAL_DATA[task], gpus=1) for task in TASKS}
         for ratio, model in runs.items()}

comparison = ExecutorStep(
    name="analysis/text-ratio-sweep",
    fn=run_correlation,
    config=CorrelationConfig(
        output_path=this_output_path(),
        runs=tuple(RunRef(budget=0.0, train=output_path_of(model), name=text_ratio_mixture(ratio).name,
                          evals={task: output_path_of(step) for task, step in evals[ratio].items()})
                   for ratio, model in runs.items()),
    ),
    description="dev-clean NLL vs semantic and text-knowledge scores across the Nemotron ratios",
)

STEPS = [comparison]

if __name__ == "__main__":
    executor_main(steps=STEPS, description="Nemotron text-ratio sweep (150M, 10B tokens, 0-90% text)")
