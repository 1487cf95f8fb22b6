"""The paper's optimizer recipes (shared/reference.md sections 5 and 6) as frozen dataclasses.

Both recipes are Levanter's `CautiousConfig` (registered as `cautious` in levanter.optim) with
`adamc_weight_decay=True`: the decay applied at step t is wd * lr_t / lr_max, times lr_t as
optax's decoupled decay does, i.e. AdamC (Defazio 2025) keeps wd / lr constant over the schedule.
The schedule is WSD: linear warmup over 10% of steps, constant, then linear decay to 0 over the
last 20% (`lr_schedule="linear"`, `decay=0.2`, `min_lr_ratio=0`).

- `SodaRecipe`: the final SODA runs. beta1 = beta2 = 0.98, eps 1e-16, wd 0.033, clip 1,
  z-loss 1e-4, LR = 3e-3 * sqrt(B / 256) * sqrt(1024 / width) (the 135M used width 1024).
- `IsoFlopRecipe`: the scaling sweep. beta1 0.95, wd 0.1, eps 1e-15, no z-loss; LR and beta2
  come from the grid point (steps.scaling.grid: lr = 0.33 sqrt(B) / h, beta2 = 0.98^(B/128)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional


def soda_learning_rate(batch_size: int, width: int, base_lr: float = 3e-3, base_batch: int = 256,
                       base_width: int = 1024) -> float:
    """LR = base_lr * sqrt(B / base_batch) * sqrt(base_width / width)."""
    if batch_size <= 0 or width <= 0:
        raise ValueError(f"batch size and width must be positive, got B={batch_size}, width={width}")
    return base_lr * math.sqrt(batch_size / base_batch) * math.sqrt(base_width / width)


@dataclass(frozen=True)
class SodaRecipe:
    """The final SODA runs' optimizer. `learning_rate=None`: from the LR formula."""

    learning_rate: Optional[float] = None
    base_lr: float = 3e-3
    weight_decay: float = 0.033
    beta1: float = 0.98
    beta2: float = 0.98
    epsilon: float = 1e-16
    warmup: float = 0.1
    decay: float = 0.2
    min_lr_ratio: float = 0.0
    max_grad_norm: float = 1.0
    z_loss_weight: float = 1e-4
    adamc_weight_decay: bool = True

    def lr(self, batch_size: int, width: int) -> float:
        if self.learning_rate is not None:
            return self.learning_rate
        return soda_learning_rate(batch_size, width, self.base_lr)


@dataclass(frozen=True)
class IsoFlopRecipe:
    """The IsoFLOP sweep's optimizer; `learning_rate` and `beta2` come from the grid point."""

    learning_rate: float
    beta2: float
    weight_decay: float = 0.1
    beta1: float = 0.95
    epsilon: float = 1e-15
    warmup: float = 0.1
    decay: float = 0.2
    min_lr_ratio: float = 0.0
    max_grad_norm: float = 1.0
    z_loss_weight: float = 0.0
    adamc_weight_decay: bool = True

    @classmethod
    def for_point(cls, point) -> "IsoFlopRecipe":
        """The recipe for a `steps.scaling.grid.GridPoint`."""
        return cls(learning_rate=point.lr, beta2=point.beta2)

    def lr(self, batch_size: int, width: int) -> float:
        return self.learning_rate


Recipe = SodaRecipe | IsoFlopRecipe


def levanter_optimizer(recipe: Recipe, batch_size: int, width: int):
    """Levanter's `CautiousConfig` for `recipe` at batch size `batch_size` and model width `width`."""
    from levanter.optim import CautiousConfig

    return CautiousConfig(
        learning_rate=recipe.lr(batch_size, width),
        weight_decay=recipe.weight_decay,
        beta1=recipe.beta1,
        beta2=recipe.beta2,
        epsilon=recipe.epsilon,
        max_grad_norm=recipe.max_grad_norm,
        warmup=recipe.warmup,
        decay=recipe.decay,
        min_lr_ratio=recipe.min_lr_ratio,
        lr_schedule="linear",
        adamc_weight_decay=recipe.adamc_weight_decay,
    )
