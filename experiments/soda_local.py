"""SODA's recipe, offline, on the shipped corpus: the README's first command.

    python experiments/soda_local.py [--dry-run] [--prefix P]

A PLUMBING RUN, NOT A SPEECH MODEL: with no access to the Hugging Face hub the codec is a
Mimi of the real architecture with seeded random weights, the corpus is a few minutes of
synthetic voices, the eval data are the local fixtures (eval.fixtures, a handful of examples
each) and the TTS judges are random-init. Every stage runs for real (Ray tasks, the extended
Llama 3 tokenizer, a Levanter token cache, Levanter training, the eval suite, the scaling fits),
so the run shows the pipeline works end to end; its numbers say nothing about speech modelling.

Stages: corpus -> Mimi codes -> interleaved documents -> tokenizer -> token cache ->
a mini IsoFLOP sweep (3 budgets x 3 widths) -> evals -> scaling-law fits + plots ->
NLL-vs-downstream correlations -> the experiment log's report.

The mini sweep uses the paper's grid rules (steps.scaling.grid) with tiny numbers so that each
run is a few dozen CPU steps: training budgets 2e11, 4e11 and 8e11 FLOPs; widths 32, 80 and 128
(1-2 layers, one head); sequence length 128; at most 32 steps per run before the batch doubles;
batch down to 1; FLOP tolerance 5% (steps are few, so rounding costs more than the paper's 1%).
Vocabulary: the full extended Llama 3 tokenizer (144,644 ids), so the LM head dominates each
model's FLOPs. Evaluations: validation NLL (the fits' loss) and sBLIMP, ASR and TTS (the
correlations) on every model; the full task list on the middle-budget middle-width model.
After a few dozen steps the smallest model usually wins every budget, so the runs do not bracket
a loss minimum and Approach 2 is undefined: the fits step then says so in its summary and fits
Approach 3 only (steps.scaling.fit). Measured: 8 to 12 minutes (68 steps) from an empty prefix
on 2 CPU cores; a rerun is all cached in under a second.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from eval.fixtures import local_fixture_step  # noqa: E402
from eval.judges import RandomJudgesConfig, make_random_judges_step  # noqa: E402
from eval.tasks import get_task  # noqa: E402
from experiments.defaults import (  # noqa: E402
    RANDOM_JUDGES,
    default_encode,
    default_interleave,
    default_tokenize,
    default_tokenizer,
    isoflop_train,
    local_corpus,
)
from experiments.main import executor_main  # noqa: E402
from pipeline import ExecutorStep, output_path_of, this_output_path, versioned  # noqa: E402
from steps.evaluate import eval_step  # noqa: E402
from steps.scaling.analysis import CorrelationConfig, RunRef, ScalingAnalysisConfig  # noqa: E402
from steps.scaling.analysis import run_correlation, run_scaling_analysis  # noqa: E402
from steps.scaling.grid import IsoFlopGridConfig, isoflop_grid  # noqa: E402
from steps.training.mixtures import mixture  # noqa: E402

DESCRIPTION = ("SODA offline end-to-end PLUMBING RUN, NOT A SPEECH MODEL: random-weight Mimi, shipped synthetic "
               "corpus, full Llama 3 + SODA tokenizer, a mini IsoFLOP sweep of tiny models (3 budgets x 3 widths, "
               "seq 128, a few dozen CPU steps each), every eval task on local fixtures with random-init TTS judges, "
               "scaling fits and correlations; the numbers exercise the pipeline and say nothing about speech")

LOCAL_GRID = IsoFlopGridConfig(budgets=(2e11, 4e11, 8e11), min_width=32, max_width=128, width_step=48,
                               seq_len=128, steps_per_run=32, min_batch=1, flop_tolerance=0.05)
EVERY_MODEL_TASKS = ("validation_nll", "sblimp", "asr", "tts")
ALL_TASKS = ("sblimp", "swuggy", "salmon", "tblimp", "twuggy", "storycloze_spoken", "storycloze_text",
             "hellaswag", "asr", "tts", "validation_nll")


def local_eval(task: str, model: ExecutorStep, data: ExecutorStep, judges: ExecutorStep,
               tokenizer: ExecutorStep) -> ExecutorStep:
    """An eval step with offline settings: random Mimi (as the corpus was encoded), the random judges,
    short generations, the model's HF export scored with torch."""
    return eval_step(task, model, data, mimi_model="random", whisper_normalizer=None, tts_max_new_tokens=96,
                     asr_max_new_tokens=12, backend="hf", batch_size=4, plumbing_run=True, tokenizer=tokenizer,
                     tts_asr_judge=judges / "random-whisper", tts_sim_judge=judges / "random-wavlm-ecapa")


def build_steps() -> list[ExecutorStep]:
    corpus = local_corpus()
    encoded = default_encode("local-emilia-like", corpus, files="*.tar", mimi_model="random", batch_size=4)
    documents = default_interleave("local-emilia-like", encoded)
    tokenizer = default_tokenizer()
    tokenized = default_tokenize("local-emilia-like", documents, tokenizer)
    judges = ExecutorStep(name="judges/random-init", fn=make_random_judges_step,
                          config=RandomJudgesConfig(seed=versioned(0)),
                          description="random-init Whisper and WavLM judges for the offline TTS eval",
                          plumbing=RANDOM_JUDGES)
    fixtures: dict[str, ExecutorStep] = {}

    def fixture(task: str) -> ExecutorStep:
        kind = get_task(task).fixture
        if kind not in fixtures:
            fixtures[kind] = local_fixture_step(kind)
        return fixtures[kind]

    points = isoflop_grid(LOCAL_GRID)
    full_index = len(points) // 2  # the middle budget's middle width gets every task
    mix = mixture("local-emilia-like", {"emilia-en": 1.0})
    runs, evals_all = [], []
    for i, point in enumerate(points):
        model = isoflop_train(point, caches={"emilia-en": tokenized}, tokenizer=tokenizer, mixture=mix, mp="f32",
                              checkpoint_every_steps=100_000, checkpoint_every_minutes=None,
                              steps_per_eval=100_000, plumbing_run=True)
        tasks = ALL_TASKS if i == full_index else EVERY_MODEL_TASKS
        evals = {task: local_eval(task, model, fixture(task), judges, tokenizer) for task in tasks}
        evals_all += evals.values()
        runs.append(RunRef(budget=point.budget, train=output_path_of(model), name=point.name,
                           evals={task: output_path_of(step) for task, step in evals.items()
                                  if task in EVERY_MODEL_TASKS}))
    fits = ExecutorStep(
        name="analysis/local-isoflop-scaling-laws", fn=run_scaling_analysis,
        config=ScalingAnalysisConfig(output_path=this_output_path(), runs=tuple(runs), bootstrap=versioned(100)),
        description="Approach 2 and 3 fits of the fixture validation NLL over the mini sweep (plumbing)",
    )
    correlations = ExecutorStep(
        name="analysis/local-isoflop-correlations", fn=run_correlation,
        config=CorrelationConfig(output_path=this_output_path(), runs=tuple(runs)),
        description="validation NLL vs sBLIMP, ASR/TTS WER and TTS SIM over the mini sweep (plumbing)",
    )
    return [tokenized, *evals_all, fits, correlations]


STEPS = build_steps()
DATA_STEPS = STEPS[:1]  # the data stages only: corpus -> codes -> documents -> tokenizer -> token cache

if __name__ == "__main__":
    # run the module's own copy so step functions pickle by reference (experiments.soda_local), not by value
    from experiments import soda_local

    executor_main(steps=soda_local.STEPS, description=DESCRIPTION, experiment_name="soda_local")
