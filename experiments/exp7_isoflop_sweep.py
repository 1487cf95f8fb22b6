"""The IsoFLOP sweep and its scaling laws (SODA section 5; shared/reference.md sections 6-7).

    python experiments/exp7_isoflop_sweep.py --dry-run --prefix gs://<bucket>/soda

Seven training-FLOP budgets (3e18 .. 3e20; the original code labelled them in forward FLOPs,
1e18 .. 1e20). At each budget, models of width 128 .. 2048 (Qwen3 shapes from the width) get
the batch, LR, beta2 and steps that spend exactly the budget; points off by more than 1%, with
batch < 8 or with 400,000+ steps are dropped. Each model trains on the final mix with the
sweep's recipe (Cautious, beta1 0.95, wd 0.1, WSD, no z-loss) on a v5p-32 slice (a v5p-16 for the
batch-8 points, whose batch cannot be split over 16 devices) and is scored on LibriSpeech
dev-clean NLL (the fits' loss) and on ASR, TTS and sBLIMP (the correlations). Approach 2
(parabolas per budget) and Approach 3 (L = E + A/N^alpha + B/D^beta) are fitted to all runs.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from experiments.defaults import isoflop_train, run_ref, slice_for_batch  # noqa: E402
from experiments.soda_data import EVAL_DATA, tokenized, tokenizer  # noqa: E402
from experiments.main import executor_main  # noqa: E402
from pipeline import ExecutorStep, this_output_path  # noqa: E402
from steps.evaluate import eval_step  # noqa: E402
from steps.scaling.analysis import (  # noqa: E402
    CorrelationConfig,
    ScalingAnalysisConfig,
    run_correlation,
    run_scaling_analysis,
)
from steps.scaling.grid import PAPER_TRAINING_BUDGETS, IsoFlopGridConfig, isoflop_grid  # noqa: E402
from steps.training.mixtures import FINAL  # noqa: E402

POINTS = isoflop_grid(IsoFlopGridConfig(budgets=PAPER_TRAINING_BUDGETS))
TASKS = ("validation_nll", "asr", "tts", "sblimp")

runs, nll_runs = [], []
for point in POINTS:
    model = isoflop_train(point, caches=tokenized, tokenizer=tokenizer, mixture=FINAL,
                          tpu=slice_for_batch(point.batch, "v5p-32"))
    evals = {task: eval_step(task, model, EVAL_DATA[task], gpus=1) for task in TASKS}
    runs.append(run_ref(point.name, model, evals, budget=point.budget))
    nll_runs.append(run_ref(point.name, model, {"validation_nll": evals["validation_nll"]}, budget=point.budget))

# The fits read the dev-clean NLL only, so they wait for nothing else (a failed TTS eval cannot block them).
fits = ExecutorStep(
    name="analysis/isoflop-scaling-laws",
    fn=run_scaling_analysis,
    config=ScalingAnalysisConfig(output_path=this_output_path(), runs=tuple(nll_runs), bootstrap=1000),
    description="Approach 2 and 3 fits of LibriSpeech dev-clean NLL over the IsoFLOP runs",
)
correlations = ExecutorStep(
    name="analysis/isoflop-correlations",
    fn=run_correlation,
    config=CorrelationConfig(output_path=this_output_path(), runs=tuple(runs)),
    description="validation NLL vs ASR/TTS WER, TTS SIM and sBLIMP across the IsoFLOP runs",
)

STEPS = [fits, correlations]

if __name__ == "__main__":
    executor_main(steps=STEPS, description="SODA IsoFLOP sweep and scaling-law fits")
