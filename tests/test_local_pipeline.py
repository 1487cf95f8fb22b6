"""The offline experiment's data stages through the executor on Ray, end to end.

corpus -> Mimi codes -> documents -> tokenizer -> Levanter cache, then: the cache's audio ids
map back to exactly the codes the encoder wrote, text spans are what the HF tokenizer gives,
and a rerun is all cached.
"""

import glob
import os

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline import Executor
from tokenizer.audio import chars_to_codes, ids_to_codes

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def ray_cluster():
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, configure_logging=False,
             runtime_env={"env_vars": {"PYTHONPATH": REPO}})
    yield
    ray.shutdown()


def test_local_data_stages_on_ray(ray_cluster, tmp_path):
    from levanter.data.text import DatasetComponent, LmDataConfig
    from transformers import AutoTokenizer

    from experiments import soda_local

    prefix = str(tmp_path / "prefix")
    executor = Executor(prefix, experiment_name="soda_local")
    result = executor.run(soda_local.DATA_STEPS)
    assert len(result.names("succeeded")) == 5
    paths = {step.name: executor.output_paths[step] for step in executor.steps}

    encoded = pq.read_table(glob.glob(os.path.join(paths["encoded/local-emilia-like"], "shards", "*.parquet"))).to_pylist()
    assert len(encoded) >= 30 and all(len(r["audio"]) % 8 == 0 for r in encoded)
    first = min(encoded, key=lambda r: (r["recording_id"], r["order"]))

    tok_dir = paths["tokenizer/soda-llama3"]
    cache = LmDataConfig(tokenizer=tok_dir, auto_build_caches=False, shuffle=False,
                         components={"soda": DatasetComponent(cache_dir=paths["tokenized/local-emilia-like"],
                                                              source=None)}).build_caches("train")["soda"]
    documents = pq.read_table(sorted(glob.glob(os.path.join(paths["documents/local-emilia-like"], "documents", "*.parquet"))))
    assert len(cache) == documents.num_rows == 2 * len({r["recording_id"] for r in encoded})

    hf = AutoTokenizer.from_pretrained(tok_dir)
    texts = documents.column("text").to_pylist()
    rows = cache.get_batch_sync(list(range(len(cache))))
    for text, row in zip(texts, rows):
        assert row["input_ids"].tolist() == hf(text, add_special_tokens=False)["input_ids"]

    # The first utterance of the first recording, found in its text-first document by its codes.
    ids = np.concatenate([r["input_ids"] for r in rows])
    audio_start, audio_end = hf.convert_tokens_to_ids(["<|audio_start|>", "<|audio_end|>"])
    starts = np.flatnonzero(ids == audio_start)
    spans = [ids[s + 1: s + 1 + np.argmax(ids[s + 1:] == audio_end)] for s in starts]
    want = chars_to_codes(first["audio"])
    assert any(span.size == want.size and np.array_equal(ids_to_codes(span, 128260), want) for span in spans)

    again = Executor(prefix, experiment_name="soda_local").run(soda_local.DATA_STEPS)
    assert len(again.names("cached")) == 5
