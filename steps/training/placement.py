"""Where a train step can run: the batch must split evenly over the slice's devices, and the model,
its optimizer state and one device's share of the batch must fit in that device's memory.

Attached to the step function as `train.placement_problems` (pipeline.placement's generic hook):
the executor asks it about each node type that has the step's resources, before anything runs.

The slice is `TrainConfig.tpu` (the one the step's ResourceConfig asks for: the step supervises
from the head node and trains on all the slice's hosts); its devices and HBM come from `pipeline.node_types.tpu_slice`
(one JAX device per chip on v4/v5p, whose two TensorCores act as one; one per chip on v5e/v6e,
which have one core; HBM per chip as Google lists it: v5p 95 GiB, v4 32, v5e 16, v6e 32). A train
step without `tpu` runs on the CPUs of its node and is not checked.

**Batch.** Levanter shards the batch over the data axis, all D devices of one slice:
`train_batch_size` must be a multiple of D (of D x per_device_parallelism when gradient
accumulation is set), else Levanter's TrainerConfig refuses it at start.

**Memory per device**, an estimate for Levanter's FSDP training of a Qwen3 decoder (N parameters,
L layers, width h, vocabulary V) with `mp="p=f32,c=bfloat16"`, on T = examples per device x seq_len
tokens:
- state: 16 N / D bytes. fp32 parameters, fp32 gradients and the two fp32 moments of the
  Adam-style (Cautious) optimizer, 4 bytes each, all sharded over the D devices.
- gathered weights: 2 x (2 layers + the V x h output head) bytes: bf16 copies that FSDP gathers
  whole, one layer computing while the next is fetched, and the head for the loss.
- saved activations: T x L x h x 2 bytes. Levanter's Qwen3 scans its layers with gradient
  checkpointing (on by default), so only each layer's bf16 input is kept for the backward pass.
- one layer's working set: T x (4h + 2 q + 2 kv + 3f) x 2 bytes, twice: the recomputed bf16
  values of one layer (norms, q/k/v, attention output, projections, the GLU's gate, up and product)
  and their gradients. Attention is a flash kernel (Splash on TPU): no T x T scores.
- loss: T x (2 x 4096 + 2h) x 4 bytes. Levanter's fused cross-entropy computes the logits one
  vocabulary block (at most 4096) at a time, in fp32, with their gradient; never the T x V matrix.
- The activation terms are multiplied by ACTIVATION_FACTOR = 1.5, a rough allowance for XLA's
  temporaries, fusion buffers and padding; a run fits when the total is at most 90% of the device's
  HBM (the runtime and XLA keep some for themselves).

These are estimates to catch the impossible (a 4B model on a v5e-4, whose optimizer state alone
is 17 GiB per 16 GiB chip), not a promise that a borderline run fits. The SODA models at batch
512 x 4096 (`python -m steps.training.placement` prints the table): 135M on v5p-32 ~17 GiB per
device, 600M on v5p-64 ~17 GiB, 1.7B on v5p-128 ~15 GiB, 4B on v5p-256 ~12 GiB, of 85.5 GiB usable
(activations dominate; the state is under 1 GiB per device on those slices).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from pipeline.node_types import NodeType, tpu_slice
from steps.training.accounting import ModelShape, layer_params, params_total
from steps.training.train_config import resolve
from steps.training.presets import PRESETS

GiB = 1024**3
STATE_BYTES_PER_PARAM = 16  # fp32 params + fp32 grads + two fp32 optimizer moments
COMPUTE_BYTES = 2  # bf16 activations and gathered weights
LOSS_VOCAB_BLOCK = 4096  # the largest vocabulary block of Levanter's fused cross-entropy
ACTIVATION_FACTOR = 1.5
USABLE_FRACTION = 0.9


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes per device of training `shape` with FSDP over `devices` devices."""

    devices: int
    tokens_per_device: int
    state: float
    gathered: float
    activations: float  # saved + one layer's working set + loss, with ACTIVATION_FACTOR

    @property
    def total(self) -> float:
        return self.state + self.gathered + self.activations

    def describe(self) -> str:
        return (f"about {self.total / GiB:.1f} GiB per device: parameters, gradients and optimizer state "
                f"{self.state / GiB:.1f} GiB sharded over {self.devices} devices, gathered bf16 weights "
                f"{self.gathered / GiB:.1f} GiB, activations {self.activations / GiB:.1f} GiB for "
                f"{self.tokens_per_device:,} tokens per device")


