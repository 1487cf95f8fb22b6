"""The IsoFLOP grid: the paper's anchor, every rule and filter, the CLI."""

from __future__ import annotations

import json
import math

import pytest

from steps.scaling.grid import (
    PAPER_FORWARD_BUDGETS,
    PAPER_TRAINING_BUDGETS,
    IsoFlopGridConfig,
    candidate,
    cli_main,
    closest_by_tokens,
    count_by_budget,
    grid_candidates,
    isoflop_grid,
    shape_for_width,
)
from steps.training.accounting import forward_flops_per_token, params_total

# Five hand-added points for the tests of the hook (the paper's own five were not published).
EXTRA = ((1.8e20, 2048), (1.8e20, 2304), (3e20, 2304), (3e20, 2560), (3e20, 2816))


@pytest.fixture(scope="module")
def grid():
    return isoflop_grid()


def test_anchor_at_paper_3e18(grid):
    # The paper: near-optimal at 3e18 is width 768, 8 layers, ~298M params, ~2.11B tokens.
    # The grid has one point per width, so "near-optimal" is the one whose tokens match.
    p = closest_by_tokens(grid, 3e18, 2.11e9)
    assert (p.hidden, p.layers, p.heads, p.head_dim) == (768, 8, 6, 128)
    assert p.params_total == pytest.approx(298e6, rel=0.005)
    assert p.tokens == pytest.approx(2.11e9, rel=0.005)
    assert p.batch == 8 and p.steps == 64_326
    assert p.forward_budget == pytest.approx(1e18) and p.training_budget == pytest.approx(3e18)
    # Unambiguous: the neighbours' token counts are >= 25% away.
    others = [q.tokens for q in grid if q.budget == 3e18 and q is not p]
    assert min(abs(math.log(t / p.tokens)) for t in others) > math.log(1.25)


def test_forward_labels_give_the_same_grid(grid):
    fwd = isoflop_grid(IsoFlopGridConfig(budgets=PAPER_FORWARD_BUDGETS, forward_labels=True))
    strip = lambda p: {k: v for k, v in p.as_dict().items() if k not in ("budget", "budget_kind",
                                                                         "training_budget", "forward_budget")}
    assert [strip(p) for p in fwd] == [strip(p) for p in grid]
    assert {p.budget_kind for p in fwd} == {"forward"} and {p.budget_kind for p in grid} == {"training"}


def test_wrong_unit_misses_the_anchor():
    # Reading the paper's 3e18 as a forward budget triples the tokens: that is not the paper's grid.
    wrong = candidate(3e18, 768, IsoFlopGridConfig(forward_labels=True)).point
    assert wrong.tokens == pytest.approx(3 * 2.108e9, rel=0.01)


def test_counts_per_budget_and_hand_added_points(grid):
    assert list(count_by_budget(grid).values()) == [7, 12, 14, 7, 7, 6, 6]
    assert len(grid) == 59
    full = isoflop_grid(IsoFlopGridConfig(extra_points=EXTRA))
    assert len(full) == 64
    added = [p for p in full if p.hand_added]
    assert [(p.budget, p.hidden) for p in added] == list(EXTRA)
    widest = max(full, key=lambda p: p.params_total)
    assert widest.hidden == 2816 and widest.params_total == pytest.approx(4.2e9, rel=0.02)  # paper: up to 4.2B
    # Hand-added points face the same filters: 2816 at 3e18 needs batch < 8.
    assert isoflop_grid(IsoFlopGridConfig(budgets=(3e18,), extra_points=((3e18, 2816),)))[-1].hidden != 2816


def test_smallest_model_is_the_papers_77M(grid):
    assert min(p.params_total for p in grid) == pytest.approx(77e6, rel=0.01)


def test_widths_step_128_then_256():
    cfg = IsoFlopGridConfig()
    assert list(cfg.widths(9e18)) == list(range(128, 2049, 128))  # 3e18 forward
    assert list(cfg.widths(3e19)) == list(range(128, 2049, 256))  # 1e19 forward > 9e18


