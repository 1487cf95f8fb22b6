"""Fixes for Levanter behaviour that only a multi-host slice meets; `apply()` runs before `train_lm`.

- **Evaluation tags on a multi-host slice.** `levanter.eval.DomainTaggedDataset` builds each eval
  set's tag array with `jnp.asarray` when it is constructed, inside the trainer's global device mesh.
  With more than one process that makes it a global array over every host's devices, while every
  other leaf of an eval example lives on the host's own CPU; the data loader then cannot stack them
  ("Received incompatible devices for jitted computation ... stack_tree", found by rehearsing
  exp10's fine-tunes, whose validation split is evaluated in the loop). The fix builds the tag arrays
  on the host's CPU, as Levanter's loader does for examples (`local_cpu_mesh`). One process, where
  the global mesh is all local, is unchanged.
"""

from __future__ import annotations

_FIXED = "_soda_host_cpu_tags"


def apply() -> None:
    """Install the fixes (idempotent)."""
    from levanter.eval import DomainTaggedDataset
    from levanter.utils.jax_utils import local_cpu_mesh

    original = DomainTaggedDataset._compute_tag_arrays
    if getattr(original, _FIXED, False):
        return

    def _compute_tag_arrays_on_host_cpu(self):  # type: ignore[no-untyped-def]
        with local_cpu_mesh():
            return original(self)

    setattr(_compute_tag_arrays_on_host_cpu, _FIXED, True)
    DomainTaggedDataset._compute_tag_arrays = _compute_tag_arrays_on_host_cpu
