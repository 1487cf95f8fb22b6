"""The SODA IsoFLOP grid (shared/reference.md section 6): which models each budget trains.

Budgets. The paper labels its seven budgets in TRAINING FLOPs (3e18 ... 3e20); the original sweep
code (Marin's isoflop script, which SODA adapted) labelled the same runs in FORWARD FLOPs
(1e18 ... 1e20) and did all of its arithmetic in forward FLOPs: Levanter's
`lm_flops_per_token` x tokens. We keep that arithmetic and only convert the label:
forward budget = training budget / 3. Every rule below uses the forward budget and forward
FLOPs, so the unit cancels in batch and steps exactly as in the original.

Why forward: the anchor. At the paper's 3e18 the near-optimal model is width 768 (8 layers,
~298M total params) with ~2.11B tokens. Width 768 costs 4.745e8 forward FLOPs per token, and
1e18 / 4.745e8 = 2.108e9 tokens. Mixing units (a 3e18 budget against forward FLOPs) would
give 6.3B tokens and a 4x larger batch; so would treating 1e18 as a training budget in reverse.

Rules, per forward budget F and width h (h from `min_width` to `max_width` in steps of
`width_step`, or `wide_width_step` when F > 9e18, as Python's range does, so the wide grid
is 128, 384, ..., 1920):
- shape: ffn 4h; layers round(h / (64 + 4 log2 h - 7)); heads = kv heads = max(1, h // 128);
  head_dim = h / heads (must be whole); seq 4096; vocab 144,644; untied; QK-norm.
- batch B: the next power of two >= F / (forward FLOPs of one sequence x 2^16 steps);
  lr = 0.33 sqrt(B) / h, halving B while lr > 0.01; beta2 = 0.98^(B / 128).
- steps = round(F / forward FLOPs of B sequences); tokens = B x steps x 4096.
- dropped when B < 8, steps >= 400,000, or |achieved - F| / F > 1%.

The paper trained 64 models; this grid gives 59 (7, 12, 14, 7, 7, 6, 6 per budget). The
paper says a few hand-added wide points near the largest budgets complete the 64, and its
largest model has 4.2B parameters (width 2816 here: 27 layers, 4.24B total); which widths
at which budgets was not published. `extra_points` is the hook: (budget label, width)
pairs computed with the same rules and filters, marked `hand_added`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from collections import Counter
from dataclasses import dataclass
from typing import Iterable, Optional

from steps.training.accounting import (
    SODA_SEQ_LEN,
    SODA_VOCAB_SIZE,
    ModelShape,
    forward_flops_per_token,
    params_nonembedding,
    params_total,
)
from pipeline.cli_checks import first_problem, number_problem

TRAINING_PER_FORWARD = 3.0
PAPER_TRAINING_BUDGETS = (3e18, 9e18, 1.8e19, 3e19, 9e19, 1.8e20, 3e20)
PAPER_FORWARD_BUDGETS = tuple(b / TRAINING_PER_FORWARD for b in PAPER_TRAINING_BUDGETS)
PAPER_RUN_COUNT = 64


@dataclass(frozen=True)
class IsoFlopGridConfig:
    """The sweep's rules; defaults are the SODA paper's."""

    budgets: tuple[float, ...] = PAPER_TRAINING_BUDGETS
    forward_labels: bool = False  # True: `budgets` are forward FLOPs (the original code's labels)
    min_width: int = 128
    max_width: int = 2048
    width_step: int = 128
    wide_width_step: int = 256
    wide_step_above_forward: float = 9e18
    mlp_ratio: int = 4
    head_width: int = 128  # hidden units per head
    layer_base: float = 64.0
    layer_offset: float = 7.0  # log2(min_width)
    seq_len: int = SODA_SEQ_LEN
    vocab_size: int = SODA_VOCAB_SIZE
    steps_per_run: int = 2**16
    lr_constant: float = 0.33
    max_lr: float = 0.01
    min_batch: int = 8
    max_steps: int = 400_000
    flop_tolerance: float = 0.01
    beta2_base: float = 0.98
    beta2_batch: float = 128.0
    extra_points: tuple[tuple[float, int], ...] = ()  # (budget label, width), hand-added

    def __post_init__(self) -> None:
        budgets = [b for b in self.budgets] + [b for b, _ in self.extra_points]
        if not self.budgets:
            raise ValueError("IsoFlopGridConfig.budgets is empty; give at least one FLOP budget, e.g. (3e18,)")
        bad = [b for b in budgets if not (isinstance(b, (int, float)) and math.isfinite(b) and b > 0)]
        if bad:
            raise ValueError(f"IsoFlopGridConfig.budgets: every budget must be a finite number > 0, got {bad}")
        repeated = sorted({b for b in self.budgets if list(self.budgets).count(b) > 1})
        if repeated:
            raise ValueError(f"IsoFlopGridConfig.budgets lists {repeated} more than once; each budget once")
        if not 0 < self.min_width <= self.max_width:
            raise ValueError(f"IsoFlopGridConfig: need 0 < min_width <= max_width, got {self.min_width}, {self.max_width}")

    def forward_budget(self, budget: float) -> float:
        return budget if self.forward_labels else budget / TRAINING_PER_FORWARD

    def widths(self, budget: float) -> range:
        wide = self.forward_budget(budget) > self.wide_step_above_forward
        return range(self.min_width, self.max_width + 1, self.wide_width_step if wide else self.width_step)


@dataclass(frozen=True)
class GridPoint:
    """One model of the sweep with its training recipe and its cost."""

    budget: float  # the label as given
    budget_kind: str  # "training" or "forward"
    training_budget: float
    forward_budget: float
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    seq_len: int
    vocab_size: int
    batch: int
    steps: int
    lr: float
    beta2: float
    params_total: int
    params_nonembedding: int
    tokens: int
    achieved_forward_flops: float
    achieved_training_flops: float
    flop_error: float  # (achieved - budget) / budget
    hand_added: bool = False

    @property
    def shape(self) -> ModelShape:
        return ModelShape(hidden=self.hidden, intermediate=self.intermediate, layers=self.layers,
                          heads=self.heads, kv_heads=self.kv_heads, head_dim=self.head_dim,
                          seq_len=self.seq_len, vocab_size=self.vocab_size)

    @property
    def name(self) -> str:
        return f"isoflop-{self.training_budget:.1e}-d{self.hidden}-L{self.layers}-B{self.batch}"

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Candidate:
    """A width considered at a budget, with the reasons it was dropped (empty when kept)."""

    point: GridPoint
    dropped: tuple[str, ...]


def shape_for_width(hidden: int, cfg: IsoFlopGridConfig = IsoFlopGridConfig()) -> ModelShape:
    """The sweep's model of width `hidden`."""
    if hidden <= 0:
        raise ValueError(f"width must be positive, got {hidden}")
    layers = round(hidden / (cfg.layer_base + 4 * math.log2(hidden) - cfg.layer_offset))
    heads = max(1, hidden // cfg.head_width)
    if hidden % heads:
        raise ValueError(f"width {hidden}: {heads} heads do not divide it; use a multiple of {cfg.head_width}")
    return ModelShape(hidden=hidden, intermediate=cfg.mlp_ratio * hidden, layers=max(1, layers),
                      heads=heads, kv_heads=heads, head_dim=hidden // heads,
                      seq_len=cfg.seq_len, vocab_size=cfg.vocab_size)


def _next_power_of_two(x: float) -> int:
    return 1 if x <= 1 else 2 ** math.ceil(math.log2(x))


def candidate(budget: float, hidden: int, cfg: IsoFlopGridConfig = IsoFlopGridConfig(),
              hand_added: bool = False) -> Candidate:
    """Apply the sweep's rules to width `hidden` at budget label `budget`."""
    if not budget > 0:
        raise ValueError(f"budget must be positive, got {budget}")
    shape = shape_for_width(hidden, cfg)
    fwd_budget = cfg.forward_budget(budget)
    seq_flops = forward_flops_per_token(shape) * cfg.seq_len
    batch = _next_power_of_two(fwd_budget / (seq_flops * cfg.steps_per_run))
    lr = cfg.lr_constant * math.sqrt(batch) / hidden
    while lr > cfg.max_lr and batch > 1:
        batch //= 2
        lr = cfg.lr_constant * math.sqrt(batch) / hidden
    steps = max(1, round(fwd_budget / (seq_flops * batch)))
    achieved = seq_flops * batch * steps
    error = (achieved - fwd_budget) / fwd_budget
    dropped = []
    if batch < cfg.min_batch:
        dropped.append(f"batch {batch} < {cfg.min_batch}")
    if steps >= cfg.max_steps:
        dropped.append(f"steps {steps} >= {cfg.max_steps}")
    if abs(error) > cfg.flop_tolerance:
        dropped.append(f"FLOPs off by {error:+.2%} (> {cfg.flop_tolerance:.0%})")
    point = GridPoint(
        budget=budget, budget_kind="forward" if cfg.forward_labels else "training",
        training_budget=fwd_budget * TRAINING_PER_FORWARD, forward_budget=fwd_budget,
        hidden=shape.hidden, intermediate=shape.intermediate, layers=shape.layers,
        heads=shape.heads, kv_heads=shape.kv_heads, head_dim=shape.head_dim,
        seq_len=shape.seq_len, vocab_size=shape.vocab_size,
        batch=batch, steps=steps, lr=lr, beta2=cfg.beta2_base ** (batch / cfg.beta2_batch),
        params_total=params_total(shape), params_nonembedding=params_nonembedding(shape),
        tokens=batch * steps * cfg.seq_len,
        achieved_forward_flops=achieved, achieved_training_flops=achieved * TRAINING_PER_FORWARD,
        flop_error=error, hand_added=hand_added,
    )
    return Candidate(point, tuple(dropped))


def grid_candidates(cfg: IsoFlopGridConfig = IsoFlopGridConfig()) -> list[Candidate]:
    """Every width considered, kept or dropped, budget by budget (hand-added ones last)."""
    out = [candidate(b, h, cfg) for b in cfg.budgets for h in cfg.widths(b)]
    return out + [candidate(b, h, cfg, hand_added=True) for b, h in cfg.extra_points]


def isoflop_grid(cfg: IsoFlopGridConfig = IsoFlopGridConfig()) -> list[GridPoint]:
    """The models the sweep trains. A budget for which every width is dropped is an error (an
    IsoFLOP curve needs points), naming the budget and why its widths were dropped."""
    candidates = grid_candidates(cfg)
    kept = [c.point for c in candidates if not c.dropped]
    empty = [b for b in cfg.budgets if not any(p.budget == b for p in kept)]
    if empty:
        label = {"batch": f"batch < {cfg.min_batch}", "steps": f"steps >= {cfg.max_steps}",
                 "FLOPs": f"FLOPs off by > {cfg.flop_tolerance:.0%}"}
        why = {b: sorted({label.get(r.split(" ")[0], r) for c in candidates if c.point.budget == b
                          for r in c.dropped}) for b in empty}
        raise ValueError(
            "IsoFlopGridConfig.budgets: no width survives the sweep's filters at "
            + "; ".join(f"{b:.3g} (dropped for {', '.join(why[b])})" for b in empty)
            + f"; widths {cfg.min_width}..{cfg.max_width} need budgets with batch >= {cfg.min_batch} and "
            f"steps < {cfg.max_steps} (the paper's are {', '.join(f'{b:.1e}' for b in PAPER_TRAINING_BUDGETS)})")
    return kept


def count_by_budget(points: Iterable[GridPoint]) -> dict[float, int]:
    return dict(Counter(p.budget for p in points))


def closest_by_tokens(points: Iterable[GridPoint], budget: float, tokens: float) -> Optional[GridPoint]:
    """The point at `budget` whose token count is nearest `tokens` (log distance).

    This is how the paper's anchor is located: each width appears once per budget, and the
    one trained on ~2.11B tokens at 3e18 is width 768 (its neighbours: 2.85B and 1.60B).
    """
    at_budget = [p for p in points if math.isclose(p.budget, budget, rel_tol=1e-9)]
    return min(at_budget, key=lambda p: abs(math.log(p.tokens / tokens)), default=None)


# ---------------------------------------------------------------- CLI

_TABLE = [("budget", "{:.1e}"), ("hidden", "{}"), ("layers", "{}"), ("heads", "{}"), ("batch", "{}"),
          ("steps", "{}"), ("lr", "{:.2e}"), ("beta2", "{:.4f}"), ("params_total", "{:,}"),
          ("params_nonembedding", "{:,}"), ("tokens", "{:,}"), ("flop_error", "{:+.3%}")]


def _parse_extra(text: str) -> tuple[float, int]:
    try:
        budget, width = text.split(":")
        return float(budget), int(width)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--extra takes BUDGET:WIDTH such as 3e20:2816, got {text!r}")


def cli_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="soda isoflop-grid", description=__doc__.split("\n\n")[0])
    parser.add_argument("--budgets", type=float, nargs="+", default=None,
                        help="budgets (default: the paper's seven, 3e18 .. 3e20 training FLOPs)")
    parser.add_argument("--forward-labels", action="store_true",
                        help="budgets are forward FLOPs (1e18 .. 1e20), as the original sweep code labelled them")
    parser.add_argument("--extra", type=_parse_extra, nargs="*", default=[], metavar="BUDGET:WIDTH",
                        help="hand-added points, computed with the same rules and filters")
    parser.add_argument("--show-dropped", action="store_true", help="also list dropped widths and why")
    parser.add_argument("--json", action="store_true", help="one JSON object per line per point")
    args = parser.parse_args(argv)
    budgets = tuple(args.budgets) if args.budgets else (
        PAPER_FORWARD_BUDGETS if args.forward_labels else PAPER_TRAINING_BUDGETS)

    problem = first_problem(*(number_problem("--budgets", b, above=0) for b in budgets),
                            *(number_problem("--extra budget", b, above=0) for b, _ in args.extra),
                            *(number_problem("--extra width", w, minimum=1) for _, w in args.extra))
    if problem is None:
        try:
            cfg = IsoFlopGridConfig(budgets=budgets, forward_labels=args.forward_labels,
                                    extra_points=tuple(args.extra))
            candidates = grid_candidates(cfg)
        except ValueError as exc:
            problem = str(exc)
    if problem is not None:
        print(f"soda isoflop-grid: {' '.join(problem.split())}", file=sys.stderr)
        return 2
    shown = [c for c in candidates if args.show_dropped or not c.dropped]
    if args.json:
        for c in shown:
            row = c.point.as_dict()
            if args.show_dropped:
                row["dropped"] = list(c.dropped)
            print(json.dumps(row))
        return 0
    cols = [name for name, _ in _TABLE] + (["dropped"] if args.show_dropped else [])
    rows = [[fmt.format(getattr(c.point, name)) for name, fmt in _TABLE]
            + (["; ".join(c.dropped) or "-"] if args.show_dropped else []) for c in shown]
    widths = [max(len(col), *(len(r[i]) for r in rows)) if rows else len(col) for i, col in enumerate(cols)]
    print("  ".join(col.rjust(w) for col, w in zip(cols, widths)))
    for r in rows:
        print("  ".join(v.rjust(w) for v, w in zip(r, widths)))
    kept = [c.point for c in candidates if not c.dropped]
    counts = ", ".join(f"{b:.1e}: {n}" for b, n in count_by_budget(kept).items())
    kind = "forward" if args.forward_labels else "training"
    print(f"\n{len(kept)} points ({kind}-FLOP labels; per budget {counts})")
    return 0
