"""A SODA-shaped DAG of ~200 trivial steps, as an experiment script (for executor_bench.py).

Same fan-in and fan-out as the real reproduction: downloads, encode shards, documents, the
tokenizer, tokenized components, 4 SODA models plus 16 IsoFLOP points, 8 evaluations each.
"""

import json
import os
import sys
from dataclasses import dataclass

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pipeline import ExecutorStep, executor_main, this_output_path, versioned  # noqa: E402


@dataclass(frozen=True)
class TouchConfig:
    out: str
    inputs: tuple = ()
    setting: object = None


def touch(config: TouchConfig) -> None:
    os.makedirs(config.out, exist_ok=True)
    with open(os.path.join(config.out, "done.json"), "w") as f:
        json.dump({"inputs": list(config.inputs)}, f)


def step(name, *inputs, setting=None):
    return ExecutorStep(name, touch, TouchConfig(this_output_path(), tuple(inputs), versioned(setting)))


def build() -> list[ExecutorStep]:
    raw = {n: step(f"raw/{n}", setting="rev-0123abc") for n in (
        "yodas2-en", "emilia-en", "emilia-yodas-en", "nemotron-cc-hq", "librispeech-dev", "librispeech-test",
        "sblimp", "swuggy", "salmon", "seed-tts-eval")}
    encoded = [step(f"encoded/{src}-{i}", raw[src], setting={"codebooks": 8, "shard": i})
               for src, n in (("yodas2-en", 8), ("emilia-en", 4), ("emilia-yodas-en", 4)) for i in range(n)]
    docs = [step(f"documents/{src}", *[e for e in encoded if e.name.startswith(f"encoded/{src}-")])
            for src in ("yodas2-en", "emilia-en", "emilia-yodas-en")]
    tokenizer = step("tokenizer/soda-llama3", setting={"base": "llama3", "extra": 16388})
    tokenized = [step(f"tokenized/{d.name.split('/')[1]}", d, tokenizer) for d in docs]
    tokenized.append(step("tokenized/nemotron-cc-hq", raw["nemotron-cc-hq"], tokenizer))
    models = [step(f"checkpoints/soda-{size}", *tokenized, setting={"size": size, "tokens": 500e9})
              for size in ("135m", "600m", "1.7b", "4b")]
    models += [step(f"checkpoints/isoflop-{budget:.0e}-d{width}", *tokenized, setting={"width": width})
               for budget in (3e18, 9e18, 1.8e19, 3e19) for width in (512, 768, 1024, 1280)]
    tasks = ("sblimp", "swuggy", "salmon", "tblimp", "twuggy", "hellaswag", "asr", "tts")
    evals = [step(f"evaluation/{m.name.split('/')[1]}/{t}", m, raw["sblimp"], setting=t) for m in models for t in tasks]
    report = step("analysis/report", *evals)
    return [report]


if __name__ == "__main__":
    executor_main(steps=build(), description="executor benchmark: SODA-shaped DAG of trivial steps")
