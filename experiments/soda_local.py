"""SODA's recipe, offline, on the shipped corpus: the README's first command.

    python experiments/soda_local.py [--dry-run] [--prefix P]

A PLUMBING RUN, NOT A SPEECH MODEL: with no access to the Hugging Face hub the codec is a
Mimi of the real architecture with seeded random weights, and the corpus is a few minutes of
synthetic voices. Every stage runs for real (Ray tasks, the extended Llama 3 tokenizer, a
Levanter token cache), so the run shows the pipeline works end to end; its numbers say nothing
about speech modelling.

Stages so far: corpus -> Mimi codes -> interleaved documents -> tokenizer -> token cache.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from experiments.defaults import (  # noqa: E402
    default_encode,
    default_interleave,
    default_tokenize,
    default_tokenizer,
    local_corpus,
)
from pipeline import executor_main  # noqa: E402

corpus = local_corpus()
encoded = default_encode("local-emilia-like", corpus, files="*.tar", mimi_model="random", batch_size=4)
documents = default_interleave("local-emilia-like", encoded)
tokenizer = default_tokenizer()
tokenized = default_tokenize("local-emilia-like", documents, tokenizer)

STEPS = [tokenized]

if __name__ == "__main__":
    executor_main(steps=STEPS, description="SODA offline plumbing run on the shipped corpus (random-weight Mimi; "
                                           "not a speech model)")
