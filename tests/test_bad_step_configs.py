"""Bad step configs fail when the experiment declares the step (a dry run), naming the field and what
is allowed, before any work starts (issue 9).

Already covered elsewhere and not repeated here: unknown preset names in `get_preset` and bad
widths (test_presets), mixture weights that do not sum to 1, are negative, NaN or name unknown
sources (test_mixtures), `default_train` with both/neither preset and shape or an option that
would change the model outside the hash (test_experiments), `resolve` at run time
(test_train_step), unknown task names in `get_task` and unknown EvalConfig overrides
(test_eval_tasks). Executor-level bad configs (cycles, names) are in the executor tests.
"""

import math

import pytest

from pipeline import versioned


@pytest.fixture(scope="module")
def data():
    from experiments.soda_data import tokenized, tokenizer

    return tokenized, tokenizer


def _train(data, **kw):
    from experiments.defaults import default_train
    from steps.training.mixtures import FINAL

    tokenized, tokenizer = data
    args = dict(caches=tokenized, tokenizer=tokenizer, mixture=FINAL, batch_size=8, num_steps=10, preset="tiny")
    args.update(kw)
    return default_train("t", **args)


@pytest.mark.parametrize("change,error,match", [
    (dict(preset="soda-7b"), ValueError, r"preset: unknown model preset 'soda-7b'; known: .*soda-135m.*isoflop-d<width>"),
    (dict(preset="isoflop-d0"), ValueError, r"preset: width must be positive, got 0"),
    (dict(batch_size=0), ValueError, r"batch_size must be a positive int, got 0"),
    (dict(batch_size=-4), ValueError, r"batch_size must be a positive int, got -4"),
    (dict(batch_size=8.0), ValueError, r"batch_size must be a positive int, got 8.0"),
    (dict(seq_len=versioned(0)), ValueError, r"seq_len must be a positive int, got 0"),
    (dict(num_steps=None), ValueError, r"exactly one of num_steps and token_budget \(got num_steps=None, token_budget=None\)"),
    (dict(token_budget=10**9), ValueError, r"exactly one of num_steps and token_budget"),
    (dict(num_steps=None, token_budget=-1), ValueError, r"token_budget must be a positive number, got -1"),
    (dict(num_steps=None, token_budget=0), ValueError, r"token_budget must be a positive number, got 0"),
    (dict(num_steps=None, token_budget=math.inf), ValueError, r"token_budget must be a positive number, got inf"),
    (dict(num_steps=0), ValueError, r"num_steps must be a positive number, got 0"),
    (dict(tpu="v5p"), ValueError, r"TPU type 'v5p' is not like 'v5p-64'"),
    (dict(mixture="final"), TypeError, r"mixture must be a steps.training.mixtures.Mixture"),
])
def test_default_train_refuses_bad_arguments_when_declared(data, change, error, match):
    with pytest.raises(error, match=match) as info:
        _train(data, **change)
    assert "default_train('t')" in str(info.value) or "TPU type" in str(info.value)


def test_mixture_sources_without_a_cache_are_refused_when_declared(data):
    from steps.training.mixtures import mixture

    tokenized, _ = data
    only_yodas = {"yodas2-en": tokenized["yodas2-en"]}
    with pytest.raises(ValueError, match=r"mixture 'final' samples \[.*'emilia-en'.*\] but caches has no step"):
        _train(data, caches=only_yodas)
    anneal = mixture("emilia-only", {"emilia-en": 1.0})
    with pytest.raises(ValueError, match=r"anneal_mixture 'emilia-only' samples \['emilia-en'\]"):
        _train(data, caches=only_yodas, mixture=mixture("y", {"yodas2-en": 1.0}), anneal_mixture=anneal)
    _train(data, caches=only_yodas, mixture=mixture("y", {"yodas2-en": 1.0}))  # a mix its caches cover is fine


def test_good_arguments_still_declare(data):
    step = _train(data, num_steps=None, token_budget=versioned(2_000_000), batch_size=versioned(8))
    assert step.name == "checkpoints/t"


@pytest.mark.parametrize("budgets,match", [
    ((), "budgets is empty"),
    ((-3e18,), r"finite number > 0, got \[-3e\+18\]"),
    ((0.0,), r"finite number > 0, got \[0.0\]"),
    ((math.nan,), r"finite number > 0, got \[nan\]"),
    ((math.inf,), r"finite number > 0, got \[inf\]"),
    ((3e18, 3e18), r"lists \[3e\+18\] more than once"),
])
def test_isoflop_grid_bad_budgets(budgets, match):
    from steps.scaling.grid import IsoFlopGridConfig

    with pytest.raises(ValueError, match=match):
        IsoFlopGridConfig(budgets=budgets)


def test_isoflop_grid_budget_with_no_surviving_width():
    from steps.scaling.grid import IsoFlopGridConfig, isoflop_grid

    with pytest.raises(ValueError, match=r"no width survives .* at 1e\+10 \(dropped for .*batch < 8.*\).*3\.0e\+18"):
        isoflop_grid(IsoFlopGridConfig(budgets=(3e18, 1e10)))
    with pytest.raises(ValueError, match=r"at 1e\+30 \(dropped for steps >= 400000\)"):
        isoflop_grid(IsoFlopGridConfig(budgets=(1e30,)))
    with pytest.raises(ValueError, match="finite number > 0"):
        IsoFlopGridConfig(extra_points=((-1.0, 768),))


def test_eval_of_an_unknown_task_fails_when_declared():
    from steps.evaluate import eval_step

    with pytest.raises(KeyError, match=r"unknown eval task 'mmlu'; known: sblimp.*asr.*tts"):
        eval_step("mmlu", "/models/m", "/data/d")


def test_download_of_an_unknown_preset_fails_when_declared():
    from experiments.defaults import download
    from steps.download_presets import PRESETS

    with pytest.raises(ValueError, match=r"unknown download preset 'yodas3-en'; known: .*emilia-en.*yodas2-en"):
        download("yodas3-en", "yodas3-en")
    with pytest.raises(TypeError, match="DownloadConfig or a preset name"):
        download("x", {"hf_dataset_id": "a/b"})
    assert download("yodas2-en", "yodas2-en").config == PRESETS["yodas2-en"]()


@pytest.mark.parametrize("field,value,match", [
    ("num_codebooks", 9, "exactly 8 codebooks"), ("batch_size", 0, "batch_size must be a positive int"),
    ("max_bad_fraction", -0.1, r"max_bad_fraction must be in \[0, 1\]"), ("input_format", "zip", "use one of auto"),
])
def test_default_encode_bad_arguments_fail_when_declared(field, value, match):
    from experiments.defaults import default_encode, local_corpus

    with pytest.raises(ValueError, match=match):
        if field == "num_codebooks":
            from dataclasses import replace

            replace(default_encode("x", local_corpus(), mimi_model="random").config, num_codebooks=versioned(value))
        elif field in ("batch_size",):
            default_encode("x", local_corpus(), mimi_model="random", batch_size=value)
        else:
            from dataclasses import replace

            replace(default_encode("x", local_corpus(), mimi_model="random").config, **{field: value})
