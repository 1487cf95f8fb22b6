"""YODAS2 from raw audio, beside the released pre-encoded documents (issue 20).

    python experiments/exp20_yodas2_raw.py --dry-run --prefix gs://<bucket>/soda

The paper's runs trained on SODA's released, already Mimi-encoded YODAS2 documents. This script
builds the same documents from YODAS2's raw long-form videos -- the path anyone needs for another
language, another codec setting, or a check of the released tokens -- and compares the two:

1. raw: `espnet/yodas2` English archives (`data/en*/audio/*.tar.gz` with the `text/` and `duration/`
   files) -> each video cut at its published utterance times, streamed in bounded memory, Mimi-encoded
   (at most 60 s at once, as SODA's preparation) -> one document per video in both formats -> tokens;
2. released: the pre-encoded YODAS2-en documents (experiments/soda_data.py) -> tokens;
3. the comparison, recording by recording: the same utterances, cut points, order, format and
   BOS/EOS (`skeleton_equal`), and the share of equal audio tokens (the released codes were computed
   on other hardware: the codec's agreement).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from experiments.defaults import default_encode, default_interleave, default_tokenize, download  # noqa: E402
from experiments.main import executor_main  # noqa: E402
from experiments.soda_data import documents as released_documents  # noqa: E402
from experiments.soda_data import tokenized as released_tokenized  # noqa: E402
from experiments.soda_data import tokenizer  # noqa: E402
from pipeline import ExecutorStep, output_path_of, this_output_path  # noqa: E402
from steps import download_presets as presets  # noqa: E402
from steps.compare_documents import CompareDocumentsConfig, compare_documents  # noqa: E402

# 1. raw YODAS2 English: download, encode (one Ray task per archive, on a GPU), documents, tokens
yodas2_raw = download("yodas2-en", presets.yodas2_en_raw())
encoded = default_encode("yodas2-en-raw", yodas2_raw, files="data/en*/audio/*.tar.gz", batch_size=64,
                         use_gpu=True, max_chunk_seconds=60.0)
raw_documents = default_interleave("yodas2-en-raw", encoded)
raw_tokenized = default_tokenize("yodas2-en-raw", raw_documents, tokenizer)

# 3. recording by recording against the released documents
comparison = ExecutorStep(
    name="analysis/yodas2-raw-vs-released",
    fn=compare_documents,
    config=CompareDocumentsConfig(ours=output_path_of(raw_documents, "documents"),
                                  released=output_path_of(released_documents["yodas2-en"], "documents"),
                                  output_path=this_output_path()),
    description="YODAS2-en documents from raw audio vs SODA's released pre-encoded ones",
)

STEPS = [raw_tokenized, released_tokenized["yodas2-en"], comparison]

if __name__ == "__main__":
    executor_main(steps=STEPS, description="YODAS2 from raw audio beside the released pre-encoded documents")