def test_shape_rules():
    for h in range(128, 2049, 128):
        s = shape_for_width(h)
        assert s.intermediate == 4 * h
        assert s.layers == round(h / (64 + 4 * math.log2(h) - 7))
        assert s.heads == s.kv_heads == max(1, h // 128)
        assert s.head_dim * s.heads == h and s.head_dim == 128
        assert (s.seq_len, s.vocab_size, s.tied_embeddings, s.qk_norm) == (4096, 144_644, False, True)
    assert shape_for_width(2048).layers == 20 and shape_for_width(768).layers == 8


def test_every_kept_point_obeys_every_rule(grid):
    for p in grid:
        seq_flops = forward_flops_per_token(p.shape) * 4096
        exact = p.forward_budget / (seq_flops * 2**16)
        first = 2 ** math.ceil(math.log2(exact)) if exact > 1 else 1
        assert p.batch & (p.batch - 1) == 0 and p.batch <= first
        # halved only while the LR was above 0.01
        assert p.batch == first or 0.33 * math.sqrt(2 * p.batch) / p.hidden > 0.01
        assert p.lr == pytest.approx(0.33 * math.sqrt(p.batch) / p.hidden) and p.lr <= 0.01
        assert p.beta2 == pytest.approx(0.98 ** (p.batch / 128))
        assert p.steps == round(p.forward_budget / (seq_flops * p.batch))
        assert p.tokens == p.batch * p.steps * 4096
        assert p.achieved_forward_flops == pytest.approx(seq_flops * p.batch * p.steps)
        assert p.achieved_training_flops == pytest.approx(3 * p.achieved_forward_flops)
        assert p.batch >= 8 and p.steps < 400_000 and abs(p.flop_error) <= 0.01
        assert p.params_total == params_total(p.shape)


def test_dropped_points_have_true_reasons():
    by_key = {(c.point.budget, c.point.hidden): c for c in grid_candidates()}
    assert by_key[(3e18, 128)].dropped == ("steps 721519 >= 400000",)
    assert by_key[(3e18, 1152)].dropped == ("batch 4 < 8",)
    assert by_key[(1.8e19, 256)].dropped == ("steps 492188 >= 400000",)
    for c in by_key.values():
        p = c.point
        assert bool(c.dropped) == (p.batch < 8 or p.steps >= 400_000 or abs(p.flop_error) > 0.01)


def test_flop_tolerance_filter():
    # A budget of 1.4 sequences of width 256: one step misses it by 29%.
    seq = forward_flops_per_token(shape_for_width(256)) * 4096
    c = candidate(3 * 1.4 * seq, 256, IsoFlopGridConfig(min_batch=1))
    assert c.point.steps == 1 and c.point.flop_error == pytest.approx(1 / 1.4 - 1)
    assert c.dropped == ("FLOPs off by -28.57% (> 1%)",)


def test_cli_json(capsys):
    assert cli_main(["--budgets", "3e18", "9e18", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 19
    keys = {"budget", "hidden", "layers", "heads", "batch", "steps", "lr", "beta2",
            "params_total", "params_nonembedding", "tokens"}
    assert all(keys <= set(r) for r in rows)
    anchor = [r for r in rows if r["budget"] == 3e18 and r["hidden"] == 768][0]
    assert anchor["tokens"] == 2_107_834_368 and anchor["layers"] == 8


def test_cli_forward_labels_and_extra(capsys):
    assert cli_main(["--budgets", "1e20", "--forward-labels", "--extra", "1e20:2816", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["hidden"] for r in rows] == [640, 896, 1152, 1408, 1664, 1920, 2816]
    assert rows[-1]["hand_added"] and all(r["budget_kind"] == "forward" for r in rows)


def test_cli_table(capsys):
    assert cli_main([]) == 0
    out = capsys.readouterr().out
    assert "59 points (training-FLOP labels" in out and "3.0e+18: 7" in out
    assert cli_main(["--budgets", "3e18", "--show-dropped"]) == 0
    assert "batch 4 < 8" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli_main(["--extra", "3e20"])
    assert PAPER_TRAINING_BUDGETS[0] == 3e18
