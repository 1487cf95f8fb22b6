"""SODA as a backbone: fine-tuning for voice-preserving speech-to-speech translation (S2ST).

    python experiments/exp10_s2st_finetune.py --dry-run --prefix gs://<bucket>/soda

The paper fine-tunes SODA, unchanged in architecture, on CVSS-T (targets in the source speaker's
voice) with documents in the order source audio, source text, target text, target audio, and the
loss on the target part only. Stage by stage:
1. Data: the CVSS-T archives (public bucket gs://cvss, as HF `google/cvss` loads them) and the
   Common Voice release 4 sources they name (gated on the hub: accept its terms, set HF_TOKEN, and
   lock its commit with `soda lock-datasets`, see steps/s2st/prepare.py), unpacked into one pairs directory.
2. SFT data: Mimi codes of both sides -> S2ST documents (tokenizer.prompts) -> a Levanter cache
   with answer-only loss weights, in the SODA tokenizer of the pre-training runs (dev -> validation).
3. Fine-tune (steps.training.finetune, its FinetuneRecipe defaults) from each SODA model of
   exp1699_soda_all, whose train steps are imported, not re-declared: the same paths, so
   pre-training runs once for both experiments.
4. Evaluation: ASR-BLEU, speaker similarity and termination rate on CVSS-T test (see below).

Which SODA sizes the paper fine-tuned and with which hyperparameters is not published in our
sources; this script fine-tunes every size with the same project recipe.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from experiments.exp1699_soda_all import models  # noqa: E402
from experiments.soda_data import tokenizer  # noqa: E402
from experiments.main import executor_main  # noqa: E402
from steps.download_presets import raw_step  # noqa: E402
from steps.evaluate import eval_step  # noqa: E402
from steps.s2st.prepare import PAPER_LANGUAGES, common_voice_download, cvss_download, prepare_cvss_step  # noqa: E402
from steps.s2st.sft_data import s2st_sft_data_step  # noqa: E402
from steps.training.finetune import FinetuneRecipe, finetune_step  # noqa: E402

LANGUAGES = PAPER_LANGUAGES  # French, Spanish, German -> English; CVSS has 21 source languages
RECIPE = FinetuneRecipe()  # LR 2e-4, batch 64 x 4096, 5,000 steps, 3% warmup, linear decay
SLICES = {"135m": "v5p-8", "600m": "v5p-8", "1.7b": "v5p-16", "4b": "v5p-32"}

cvss = raw_step("raw/cvss-t-v1.0", cvss_download(LANGUAGES, variant="cvss_t"),
                "CVSS-T v1.0 target speech and text (gs://cvss)")
common_voice = raw_step("raw/common-voice-4", common_voice_download(LANGUAGES),
                        "Common Voice 4 source speech and transcripts")
pairs = prepare_cvss_step("s2st/cvss-t-pairs", cvss, common_voice, LANGUAGES, variant="cvss_t")
sft_data = s2st_sft_data_step("tokenized/cvss-t-s2st", pairs, tokenizer, splits=("train", "dev"),
                              max_document_tokens=4096, use_gpu=True, batch_size=32)

finetuned = {size: finetune_step(f"checkpoints/soda-{size}-s2st", models[size], sft_data, tokenizer, RECIPE,
                                 tpu=slice_type)
             for size, slice_type in SLICES.items()}

# CVSS-T test: ASR-BLEU (Whisper-large-v3 on the generated speech), text BLEU, speaker similarity
# to the source clip, termination rate (eval/tasks/s2st.py).
evals = {size: eval_step("s2st", model, pairs, gpus=1) for size, model in finetuned.items()}

STEPS = [*finetuned.values(), *evals.values()]

if __name__ == "__main__":
    executor_main(steps=STEPS, description="SODA fine-tuned for voice-preserving S2ST on CVSS-T")
