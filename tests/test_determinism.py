"""The data pipeline is deterministic: run twice from scratch, encode, interleave and tokenize outputs
are byte-identical (issue 9).

Compared: every file under each step's output. Excluded, and why:
- `.executor_*` (status, lease, info): the executor's own bookkeeping, with start/end times, hosts
  and pids; they describe a run, not its output.
- `{prefix}/experiments/*`: the experiment record and its pages (run times, command line, user).
Normalised before comparing, and why: the prefix itself inside JSON files. Done markers and stats
(`shards/*.done.json`, `stats/part-*.json`, `stats.json`) record each shard's input path, which the
resume logic checks (`steps.sharding.finished_parts`), and the tokenize summary and Levanter ledger
name the cache directory and the tokenizer they were made with; those paths live under the prefix,
so two prefixes differ there and nowhere else. No summary holds a time. (Encoded shard file names
hash the input's last three path parts, not its full path, so they do not depend on the prefix.)

The default test runs the three steps in-process with a small random Mimi, then again with other
batch sizes and torch thread counts, and requires identical bytes. The slow test runs soda_local's
data stages through the executor on Ray, twice from scratch in two prefixes, with 2 and then 1 Ray
worker CPUs.
"""

import os
from pathlib import Path

import pytest

pytest.importorskip("torch")

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO / "steps" / "local_corpus" / "emilia_like"


def tree(root: Path, placeholder: str = "{prefix}") -> dict[str, bytes]:
    """Relative path -> bytes for every file under `root` (exclusions above), with `root` replaced by
    a placeholder inside JSON files."""
    files = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if not path.is_file() or any(part.startswith(".executor_") for part in rel.split("/")):
            continue
        if rel.startswith("experiments/"):
            continue
        data = path.read_bytes()
        if path.suffix == ".json":
            data = data.replace(str(root).encode(), placeholder.encode())
        files[rel] = data
    return files


def assert_same_tree(a: Path, b: Path) -> int:
    ta, tb = tree(a), tree(b)
    assert sorted(ta) == sorted(tb), set(ta) ^ set(tb)
    different = [rel for rel in ta if ta[rel] != tb[rel]]
    assert not different, f"files differ between {a} and {b}: {different}"
    return len(ta)


def run_data_steps(root: Path, tokenizer_dir: str, *, encode_batch: int, torch_threads, tokenize_batch: int):
    from tokenizer.mimi import clear_mimi_cache
    from steps.encode import EncodeConfig, encode_speech
    from steps.interleave import InterleaveConfig, interleave
    from steps.tokenize import TokenizeConfig, tokenize
    from tests.test_mimi import SMALL

    clear_mimi_cache()  # build the random Mimi from its seed again: from scratch
    encode_speech(EncodeConfig(input_paths=(str(CORPUS / "*.tar"),), output_path=str(root / "encoded"),
                               mimi_model="random", device="cpu", batch_size=encode_batch,
                               torch_threads=torch_threads, mimi_config_overrides=SMALL))
    interleave(InterleaveConfig(input_path=str(root / "encoded" / "shards"), output_path=str(root / "documents")))
    tokenize(TokenizeConfig(input_path=str(root / "documents" / "documents"), tokenizer=tokenizer_dir,
                            output_path=str(root / "tokenized"), batch_size=tokenize_batch))


def test_data_steps_are_byte_identical_across_runs_batches_and_threads(tmp_path, llama3_dir):
    import torch

    threads = torch.get_num_threads()
    try:
        run_data_steps(tmp_path / "a", llama3_dir, encode_batch=8, torch_threads=None, tokenize_batch=128)
        run_data_steps(tmp_path / "b", llama3_dir, encode_batch=3, torch_threads=1, tokenize_batch=5)
    finally:
        torch.set_num_threads(threads)
    n = assert_same_tree(tmp_path / "a", tmp_path / "b")
    assert n >= 12  # 2 encoded shards + markers, stats, summaries, 2 document parts, the cache parts
    files = tree(tmp_path / "a")
    assert any(rel.startswith("tokenized/train/part-00001/") for rel in files)
    for summary in ("encoded/summary.json", "documents/summary.json"):
        assert b"{prefix}" not in files[summary]  # these summaries hold no prefix path (no times either: the
        # two runs above are byte-identical) ...
    assert b"{prefix}/tokenized/train" in files["tokenized/summary.json"]  # ... this one names its cache


@pytest.mark.slow
def test_soda_local_data_stages_twice_from_scratch_on_ray(tmp_path):
    """soda_local's DATA_STEPS (full-size random Mimi, Llama 3 tokenizer) through the executor on
    Ray, twice from scratch in two prefixes: first with 2 worker CPUs, then with 1."""
    import ray

    from experiments import soda_local
    from pipeline import Executor

    outputs = {}
    for name, cpus in (("a", 2), ("b", 1)):
        ray.init(address="local", num_cpus=cpus, include_dashboard=False, configure_logging=False,
                 runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}})
        try:
            prefix = tmp_path / name
            executor = Executor(str(prefix), experiment_name="soda_local")
            result = executor.run(soda_local.DATA_STEPS)
            assert len(result.names("succeeded")) == 5
            outputs[name] = prefix
        finally:
            ray.shutdown()
    n = assert_same_tree(outputs["a"], outputs["b"])
    assert n >= 20
    names = {rel.split("/")[0] + "/" + rel.split("/")[1].rsplit("-", 1)[0] for rel in tree(outputs["a"])}
    assert {"encoded/local-emilia-like", "documents/local-emilia-like", "tokenized/local-emilia-like"} <= names
    assert os.path.isdir(outputs["a"] / "experiments")  # excluded from the comparison, but written
