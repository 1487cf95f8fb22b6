"""The paper's recipes map onto Levanter's Cautious optimizer with AdamC decay and a WSD schedule;
one optimizer step on a 2-parameter problem equals a hand computation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from steps.training.optimizer import IsoFlopRecipe, SodaRecipe, levanter_optimizer, soda_learning_rate


def test_lr_formula():
    assert soda_learning_rate(512, 1024) == pytest.approx(3e-3 * math.sqrt(2))
    assert SodaRecipe().lr(512, 2560) == pytest.approx(3e-3 * math.sqrt(2) * math.sqrt(1024 / 2560))
    assert SodaRecipe(learning_rate=1e-3).lr(512, 512) == 1e-3


def test_soda_recipe_maps_to_cautious_config():
    opt = levanter_optimizer(SodaRecipe(), 512, 1024)
    assert type(opt).__name__ == "CautiousConfig"
    assert (opt.beta1, opt.beta2, opt.epsilon, opt.weight_decay) == (0.98, 0.98, 1e-16, 0.033)
    assert (opt.warmup, opt.decay, opt.min_lr_ratio, opt.lr_schedule) == (0.1, 0.2, 0.0, "linear")
    assert opt.max_grad_norm == 1.0 and opt.adamc_weight_decay is True
    assert SodaRecipe().z_loss_weight == 1e-4


def test_isoflop_recipe_from_grid_point():
    from steps.scaling.grid import isoflop_grid

    point = isoflop_grid()[0]
    recipe = IsoFlopRecipe.for_point(point)
    opt = levanter_optimizer(recipe, point.batch, point.hidden)
    assert (opt.learning_rate, opt.beta2) == (point.lr, point.beta2)
    assert (opt.beta1, opt.weight_decay, opt.epsilon) == (0.95, 0.1, 1e-15) and recipe.z_loss_weight == 0.0


def test_wsd_schedule_shape():
    sched = levanter_optimizer(SodaRecipe(learning_rate=1.0), 256, 1024).lr_scheduler(100)
    lrs = np.array([float(sched(i)) for i in range(101)])
    assert lrs[0] == 0 and lrs[5] == pytest.approx(0.5) and lrs[10] == pytest.approx(1.0)
    assert np.allclose(lrs[10:81], 1.0)  # constant
    assert lrs[90] == pytest.approx(0.5) and lrs[100] == pytest.approx(0.0, abs=1e-7)  # linear to 0


def test_two_cautious_adamc_steps_on_two_parameters_match_hand_computation():
    import jax.numpy as jnp

    recipe = SodaRecipe(learning_rate=0.1, warmup=0.0, decay=0.0, max_grad_norm=1.0, epsilon=1e-8)
    opt = levanter_optimizer(recipe, 256, 1024)
    opt = type(opt)(**{**opt.__dict__, "default_weight_decay_mask": False})  # plain arrays: decay all
    tx = opt.build(num_train_steps=10)
    b1, b2, eps, lr, wd = 0.98, 0.98, 1e-8, 0.1, 0.033
    grads = [np.array([0.3, 0.4]), np.array([0.2, -0.1])]  # norms < clip 1; step 2 flips w[1]'s sign

    params = {"w": jnp.array([1.0, -2.0])}
    state = tx.init(params)
    p, m, v = np.array([1.0, -2.0]), np.zeros(2), np.zeros(2)
    for t, g in enumerate(grads, start=1):
        updates, state = tx.update({"w": jnp.asarray(g)}, state, params)
        params = {"w": params["w"] + updates["w"]}
        # by hand
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g**2
        u = (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
        agree = (u * g > 0).astype(float)  # cautious: drop coordinates whose update disagrees with g
        u = u * agree / (agree.mean() + eps)
        decay = wd * lr / lr  # AdamC: wd * lr_t / lr_max, then scaled by lr_t like decoupled decay
        p = p - lr * (u + decay * p)
        assert np.allclose(np.asarray(params["w"]), p, rtol=1e-6, atol=1e-9), (t, params["w"], p)
    assert agree.tolist() == [1.0, 0.0]  # the second step really exercised the cautious mask