def training_memory(shape: ModelShape, devices: int, examples_per_device: int) -> MemoryEstimate:
    """The module docstring's estimate for one device of `devices`, each holding `examples_per_device` sequences."""
    h, L, f = shape.hidden, shape.layers, shape.intermediate
    q, kv = shape.heads * shape.head_dim, shape.kv_heads * shape.head_dim
    tokens = examples_per_device * shape.seq_len
    state = STATE_BYTES_PER_PARAM * params_total(shape) / devices
    gathered = COMPUTE_BYTES * (2 * layer_params(shape) + shape.vocab_size * h)
    saved = tokens * L * h * COMPUTE_BYTES
    layer = 2 * tokens * (4 * h + 2 * q + 2 * kv + 3 * f) * COMPUTE_BYTES
    loss = tokens * (2 * LOSS_VOCAB_BLOCK + 2 * h) * 4
    return MemoryEstimate(devices, tokens, state, gathered, ACTIVATION_FACTOR * (saved + layer + loss))


def train_placement_problems(config: Any, node_type: NodeType) -> list[str]:
    """Why a TrainConfig cannot train on a slice of `node_type` (the slice type its step's
    ResourceConfig(tpu=...) launches on)."""
    if not getattr(config, "tpu", None):
        return []
    if node_type.is_tpu_slice and node_type.accelerator != config.tpu:
        return [f"the step launches on a {node_type.accelerator} slice but TrainConfig.tpu is "
                f"{config.tpu!r}; give the step ResourceConfig(tpu={config.tpu!r})"]
    try:
        spec = tpu_slice(config.tpu)
    except ValueError as e:
        return [f"TrainConfig.tpu: {e}"]
    devices = node_type.devices if node_type.accelerator == config.tpu and node_type.devices else spec.devices
    hbm = node_type.device_memory_gib if node_type.accelerator == config.tpu and node_type.device_memory_gib \
        else spec.device_memory_gib
    batch, accumulate = config.batch_size, max(getattr(config, "per_device_parallelism", -1), 0)
    step = devices * (accumulate or 1)
    if batch % step:
        per = f"{devices} devices x per_device_parallelism {accumulate}" if accumulate else f"{devices} devices"
        return [f"the train batch {batch} does not divide evenly over the {per} of a {config.tpu} slice "
                f"(Levanter shards each batch over all of them); use a multiple of {step}, such as "
                f"{max(step, round(batch / step) * step)}, or a slice whose device count divides {batch}"]
    shape = _shape(config)
    if shape is None or hbm is None:
        return []  # a warm start's shape is known only once its checkpoint is read
    estimate = training_memory(shape, devices, accumulate or batch // devices)
    usable = USABLE_FRACTION * hbm * GiB
    if estimate.total <= usable:
        return []
    advice = ("a larger slice" if estimate.state + estimate.gathered > usable else
              "a larger slice, or per_device_parallelism (gradient accumulation) to hold fewer examples at once")
    return [f"the model does not fit a {config.tpu} slice's memory: {estimate.describe()}, against "
            f"{usable / GiB:.1f} GiB usable of the {hbm:g} GiB per device; use {advice}"]


def _shape(config: Any) -> Optional[ModelShape]:
    if getattr(config, "warm_start_hf", None) and getattr(config, "shape", None) is None:
        return None
    try:
        return resolve(config).shape
    except (KeyError, ValueError):  # the run itself reports a bad config, naming the field
        return None


def soda_table() -> list[tuple[str, str, MemoryEstimate, float]]:
    """(preset, slice, estimate, usable bytes) for the released SODA models at batch 512 x 4096."""
    rows = []
    for preset in PRESETS.values():
        if preset.tpu:
            spec = tpu_slice(preset.tpu)
            rows.append((preset.name, preset.tpu, training_memory(preset.shape, spec.devices, 512 // spec.devices),
                         USABLE_FRACTION * spec.device_memory_gib * GiB))
    return rows


if __name__ == "__main__":
    for name, slice_type, est, usable in soda_table():
        print(f"{name:10s} {slice_type:8s} {est.describe()}; usable {usable / GiB:.1f} GiB")
